"""The report's views on a run recorded through the public job-database API: the status map
at a continental extent, manager sessions (a kill, a resume, a manager gone without a clean
stop), time axes, the header and the latest attempt's error."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from eoextract._util.utc import utc_now
from eoextract.jobs.db import create_job_db, get_job_db
from eoextract.jobs.status import JobStatus as S
from eoextract.report import _plots as plots
from eoextract.report import history_frame, jobs_frame, render_report
from eoextract.report._attempts import job_errors
from eoextract.report._map import map_figure, map_layers, small_footprints
from eoextract.report._sessions import manager_sessions

A, B, C = "hostA:101:aaaa1111", "hostA:202:bbbb2222", "hostB:303:cccc3333"
#: Sample centres over Europe (lon, lat): Belgium, Spain, Poland, Finland, Greece.
CENTRES = [(4.5, 50.8), (-3.7, 40.4), (21.0, 52.2), (25.0, 62.0), (22.9, 40.6)]


def _samples(lon: float, lat: float, n: int = 3) -> str:
    """A GeoJSON FeatureCollection of ``n`` 20 m fields near (lon, lat), as openeo-gfmap job
    dataframes carry them."""
    import h3

    cell = h3.latlng_to_cell(lat, lon, 4)
    feats = [{"type": "Feature", "properties": {"sample_id": f"s{i}", "h3index": cell, "extract": True},
              "geometry": box(lon + i * 0.01, lat, lon + i * 0.01 + 0.0003, lat + 0.0002).__geo_interface__}
             for i in range(n)]
    return json.dumps({"type": "FeatureCollection", "features": feats})


def _walk(db, key, statuses, manager, **fields):
    for status in statuses:
        db.transition(key, status, manager_id=manager, **(fields if status is statuses[-1] else {}))


@pytest.fixture()
def recorded(tmp_path):
    """Five jobs over Europe. Manager A starts them all, finishes j0, sees j1 fail (retryable)
    and is killed with j1..j3 in flight; B resumes: j1 finishes on its second attempt, j2 finishes,
    j3 fails for good. C then claims j4 and vanishes without a clean stop (lease expired)."""
    df = pd.DataFrame({"geometry": [_samples(*c) for c in CENTRES], "backend_name": "local"},
                      index=[f"j{i}" for i in range(5)])
    db = create_job_db(tmp_path / "jobs.db", df)
    now = utc_now()
    db.claim(4, manager_id=A, now=now, lease_seconds=600)
    for key in ("j0", "j1", "j2", "j3"):
        _walk(db, key, [S.CREATING, S.QUEUED, S.RUNNING], A, id=f"b-{key}-1")
    _walk(db, "j0", [S.DOWNLOADING, S.FINISHED], A)
    db.transition("j1", S.NOT_STARTED, manager_id=A, message="run: backend said 503 (backend job b-j1-1); retry in 5 s",
                  error_class="ConnectionError", error_message="backend said 503")
    db.claim(1, manager_id=A, now=now, lease_seconds=600)
    db.transition("j1", S.CREATING, manager_id=A)
    # A is killed here; B takes over
    db.release(A)
    db.transition("j1", S.QUEUED, manager_id=B, id="b-j1-2")
    _walk(db, "j1", [S.RUNNING, S.DOWNLOADING, S.FINISHED], B)
    _walk(db, "j2", [S.DOWNLOADING, S.FINISHED], B)
    db.transition("j3", S.ERROR, manager_id=B, message="run: out of memory (backend job b-j3-1)",
                  error_class="JobFailed", error_message="out of memory")
    db.claim(1, manager_id=C, now=now - timedelta(hours=1), lease_seconds=60)
    _walk(db, "j4", [S.CREATING, S.QUEUED], C, id="b-j4-1")
    db.update("j4", lease_until=now - timedelta(minutes=30))
    return tmp_path / "jobs.db"


def test_sessions_show_the_kill_the_resume_and_a_manager_gone_without_clean_stop(recorded):
    db = get_job_db(recorded)
    jobs, history = jobs_frame(db), history_frame(db)
    sessions = manager_sessions(history, jobs, now=utc_now()).set_index("manager_id")
    assert list(sessions.index) == [A, B, C]
    assert sessions.loc[A, "ended"] == "interrupted" and sessions.loc[A, "left_in_flight"] == 3
    assert sessions.loc[B, "resumed_from"] == A and sessions.loc[B, "ended"] == "completed"
    assert sessions.loc[C, "ended"] == "no clean stop" and sessions.loc[C, "left_in_flight"] == 1
    assert sessions.loc[A, "start"] <= sessions.loc[A, "end"] <= sessions.loc[B, "start"]
    page, _ = render_report(recorded)
    table = page[page.index("<h2 id='sessions'>"):]
    assert A in table and "interrupted" in table and "no clean stop" in table
    assert "2 killed or stopped with jobs in flight" in page


def test_timeline_draws_the_sessions_band_with_kill_and_resume_markers(recorded):
    db = get_job_db(recorded)
    jobs, history = jobs_frame(db), history_frame(db)
    sessions = manager_sessions(history, jobs, now=utc_now())
    fig = plots.timeline_figure(history, jobs, now=utc_now(), sessions=sessions)
    band = fig.axes[0]
    assert band.get_title(loc="left").startswith("manager sessions")
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"session started", "session resumed jobs", "session killed or stopped", "session ended",
            "back to the queue (retry)", "failed"} <= labels
    # the kill is marked on the backend's rows too: a red dotted vertical line
    assert any(line.get_linestyle() == ":" for line in fig.axes[1].get_lines())


def _tick_texts(fig, ax):
    """The tick labels inside the axis' view, left to right."""
    fig.draw_without_rendering()
    lo, hi = ax.get_xlim()
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]


