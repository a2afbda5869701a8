"""The ``eoextract`` command line over a real SQLite job database and the embedded backend."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pystac
import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from eoextract.cli import app
from eoextract.jobs.db import create_job_db, get_job_db
from eoextract.jobs import JobManager
from eoextract.jobs.status import JobStatus

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _cube(connection):
    return connection.load_collection(
        "SENTINEL2_L2A",
        spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
        temporal_extent=["2021-06-01", "2021-06-10"],
        bands=["B04"],
    )


def start_job(row, connection, **kwargs):
    """Instant jobs; row 4 fails on the backend, row 5 fails in user code."""
    if row["value"] == 5:
        raise KeyError("missing column")
    options = {"eoextract_mode": "instant"}
    if row["value"] == 4:
        options["eoextract_fault"] = "error"
    return _cube(connection).create_job(title=row["title"], job_options=options, out_format="NetCDF")


@pytest.fixture(scope="module")
def run_db(tmp_path_factory, local_backend) -> Path:
    """A job database of a finished run: 4 finished, 1 error, 1 start_failed."""
    path = tmp_path_factory.mktemp("cli") / "jobs.db"
    prefix = uuid.uuid4().hex[:8]
    df = gpd.GeoDataFrame(
        {"title": [f"{prefix}-{i}" for i in range(6)], "value": range(6)},
        geometry=[box(5 + i * 0.1, 51, 5.05 + i * 0.1, 51.05) for i in range(6)], crs=4326)
    manager = JobManager(poll_sleep=0.1, download_results=False, retry_backoff=0.05, max_attempts=1,
                         root_dir=path.parent)
    manager.add_backend("local", local_backend.connect, parallel_jobs=3)
    stats = manager.run_jobs(df, start_job, job_db=path)
    assert stats["status_counts"] == {"finished": 4, "error": 1, "start_failed": 1}
    return path


def copy_db(src: Path, dst_dir: Path) -> Path:
    """A private copy of a SQLite job database (for commands that change it)."""
    dst = dst_dir / f"copy-{uuid.uuid4().hex[:6]}.db"
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return dst


def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


# ----------------------------------------------------------------------------- status / jobs
def test_status_table_and_json(run_db):
    result = invoke("status", run_db)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "6 jobs, 6 final (2 failed), 0 open" in out
    assert "finished" in out and "start_failed" in out and "local" in out
    assert "throughput" in out and "ETA done" in out
    assert "JobFailed" in out and "UserCodeError.KeyError" in out and "missing column" in out
    data = json.loads(invoke("status", run_db, "--json").stdout)
    assert data["counts"] == {"finished": 4, "error": 1, "start_failed": 1}
    assert data["by_backend"] == {"local": {"finished": 4, "error": 1, "start_failed": 1}}
    assert data["open"] == 0 and data["eta_s"] == 0.0 and data["throughput_per_hour"] > 0
    assert {e["error_class"] for e in data["error_classes"]} == {"JobFailed", "UserCodeError.KeyError"}
    assert data["backends"]["local"].startswith("http://127.0.0.1")


@pytest.fixture(scope="module")
def thirty_jobs(tmp_path_factory) -> Path:
    """A 30-job database as a run leaves it: finished, failed, retried, requeued, queued."""
    path = tmp_path_factory.mktemp("thirty") / "jobs.db"
    df = gpd.GeoDataFrame({"title": [f"t{i}" for i in range(30)]},
                          geometry=[box(5 + i * 0.01, 51, 5.01 + i * 0.01, 51.01) for i in range(30)],
                          crs=4326)
    db = create_job_db(path, df)
    db.register_backend("local", "http://127.0.0.1:9")
    for i in range(30):
        key = str(i)
        db.transition(key, JobStatus.CREATING, backend_name="local", attempt=1)
        if i == 0:  # an interrupted run had not created it: requeued, then run again
            db.transition(key, JobStatus.NOT_STARTED, attempt=0,
                          message="not created on the backend before the interruption; requeued")
            db.transition(key, JobStatus.CREATING, backend_name="local", attempt=1)
        db.transition(key, JobStatus.QUEUED, id=f"j-{i}")
        if i == 1:  # failed once, retried
            db.transition(key, JobStatus.NOT_STARTED, error_class="JobFailed", error_message="boom",
                          message="run: boom (backend job j-1); retry in 30 s")
            db.transition(key, JobStatus.CREATING, backend_name="local", attempt=2)
            db.transition(key, JobStatus.QUEUED, id="j-1b")
        if i % 3 == 0:
            db.transition(key, JobStatus.FINISHED)
        elif i % 3 == 1:
            db.transition(key, JobStatus.ERROR, error_class="JobFailed", error_message="boom")
    return path


def test_status_counts_requeued_creations_apart_from_retries(thirty_jobs):
    data = json.loads(invoke("status", thirty_jobs, "--json").stdout)
    assert data["total"] == 30 and data["counts"] == {"queued": 10, "finished": 10, "error": 10}
    assert (data["retries"], data["requeued"]) == (1, 1)
    table = invoke("status", thirty_jobs)
    assert table.exit_code == 0 and "retries 1  requeued 1" in table.stdout


def test_status_imports_only_what_it_uses(thirty_jobs):
    """``eoextract status`` on an SQLite database reads it without pandas and friends."""
    heavy = ("pandas", "numpy", "geopandas", "shapely", "pyproj", "pystac", "openeo", "xarray",
             "rasterio", "matplotlib", "pyarrow", "requests")
    code = ("import sys\n"
            "from eoextract.cli import app\n"
            "try:\n"
            f"    app(['status', {str(thirty_jobs)!r}], prog_name='eoextract')\n"
            "except SystemExit as exc:\n"
            "    assert not exc.code, exc.code\n"
            f"print('HEAVY', sorted(m for m in {heavy!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "30 jobs, 20 final (10 failed), 10 open" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"


@pytest.mark.parametrize("sep", [";", "\t", ","])
def test_a_job_csv_saved_by_a_spreadsheet_is_read(tmp_path, sep):
    """A byte order mark and ``;`` (or tab) separators, as spreadsheets save CSV files."""
    path = tmp_path / "jobs.csv"
    lines = ["id;backend_name;status;title", "j-1;local;finished;a", "j-2;local;error;b",
             "j-3;local;queued_for_start;c"]
    path.write_bytes("\ufeff".encode() + "\n".join(line.replace(";", sep) for line in lines).encode() + b"\n")
    data = json.loads(invoke("status", path, "--json").stdout)
    assert data["counts"] == {"queued": 1, "finished": 1, "error": 1}
    listing = json.loads(invoke("jobs", path, "-f", "json").stdout)
    assert [r["id"] for r in listing] == ["j-1", "j-2", "j-3"] and listing[0]["title"] == "a"


def test_status_watch_ends_when_all_final(run_db):
    result = invoke("status", run_db, "--watch", "--interval", "0.01")
    assert result.exit_code == 0, result.output
    assert "6/6 final, 2 failed, 0 open" in result.stdout


def test_jobs_filters_and_formats(run_db):
    table = invoke("jobs", run_db)
    assert table.exit_code == 0 and "6 job(s)" in table.stdout and "j-" in table.stdout
    errors = json.loads(invoke("jobs", run_db, "--status", "error", "--format", "json").stdout)
    assert [r["job_key"] for r in errors] == ["4"]
    assert errors[0]["error_class"] == "JobFailed" and errors[0]["geometry"].startswith("POLYGON")
    csv = invoke("jobs", run_db, "-s", "finished", "-s", "start_failed", "-f", "csv", "--backend", "local")
    rows = pd.read_csv(pd.io.common.StringIO(csv.stdout))
    assert sorted(rows["job_key"]) == [0, 1, 2, 3, 5] and "title" in rows
    assert invoke("jobs", run_db, "--backend", "elsewhere").stdout.strip().endswith("0 job(s)")
    bad = invoke("jobs", run_db, "--status", "bogus")
    assert bad.exit_code == 2
    limited = invoke("jobs", run_db, "--limit", "2")
    assert limited.exit_code == 0 and "first 2 job(s) of 6 shown; --limit 2" in limited.stdout
    for enough in ("6", "7"):
        assert invoke("jobs", run_db, "--limit", enough).stdout.strip().endswith("\n6 job(s)")
    for args in (("jobs", run_db, "--limit", "-1"), ("status", run_db, "--top", "-1")):
        assert invoke(*args).exit_code == 2


def test_history_shows_attempts_and_backend_job(run_db):
    result = invoke("history", run_db, "4")
    assert result.exit_code == 0, result.output
    assert "job 4: error" in result.stdout
    assert "not_started → creating" in result.stdout and "queued → error" in result.stdout
    changes = json.loads(invoke("history", run_db, "4", "--json").stdout)
    assert [c["new"] for c in changes][:2] == ["not_started", "creating"]
    assert changes[-1]["new"] == "error" and changes[-1]["backend_job_id"].startswith("j-")


# ----------------------------------------------------------------------------- usage errors
def test_usage_errors_are_one_line_with_exit_code_2(run_db, tmp_path):
    missing = invoke("status", tmp_path / "missing.db")
    assert missing.exit_code == 2
    assert one_error_line(missing) == f"error: no job database at {tmp_path / 'missing.db'}"
    unknown = invoke("history", run_db, "no-such-job")
    assert unknown.exit_code == 2 and "unknown job key(s): no-such-job" in one_error_line(unknown)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("create table t (x int)")
    foreign = invoke("jobs", other)
    assert foreign.exit_code == 2 and "not an eoextract job database" in one_error_line(foreign)
    guess = invoke("status", tmp_path / "jobs.txt")
    assert guess.exit_code == 2


def test_a_folder_or_a_sidecar_given_as_job_database_names_the_database(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    create_job_db(out / "job_tracker.csv", pd.DataFrame({"a": [1]}))
    folder = invoke("status", out)
    assert folder.exit_code == 2
    assert one_error_line(folder) == (f"error: {out} is a folder, not a job database; "
                                      "job database(s) in it: job_tracker.csv")
    sidecar = invoke("jobs", out / "job_tracker.csv.history.csv")
    assert sidecar.exit_code == 2
    assert one_error_line(sidecar) == (f"error: {out / 'job_tracker.csv.history.csv'} is kept beside "
                                       f"the job database {out / 'job_tracker.csv'}; give that instead")
    assert invoke("status", tmp_path / "empty-folder").exit_code == 2


def test_version():
    from eoextract import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"eoextract {__version__}\n"


def test_debug_shows_the_exception(tmp_path):
    result = invoke("--debug", "status", tmp_path / "missing.db")
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "UsageError"


def test_urls_with_passwords_are_masked(tmp_path):
    result = invoke("status", "postgresql://user:hunter22@127.0.0.1:1/nowhere")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert "hunter22" not in result.output and "user:***@" in line


# ----------------------------------------------------------------------------- retry
def test_retry_resets_failed_jobs_and_records_it(run_db, tmp_path):
    db_path = copy_db(run_db, tmp_path)
    dry = invoke("retry", db_path, "--dry-run")
    assert dry.exit_code == 0 and "would retry 1 job(s): 4" in dry.stdout
    assert get_job_db(db_path).get("4").status is JobStatus.ERROR
    result = invoke("retry", db_path)
    assert result.exit_code == 0 and "retried 1 job(s): 4" in result.stdout
    db = get_job_db(db_path)
    rec = db.get("4")
    assert rec.status is JobStatus.NOT_STARTED and rec.attempt == 0 and rec.fields["error_class"] is None
    last = db.history("4")[-1]
    assert (last.old, last.new) == (JobStatus.ERROR, JobStatus.NOT_STARTED)
    assert last.message == "retried by user (was error)" and last.manager_id.startswith("eoextract-cli:")
    # named jobs: any final failure; a finished job is reported and exits 1
    mixed = invoke("retry", db_path, "--keys", "5,0")
    assert mixed.exit_code == 1
    assert "retried 1 job(s): 5" in mixed.stdout
    assert "job 0: cannot retry it: it is finished" in one_error_line(mixed)
    assert invoke("retry", db_path, "--status", "running").exit_code == 2
    assert invoke("retry", db_path, "--keys", "nope").exit_code == 2


# ----------------------------------------------------------------------------- cancel / logs
@pytest.fixture()
def queued_job(local_backend, tmp_path):
    """A job database with one slow job queued on the backend, as a manager leaves it."""
    db = create_job_db(tmp_path / "live.db", pd.DataFrame({"title": [f"slow-{uuid.uuid4().hex[:6]}"]},
                                                          index=["a"]))
    db.register_backend("local", local_backend.url)
    connection = local_backend.connect()
    job = _cube(connection).create_job(title="slow", out_format="NetCDF",
                                       job_options={"eoextract_fault": "slow", "eoextract_fault_delay_s": 60})
    job.start()
    db.transition("a", JobStatus.CREATING, backend_name="local", attempt=1)
    db.transition("a", JobStatus.QUEUED, id=job.job_id, backend_status="queued")
    yield tmp_path / "live.db", job
    try:
        job.stop()
    except Exception:  # noqa: BLE001
        pass


def creds(user="eoextract", password="eoextract"):
    return {"EOEXTRACT_LOCAL_USER": user, "EOEXTRACT_LOCAL_PASSWORD": password}


def test_cancel_stops_the_backend_job(queued_job):
    db_path, job = queued_job
    refused = invoke("cancel", db_path)
    assert refused.exit_code == 2 and "--yes" in one_error_line(refused)
    result = invoke("cancel", db_path, "--keys", "a", env=creds())
    assert result.exit_code == 0, result.output
    assert "canceled 1 job(s): a" in result.stdout
    assert job.describe()["status"] == "canceled"
    db = get_job_db(db_path)
    assert db.get("a").status is JobStatus.CANCELED
    assert db.history("a")[-1].message == f"canceled by user (backend job {job.job_id} stopped)"


def test_cancel_with_wrong_credentials_changes_nothing_and_hides_them(queued_job):
    db_path, job = queued_job
    result = invoke("cancel", db_path, "--yes", env=creds(password="s3cret-wrong"))
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith("error: job a: backend 'local':")
    assert "s3cret-wrong" not in result.output
    assert get_job_db(db_path).get("a").status is JobStatus.QUEUED
    assert job.describe()["status"] in ("queued", "running")
    only_db = invoke("cancel", db_path, "--yes", "--db-only")
    assert only_db.exit_code == 0 and get_job_db(db_path).get("a").status is JobStatus.CANCELED


def test_logs_of_a_failed_job(run_db):
    result = invoke("logs", run_db, "4", env=creds())
    assert result.exit_code == 0, result.output
    assert "backend job j-" in result.stdout and "Simulated processing failure" in result.stdout
    data = json.loads(invoke("logs", run_db, "4", "--json", "--level", "error", env=creds()).stdout)
    assert data["job_key"] == "4" and data["logs"]
    none = invoke("logs", run_db, "5", env=creds())
    assert none.exit_code == 1 and "has no backend job yet" in one_error_line(none)


def test_logs_without_credentials_says_which_to_set(run_db):
    result = invoke("logs", run_db, "4")
    assert result.exit_code == 1
    line = one_error_line(result)
    assert line.startswith("error: backend 'local' needs credentials: [401]")
    assert "set EOEXTRACT_LOCAL_USER and EOEXTRACT_LOCAL_PASSWORD, or EOEXTRACT_LOCAL_ACCESS_TOKEN" in line
    wrong = invoke("logs", run_db, "4", env=creds(password="not-this-one"))
    assert wrong.exit_code == 1
    assert "backend 'local' refused the credentials: [403]" in one_error_line(wrong)
    assert "not-this-one" not in wrong.output


class ClosingServer:
    """Accepts connections on 127.0.0.1 and closes them at once (a backend that is down
    behind its port); counts the connections."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def test_logs_of_a_stopped_backend_fail_at_once_in_one_line(tmp_path):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:  # a port nobody listens on
        free_port = probe.getsockname()[1]
    db = create_job_db(tmp_path / "jobs.db", pd.DataFrame({"title": ["x"]}, index=["a"]))
    db.register_backend("local", f"http://127.0.0.1:{free_port}")
    db.transition("a", JobStatus.CREATING, backend_name="local", attempt=1)
    db.transition("a", JobStatus.QUEUED, id="j-1")
    result = invoke("logs", tmp_path / "jobs.db", "a", env=creds())
    assert result.exit_code == 1
    assert one_error_line(result) == (
        f"error: cannot reach backend 'local' at http://127.0.0.1:{free_port}: connection refused "
        f"(is it running, and is the URL recorded in the job database still right?)")
    # no retries: one connection per request the client makes
    server = ClosingServer()
    try:
        db.register_backend("local", f"http://127.0.0.1:{server.port}")
        dropped = invoke("logs", tmp_path / "jobs.db", "a", env=creds())
        cancel = invoke("cancel", tmp_path / "jobs.db", "--keys", "a", env=creds())
    finally:
        server.sock.close()
    assert dropped.exit_code == 1 and "cannot reach backend 'local'" in one_error_line(dropped)
    assert cancel.exit_code == 1
    assert one_error_line(cancel).startswith("error: job a: cannot reach backend 'local': ")
    assert "Retrying" not in dropped.output and server.accepted <= 4


