"""Run summaries, plots, the HTML report (rendered in headless Chromium) and live progress."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from shapely.geometry import box

from eoextract.jobs.db import create_job_db, get_job_db
from eoextract.jobs import JobManager
from eoextract._util.utc import format_duration as format_eta
from eoextract.jobs._progress import RunProgress
from eoextract.jobs.status import JobStatus
from eoextract.report import _plots as plots
from eoextract.report._map import map_figure, map_layers
from eoextract.report._sessions import manager_sessions
from eoextract.report import (footprints, format_duration, history_frame, jobs_frame, render_report,
                              summarize, write_report)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def synthetic(n_final: int = 4, n_open: int = 6):
    """Jobs and history: n_final jobs done one per 15 min from T0, n_open still queued."""
    jobs, history = [], []
    for i in range(n_final + n_open):
        key = str(i)
        start = T0 + timedelta(minutes=15 * i if i < n_final else 1)
        path = [(None, "not_started", T0), ("not_started", "creating", start),
                ("creating", "queued", start + timedelta(minutes=1))]
        status = "queued"
        if i < n_final:
            status = "error" if i == 0 else "finished"
            path += [("queued", "running", start + timedelta(minutes=2)),
                     ("running", status, start + timedelta(minutes=15))]
        for old, new, at in path:
            history.append({"job_key": key, "backend_name": "b1" if i % 2 else "b2", "old": old,
                            "new": new, "at": pd.Timestamp(at), "manager_id": "m", "message": None,
                            "backend_job_id": None})
        jobs.append({"job_key": key, "status": status, "backend_name": "b1" if i % 2 else "b2",
                     "error_class": "JobFailed" if i == 0 else None,
                     "error_message": "boom" if i == 0 else None, "attempt": 1,
                     "costs": 2.5 if status == "finished" else np.nan,
                     "end_time": pd.Timestamp(start + timedelta(minutes=15)) if i < n_final else pd.NaT,
                     "updated_at": pd.Timestamp(start)})
    jobs.append({"job_key": "r", "status": "not_started", "backend_name": None, "error_class": "ConnectionError",
                 "error_message": "refused", "attempt": 1, "costs": np.nan, "end_time": pd.NaT,
                 "updated_at": pd.Timestamp(T0)})
    history.append({"job_key": "r", "backend_name": None, "old": None, "new": "not_started",
                    "at": pd.Timestamp(T0), "manager_id": None, "message": None, "backend_job_id": None})
    return pd.DataFrame(jobs).set_index("job_key"), pd.DataFrame(history).sort_values("at")


class _NoBackends:
    def backends(self):
        return {"b1": "http://127.0.0.1:1/"}


def test_summary_throughput_eta_and_error_classes():
    jobs, history = synthetic()
    now = T0 + timedelta(hours=1)
    s = summarize(_NoBackends(), jobs=jobs, history=history, now=now)
    assert s.total == 11 and s.done == 4 and s.failed == 1 and s.open == 7
    assert s.counts == {"not_started": 1, "queued": 6, "finished": 3, "error": 1}  # status-model order
    assert s.by_backend["-"] == {"not_started": 1}
    assert s.started_at == T0  # the first launch
    assert s.elapsed_s == pytest.approx(3600.0)
    assert s.throughput_per_hour == pytest.approx(4.0)
    assert s.eta_s == pytest.approx(7 / 4 * 3600)
    [failed, retrying] = sorted(s.error_classes, key=lambda e: e.error_class, reverse=True)
    assert (failed.error_class, failed.failed, failed.example_key, failed.example_message) == ("JobFailed", 1, "0", "boom")
    assert (retrying.error_class, retrying.retrying, retrying.failed) == ("ConnectionError", 1, 0)
    assert json.loads(json.dumps(s.to_dict()))["eta_s"] == pytest.approx(6300.0)
    assert format_duration(6300) == "1h 45m" and format_duration(None) == "-" and format_eta(75) == "1m 15s"


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("pg", marks=pytest.mark.pg), "csv"])
def test_summary_of_a_copied_campaign_counts_only_what_the_run_ended(kind, tmp_path, request):
    """Jobs copied in already final are done but did not end in this run: before any change
    there is no running time, throughput or ETA; the first change starts the run."""
    location = (request.getfixturevalue("pg_url") if kind == "pg"
                else str(tmp_path / ("jobs.db" if kind == "sqlite" else "jobs.csv")))
    frame = pd.DataFrame({"tile": [f"t{i}" for i in range(10)],
                          "status": ["finished"] * 3 + ["running"] + ["not_started"] * 6,
                          "backend_name": ["b1"] * 4 + [None] * 6,
                          "id": ["j0", "j1", "j2", "j3"] + [None] * 6},
                         index=[str(i) for i in range(10)])
    db = create_job_db(location, frame)

    def both(now):
        fast = summarize(db, now=now)
        from_rows = summarize(db, now=now, jobs=jobs_frame(db), history=history_frame(db))
        assert fast.to_dict() == from_rows.to_dict()
        return fast

    copied = both(datetime.now(UTC) + timedelta(hours=1))
    assert (copied.done, copied.open, copied.counts["finished"]) == (3, 7, 3)
    assert copied.started_at is None and copied.last_change_at is not None
    assert (copied.elapsed_s, copied.throughput_per_hour, copied.eta_s) == (None, None, None)

    # followed: the copied running job ends; the run starts there and has ended one job
    db.transition("3", JobStatus.FINISHED)
    ended_at = db.history("3")[-1].at
    followed = both(ended_at + timedelta(hours=1))
    assert followed.started_at == ended_at and followed.done == 4
    assert followed.elapsed_s == pytest.approx(3600.0)
    assert followed.throughput_per_hour == pytest.approx(1.0)
    assert followed.eta_s == pytest.approx(6 * 3600.0)
    db.close()


def test_plots_from_synthetic_history(monkeypatch):
    jobs, history = synthetic()
    now = T0 + timedelta(hours=1)
    for fig in (plots.timeline_figure(history, jobs, now=now), plots.status_over_time_figure(history, now=now),
                plots.distributions_figure(history, jobs)):
        assert fig is not None and plots.figure_png(fig).startswith(b"\x89PNG")
    durations = plots.job_durations(history, jobs)
    assert durations.loc["1", "total_s"] == pytest.approx(15 * 60)
    assert durations.loc["1", "backend_s"] == pytest.approx(14 * 60)
    # many jobs per backend: phase counts over time instead of one bar per job
    monkeypatch.setattr(plots, "MAX_GANTT_JOBS", 2)
    sessions = manager_sessions(history, jobs, now=now)
    assert list(sessions["manager_id"]) == ["m"] and list(sessions["ended"]) == ["stopped"]  # 6 jobs queued
    fig = plots.timeline_figure(history, jobs, now=now, sessions=sessions)
    assert fig.axes[1].get_ylabel() == "jobs in phase" and plots.figure_png(fig).startswith(b"\x89PNG")
    empty = history.iloc[0:0]
    assert plots.timeline_figure(empty, jobs, now=now) is None
    assert plots.failures_figure([]) is None


def test_footprints_from_items_and_bboxes():
    items = [{"type": "Feature", "id": "a", "geometry": box(5, 51, 5.1, 51.1).__geo_interface__,
              "properties": {"datetime": "2021-06-01T00:00:00Z"}},
             {"type": "Feature", "id": "b", "geometry": None, "bbox": [6, 51, 6.1, 51.1], "properties": {}},
             {"type": "Feature", "id": "c", "geometry": None, "properties": {}}]
    gdf = footprints(items)
    assert list(gdf["id"]) == ["a", "b"] and gdf.crs.to_epsg() == 4326
    layers = map_layers(pd.DataFrame({"status": pd.Series([], dtype=str)}), gdf)
    assert len(layers.items) == 2 and set(layers.items["status"]) == {"finished"}
    # items take their job's status when the item store names their jobs
    table = pd.DataFrame({"status": ["postprocessing"], "geometry": [None]}, index=["j1"])
    layers = map_layers(table, gdf, item_jobs={"a": "j1"})
    assert dict(zip(layers.items["id"], layers.items["status"])) == {"a": "postprocessing", "b": "finished"}
    assert plots.figure_png(map_figure(layers)).startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- a real run
def _start_job(row, connection, **kwargs):
    if row["value"] == 2:
        raise ValueError("bad row")
    cube = connection.load_collection(
        "SENTINEL2_L2A", spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
        temporal_extent=["2021-06-01", "2021-06-10"], bands=["B04"])
    return cube.create_job(title=row["title"], job_options={"eoextract_mode": "instant"}, out_format="NetCDF")


@pytest.fixture(scope="module")
def run_db(tmp_path_factory, local_backend):
    path = tmp_path_factory.mktemp("report") / "jobs.db"
    prefix = uuid.uuid4().hex[:8]
    df = gpd.GeoDataFrame({"title": [f"{prefix}-{i}" for i in range(4)], "value": range(4)},
                          geometry=[box(5 + i * 0.2, 51, 5.1 + i * 0.2, 51.1) for i in range(4)], crs=4326)
    manager = JobManager(poll_sleep=0.1, download_results=False, retry_backoff=0.05, root_dir=path.parent)
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    manager.run_jobs(df, _start_job, job_db=path, progress=True)  # quiet: stdout is no terminal
    return path


def test_run_jobs_progress_is_quiet_without_terminal(run_db, capsys):
    assert capsys.readouterr().out == ""
    s = summarize(get_job_db(run_db))
    assert s.counts == {"finished": 3, "start_failed": 1}


def test_report_sections_and_pngs(run_db, tmp_path):
    page, figures = render_report(run_db, title="Demo <run>")
    assert "<title>Demo &lt;run&gt;</title>" in page
    assert "http://" not in page or "127.0.0.1" in page  # backend URL listed, nothing external loaded
    assert "<script" not in page and "src='http" not in page and 'href="http' not in page
    names = {f.name: f for f in figures}
    assert set(names) == {"timeline", "status_over_time", "distributions", "failures", "footprints"}
    assert all(f.png for f in figures)  # job geometries give the map even without items
    assert "UserCodeError.ValueError" in page
    # one manager ran it to the end; the header names the database, not a Python object
    assert "<th>manager sessions</th><td>1</td>" in page and "JobDatabase(" not in page
    assert f"<td>{run_db} (SQLite)</td>" in page and ">completed</td>" in page.split("id='sessions'")[1]
    path = write_report(run_db, tmp_path / "out" / "report.html", write_pngs=False)
    assert path.exists() and not (tmp_path / "out" / "report_files").exists()


def test_run_progress_renders_slots_counts_rate_and_eta():
    out = io.StringIO()
    clock = iter([0.0, 0.1, 10.0, 10.2, 20.0]).__next__
    progress = RunProgress({"local": 3, "other": 2}, console=Console(file=out, force_terminal=True, width=160),
                           min_interval=1.0, clock=clock)
    assert progress.active
    progress.update({"not_started": 8, "queued": 2}, {"local": {"queued": 2}})            # t=0
    progress.update({"not_started": 8, "queued": 2, "finished": 0}, {"local": 2})       # t=0.1: throttled
    progress.update({"not_started": 4, "running": 2, "finished": 3, "error": 1},
                    {"local": {"running": 2}, "other": {"creating": 1}})                 # t=10
    assert progress.line() == "4/10 final  done 3  failed 1  open 6  24.0 jobs/min  ETA 15s"
    text = out.getvalue()
    assert "2/3 slots" in text and "1/2 slots" in text and "running 2" in text and "ETA 15s" in text
    progress.close()
    quiet = RunProgress({"local": 1}, console=Console(file=io.StringIO()))
    assert not quiet.active
    quiet.update({"finished": 1}, {})
    assert RunProgress(enabled=False).active is False


# ----------------------------------------------------------------------------- headless browser
def _pixels(png_path):
    from PIL import Image

    return np.asarray(Image.open(png_path).convert("L"), dtype=float)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_db, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        reason = "chromium is not installed (apt-get install -y chromium); report not rendered"
        print(reason)
        pytest.skip(reason)
    html_path = write_report(run_db, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,5000",
         html_path.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr and ":CONSOLE" not in proc.stderr, proc.stderr[-2000:]  # no JS errors
    pixels = _pixels(shot)
    assert pixels.shape == (5000, 1200)
    assert pixels.std() > 20  # text, tables and plots, not a blank page
    assert (pixels < 200).mean() > 0.02
    # the plots rendered: a band of the page in the timeline region holds coloured bars
    from PIL import Image

    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    saturated = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    assert saturated.mean() > 0.005