def test_time_axes_are_utc_clock_times_with_dates_and_durations_in_minutes(recorded):
    db = get_job_db(recorded)
    jobs, history = jobs_frame(db), history_frame(db)
    now = utc_now()
    timeline = plots.timeline_figure(history, jobs, now=now, sessions=manager_sessions(history, jobs))
    over_time = plots.status_over_time_figure(history, now=now)
    for fig in (timeline, over_time):
        bottom = fig.axes[-1] if fig is timeline else fig.axes[0]
        assert bottom.get_xlabel() == "time (UTC)"
        texts = _tick_texts(fig, bottom)
        assert texts and all(re.fullmatch(r"\d\d:\d\d(:\d\d(\.\d{3})?)?(\n\d{4}-\d\d-\d\d)?", t) for t in texts), texts
        assert re.search(r"\d{4}-\d\d-\d\d", texts[0])  # the date is given
    fig = plots.distributions_figure(history, jobs)
    duration_ax = fig.axes[0]
    assert duration_ax.get_xlabel() == "duration (min)"
    assert re.search(r"median [\d.]+ min\)$", duration_ax.get_title(loc="left"))
    for f in (timeline, over_time, fig):
        for ax in f.axes:
            assert "(s)" not in ax.get_xlabel()
    assert plots.duration_unit(4 * 3600) == (3600.0, "h")


def test_header_shows_names_and_values_not_a_python_repr(recorded):
    page, _ = render_report(recorded)
    header = page[page.index("<table class='meta header'>"):]
    header = header[:header.index("</table>")]
    assert "JobDatabase(" not in page and "sqlite:///" not in header
    assert f"<td>{recorded} (SQLite)</td>" in header
    assert "<th>manager sessions</th><td>3, 2 killed or stopped" in header
    assert re.search(r"<th>run started</th><td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td>", header)