# ----------------------------------------------------------------------------- stac
def write_item_file(output_dir: Path, key: str, i: int) -> None:
    """A finished job's stored items, as the extraction manager writes them (asset hrefs
    relative to the output folder)."""
    data = output_dir / f"job_{key}" / f"sample_{i}.nc"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(b"netcdf bytes")
    lon, lat = 5.0 + i * 0.1, 51.0
    item = pystac.Item(f"sample-{i}", {"type": "Polygon", "coordinates": [[[lon, lat], [lon + 0.05, lat],
                       [lon + 0.05, lat + 0.05], [lon, lat + 0.05], [lon, lat]]]},
                       [lon, lat, lon + 0.05, lat + 0.05], dt.datetime(2021, 6, 1, tzinfo=dt.UTC), {})
    item.add_asset("data", pystac.Asset(f"job_{key}/sample_{i}.nc",
                                        media_type="application/x-netcdf", roles=["data"]))
    items_dir = output_dir / ".eoextract" / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    document = {"version": 1, "job_key": key, "backend_job_id": None,
                "items": [item.to_dict(include_self_link=False, transform_hrefs=False)]}
    (items_dir / f"{key}.json").write_text(json.dumps(document))


def test_stac_build_and_validate(tmp_path):
    out = tmp_path / "extraction"
    for i in range(3):
        write_item_file(out, str(i), i)
    result = invoke("stac", "build", out, "--collection-id", "demo", "--description", "Demo")
    assert result.exit_code == 0, result.output
    assert "valid:" in result.stdout and "3 items" in result.stdout.replace("\n", " ")
    collection = json.loads((out / "stac" / "collection.json").read_text())
    assert collection["id"] == "demo"
    valid = invoke("stac", "validate", out / "stac", "--check-assets")
    assert valid.exit_code == 0 and "valid:" in valid.stdout
    # the output folder, as other commands take it, and a stac-geoparquet file
    assert invoke("stac", "validate", out).stdout.startswith(f"valid: {out / 'stac'} (")
    assert invoke("stac", "export-geoparquet", out, tmp_path / "items.parquet").exit_code == 0
    parquet = invoke("stac", "validate", tmp_path / "items.parquet")
    assert parquet.exit_code == 2 and "is a Parquet file" in one_error_line(parquet)
    # break one item: invalid catalogue, exit 1
    item_file = next((out / "stac").rglob("sample-1.json"))
    broken = json.loads(item_file.read_text())
    del broken["properties"]["datetime"]
    item_file.write_text(json.dumps(broken))
    invalid = invoke("stac", "validate", out / "stac", "--json")
    assert invalid.exit_code == 1
    report = json.loads(invalid.stdout)
    assert report["valid"] is False and report["items"] == 3 and report["errors"]
    single = invoke("stac", "validate", item_file)
    assert single.exit_code == 1 and "invalid" in single.stderr
    assert invoke("stac", "validate", tmp_path / "nothing").exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = invoke("stac", "build", empty)
    assert nothing.exit_code == 1 and "no stored items" in one_error_line(nothing)


def test_stac_build_keeps_the_recorded_collection_like_build_catalogue(tmp_path):
    """The command and the library build from the same item store with the same settings."""
    from eoextract.extract import ItemStore, build_catalogue

    out = tmp_path / "extraction"
    for i in range(2):
        write_item_file(out, str(i), i)
    ItemStore(out).write_settings(collection_id="CROPTYPE-S2", description="Recorded by the manager")
    result = invoke("stac", "build", out, "--catalogue-dir", tmp_path / "cat")
    assert result.exit_code == 0, result.output
    assert "valid:" in result.stdout and "2 items" in result.stdout
    by_cli = json.loads((tmp_path / "cat" / "collection.json").read_text())
    by_library = json.loads(build_catalogue(out, output_path=tmp_path / "lib").read_text())
    assert by_cli["id"] == by_library["id"] == "CROPTYPE-S2"
    assert by_cli["description"] == by_library["description"] == "Recorded by the manager"
    item = json.loads(next((tmp_path / "cat").rglob("sample-0.json")).read_text())
    assert item["assets"]["data"]["href"].endswith("extraction/job_0/sample_0.nc")


def test_stac_build_without_recorded_settings_names_the_collection(tmp_path):
    """Nothing recorded: the id given (or the folder's name) and a non-empty description."""
    out = tmp_path / "extraction"
    write_item_file(out, "0", 0)
    given = invoke("stac", "build", out, "--collection-id", "demo")
    assert given.exit_code == 0, given.output
    collection = json.loads((out / "stac" / "collection.json").read_text())
    assert (collection["id"], collection["description"]) == ("demo", "Extraction demo")
    named = invoke("stac", "build", out)
    assert named.exit_code == 0, named.output
    collection = json.loads((out / "stac" / "collection.json").read_text())
    assert (collection["id"], collection["description"]) == ("extraction", "Extraction extraction")