def test_a_job_finished_on_a_later_attempt_shows_no_error(recorded):
    db = get_job_db(recorded)
    jobs, history = jobs_frame(db), history_frame(db)
    assert pd.isna(jobs.loc["j1", "error_class"])  # the finished job keeps no error; the history does
    errors = job_errors(jobs, history)
    assert errors.loc["j1", "error"] is None
    assert errors.loc["j1", "earlier"] == ["attempt 1: run: backend said 503 (backend job b-j1-1); retry in 5 s"]
    assert errors.loc["j3", "error"] == "JobFailed: out of memory" and errors.loc["j3", "earlier"] == []
    assert list(errors.index) == ["j3", "j1"]  # failed first
    page, _ = render_report(recorded)
    table = page[page.index("<h2 id='job_errors'>"):]
    table = table[:table.index("</table>")]
    row = re.search(r"<tr><td>j1</td>.*?</tr>", table).group(0)
    assert "<span class='ok'>none</span>" in row and "earlier, attempt 1:" in row and "class='bad'" not in row
    assert "<span class='bad'>JobFailed: out of memory</span>" in table


def _colour_pixels(png: bytes, colour: str, tol: int = 40) -> int:
    import io

    from matplotlib.colors import to_rgb
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    target = np.array([round(255 * c) for c in to_rgb(colour)])
    return int((np.abs(rgb - target).sum(axis=2) < tol).sum())


def test_status_map_keeps_tiny_footprints_visible_at_a_continental_extent(recorded):
    db = get_job_db(recorded)
    layers = map_layers(db.read())
    assert len(layers.jobs) == 5 and len(layers.samples) == 15
    assert set(layers.context["kind"]) == {"H3 cell"} and len(layers.context) == 5
    west, south, east, north = layers.extent
    lons, lats = zip(*CENTRES)
    assert west < min(lons) - 1 and east > max(lons) + 1 and south < min(lats) - 1 and north > max(lats) + 1
    assert (east - west) < 40 and (north - south) < 30  # margins, not the whole world
    assert dict(zip(layers.jobs["job_key"], layers.jobs["status"]))["j3"] == "error"
    png = plots.figure_png(map_figure(layers))
    # every status shows as markers of its colour although each field is ~20 m on a ~3000 km map
    for status, n_jobs in (("finished", 3), ("error", 1), ("queued", 1)):
        assert _colour_pixels(png, plots.STATUS_COLORS[status]) > 100 * n_jobs, status
    _, figures = render_report(recorded)
    assert {f.name: f for f in figures}["footprints"].png is not None


def test_status_map_of_a_geodataframe_job_table_with_s2_tile_context(tmp_path):
    """Job rows with their own tiny polygons (no samples, no grid column): S2 tiles of the jobs'
    centres give the context, markers keep the jobs visible."""
    gdf = gpd.GeoDataFrame({"v": range(len(CENTRES))}, index=[f"k{i}" for i in range(len(CENTRES))],
                           geometry=[box(x, y, x + 0.001, y + 0.001) for x, y in CENTRES], crs=4326)
    db = create_job_db(tmp_path / "g.db", gdf)
    for key, status in (("k1", S.CANCELED), ("k2", S.ERROR), ("k3", S.START_FAILED), ("k4", S.START_FAILED)):
        db.transition(key, status)
    layers = map_layers(db.read())
    assert len(layers.jobs) == 5 and len(layers.samples) == 0
    assert set(layers.context["kind"]) == {"S2 tile"} and "31UFS" in set(layers.context["name"])
    png = plots.figure_png(map_figure(layers))
    for status, n_jobs in (("canceled", 1), ("error", 1), ("start_failed", 2)):
        assert _colour_pixels(png, plots.STATUS_COLORS[status]) > 100 * n_jobs, status


@pytest.mark.slow
def test_sessions_of_a_real_manager_killed_and_restarted(local_backend, tmp_path):
    """A manager process dies hard right after a backend created a job; a second process
    resumes: the report shows the first session interrupted, the second resuming its jobs."""
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    script = Path(__file__).parent / "jobs" / "crash_run.py"
    db_path, marker = tmp_path / "jobs.db", tmp_path / "crashed"
    args = [sys.executable, str(script), local_backend.url, str(db_path), f"rep{uuid.uuid4().hex[:6]}", "4"]
    first = subprocess.run([*args, "2", str(marker)], capture_output=True, text=True, timeout=120)
    assert first.returncode == 9, first.stderr
    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "{'finished': 4}" in second.stdout, second.stderr
    db = get_job_db(db_path)
    sessions = manager_sessions(history_frame(db), jobs_frame(db))
    assert len(sessions) == 2
    killed, resumed = sessions.iloc[0], sessions.iloc[1]
    assert killed["ended"] == "interrupted" and killed["left_in_flight"] >= 1
    assert resumed["resumed_from"] == killed["manager_id"] and resumed["ended"] == "completed"
    page, figures = render_report(db_path)
    assert "<th>manager sessions</th><td>2, 1 killed or stopped with jobs in flight</td>" in page
    assert {f.name: f for f in figures}["timeline"].png is not None


def test_markers_only_for_footprints_too_small_at_the_extent():
    """A 1° job is drawn as its polygon; a 20 m job beside it also gets a marker."""
    table = gpd.GeoDataFrame({"status": ["running", "finished"]}, index=["big", "tiny"],
                             geometry=[box(5, 50, 6, 51), box(7, 50, 7.0003, 50.0002)], crs=4326)
    layers = map_layers(table)
    fig = map_figure(layers)
    small = small_footprints(fig.axes[0], layers.jobs.geometry)
    assert dict(zip(layers.jobs["job_key"], small)) == {"big": False, "tiny": True}
    west, south, east, north = layers.extent
    assert 4.5 < west < 5 and 7.0003 < east < 7.5 and 49.8 < south < 50 and 51 < north < 51.2


def test_status_map_of_projected_points_and_feature_collections_with_a_crs(tmp_path):
    """Point jobs in EPSG:3035 land where they are; a FeatureCollection naming its CRS is
    reprojected; a point has no extent of its own but is drawn as a marker."""
    from shapely.geometry import Point

    pts = gpd.GeoSeries([Point(4.5, 50.8), Point(21.0, 52.2)], crs=4326).to_crs(3035)
    db = create_job_db(tmp_path / "p.db", gpd.GeoDataFrame({"v": [0, 1]}, geometry=pts, crs=3035))
    layers = map_layers(db.read())
    xy = sorted((round(g.x, 3), round(g.y, 3)) for g in layers.jobs.geometry)
    assert xy == [(4.5, 50.8), (21.0, 52.2)]
    utm = gpd.GeoSeries([box(4.5, 50.8, 4.5003, 50.8002)], crs=4326).to_crs(32631)
    fc = json.loads(utm.to_json())
    fc["crs"] = {"type": "name", "properties": {"name": "EPSG:32631"}}
    layers = map_layers(pd.DataFrame({"status": ["running"], "geometry": [json.dumps(fc)]}, index=["j"]))
    (sample,) = layers.samples.geometry
    assert sample.bounds == pytest.approx((4.5, 50.8, 4.5003, 50.8002), abs=1e-6)
    png = plots.figure_png(map_figure(layers))
    assert _colour_pixels(png, plots.STATUS_COLORS["running"]) > 100
    # WKT text and a GeoJSON Feature are footprints too; other text is none
    table = pd.DataFrame({"status": ["queued"] * 3, "geometry": [
        "POINT (5 51)", json.dumps({"type": "Feature", "properties": {}, "geometry": box(6, 51, 6.1, 51.1).__geo_interface__}),
        "not a geometry"]}, index=["w", "f", "x"])
    layers = map_layers(table)
    assert list(layers.jobs["job_key"]) == ["w", "f"]