# ----------------------------------------------------------------------------- report / entry points
def test_report_writes_html_and_pngs(run_db, tmp_path):
    out = tmp_path / "extraction"
    write_item_file(out, "0", 0)
    missing = invoke("report", run_db, "--output", tmp_path / "r" / "report.html", "--output-dir", out)
    assert missing.exit_code == 2 and not (tmp_path / "r").exists()
    assert one_error_line(missing) == (f"error: cannot write {tmp_path / 'r' / 'report.html'}: "
                                       f"no folder {tmp_path / 'r'} (create it, or give --parents)")
    result = invoke("report", run_db, "--output", tmp_path / "r" / "report.html", "--output-dir", out,
                    "--parents")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert {p.name for p in (tmp_path / "r" / "report_files").iterdir()} == {
        "timeline.png", "status_over_time.png", "distributions.png", "failures.png", "footprints.png"}
    assert invoke("report", run_db, "--output-dir", tmp_path / "missing").exit_code == 2
    at_root = invoke("report", run_db, "-o", "/eoextract-no-such-dir/r.html")
    assert at_root.exit_code == 2 and not Path("/eoextract-no-such-dir").exists()
    assert "no folder /eoextract-no-such-dir" in one_error_line(at_root)


@pytest.mark.slow
def test_entry_points(tmp_path):
    """``python -m eoextract`` and ``python -m eoextract.cli`` run the same app; errors stay
    one line outside CliRunner too."""
    for module in ("eoextract", "eoextract.cli"):
        proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "status" in proc.stdout and "backend" in proc.stdout
        assert "Usage: eoextract " in proc.stdout  # the command's name, not "__main__.py"
    proc = subprocess.run([sys.executable, "-m", "eoextract.cli", "status", str(tmp_path / "x.db")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: no job database at {tmp_path / 'x.db'}"
    assert invoke("backend", "serve", "--help").exit_code == 0
