"""openeo's run behaviour kept by our manager: the last status histogram, a run that ends
on a backend outage with the backend's error, jobs handed back already running, and one
file column per usage key."""

from __future__ import annotations

import json
import logging
import time

import pandas as pd
import pytest
from openeo.extra.job_management import CsvJobDatabase
from openeo.rest import OpenEoApiError, OpenEoApiPlainError
from openeo.rest.job import BatchJob

from eoextract.jobs import MultiBackendJobManager, create_job_db, get_job_db
from eoextract.jobs.db._usage_columns import usage_fields
from eoextract.jobs.status import JobStatus

from tests.jobs.test_openeo_compat import _manager

USAGE = {
    "cpu": {"value": 12, "unit": "cpu-seconds"},
    "memory": {"value": 3400, "unit": "mb-seconds"},
    "duration": {"value": 61, "unit": "seconds"},
    "input_pixel": {"value": 1.5, "unit": "mega-pixel"},
    "sentinelhub": {"value": 0.25, "unit": "sentinelhub_processing_unit"},
}


def test_last_histogram_is_logged_after_the_last_download(local_backend, start_jobs, job_df, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="eoextract.jobs.manager")
    m = _manager(local_backend, root_dir=tmp_path / "out")
    m.run_jobs(job_df(3), start_jobs(), job_db=tmp_path / "jobs.db")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Job status histogram")]
    assert lines and "'finished': 3" in lines[-1] and "Run stats:" in lines[-1]
    assert "'downloading'" not in lines[-1]


def test_outage_longer_than_allowed_raises_the_backends_error_and_keeps_the_jobs(
        local_backend, start_jobs, job_df, tmp_path, caplog):
    db_path = tmp_path / "jobs.db"
    slow = start_jobs(lambda row: {"eoextract_fault": "slow", "eoextract_fault_delay_s": 0.5}, instant=False)
    m = MultiBackendJobManager(poll_sleep=0.1, retry_backoff=0.05, root_dir=tmp_path / "out",
                               max_backend_outage=1.0)
    m.add_backend("local", local_backend.connect(retry=False))  # no retries inside a request
    # creating and starting work (POST); every GET of a job or the listing fails from then on
    local_backend.inject_fault(r"^/jobs", status=502, times=100_000, method="GET")
    try:
        started = time.monotonic()
        with pytest.raises((OpenEoApiError, OpenEoApiPlainError)) as raised:
            m.run_jobs(job_df(2), slow, job_db=db_path)
        assert time.monotonic() - started < 60
    finally:
        local_backend.clear_faults()
    assert raised.value.http_status_code == 502
    assert any("run it again to go on" in note for note in raised.value.__notes__)
    assert any(r.levelno == logging.ERROR and "failed every request" in r.getMessage() for r in caplog.records)
    db = get_job_db(db_path)
    statuses = set(db.read()["status"])
    assert statuses <= {str(JobStatus.QUEUED), str(JobStatus.RUNNING)} and db.read()["id"].notna().all()
    db.close()
    # the next run goes on with the same backend jobs
    stats = _manager(local_backend, root_dir=tmp_path / "out").run_jobs(start_job=slow, job_db=db_path)
    assert stats["status_counts"] == {"finished": 2} and stats.get("start_job call", 0) == 0


def test_no_outage_limit_without_a_failure(local_backend, start_jobs, job_df, tmp_path):
    m = _manager(local_backend, root_dir=tmp_path / "out", max_backend_outage=0.0)
    stats = m.run_jobs(job_df(2), start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2}


def test_a_job_handed_back_already_running_is_recorded_running(local_backend, job_df, tmp_path):
    con = local_backend.connect()
    cube = con.load_collection("SENTINEL2_L2A", spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01,
                                                                "north": 51.01},
                               temporal_extent=["2021-06-01", "2021-06-10"], bands=["B04"])
    existing = cube.create_job(title=job_df(1)["title"][0], out_format="NetCDF",
                               job_options={"eoextract_fault": "slow", "eoextract_fault_delay_s": 1.5})
    existing.start()
    deadline = time.monotonic() + 30
    while existing.status() != "running" and time.monotonic() < deadline:
        time.sleep(0.05)

    def start_job(row, connection, **kwargs):
        return BatchJob(existing.job_id, connection=connection)

    db_path = tmp_path / "jobs.db"
    stats = _manager(local_backend, root_dir=tmp_path / "out").run_jobs(
        pd.DataFrame({"title": ["again"]}), start_job, job_db=db_path)
    assert stats["status_counts"] == {"finished": 1} and stats["job started running"] == 1
    assert "job start" not in stats  # not started a second time
    db = get_job_db(db_path)
    (key,) = db.read().index
    news = [h.new for h in db.history(key)]
    assert news[:3] == [JobStatus.NOT_STARTED, JobStatus.CREATING, JobStatus.RUNNING]
    db.close()


def test_usage_fields_keep_every_key():
    fields = usage_fields({"usage": USAGE, "costs": 4.5})
    assert json.loads(fields["usage"]) == USAGE
    assert fields["cpu"] == "12 cpu-seconds" and fields["duration"] == "61 seconds"
    assert fields["costs"] == 4.5
    assert usage_fields({"status": "finished"}) == {}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_files_have_one_column_per_usage_key(tmp_path, suffix):
    path = tmp_path / f"jobs{suffix}"
    df = pd.DataFrame({"title": ["a", "b"], "sentinelhub": ["mine", "mine"]})  # a user column wins
    db = create_job_db(path, df)
    key = db.read().index[0]
    db.update(key, **usage_fields({"usage": USAGE, "costs": 4.5}))
    db.flush()
    raw = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert raw.loc[0, "input_pixel"] == "1.5 mega-pixel" and pd.isna(raw.loc[1, "input_pixel"])
    assert raw.loc[0, "cpu"] == "12 cpu-seconds" and raw.loc[0, "costs"] == 4.5
    assert list(raw["sentinelhub"]) == ["mine", "mine"]
    assert list(raw.columns).count("input_pixel") == 1 and "usage" not in raw.columns
    db.close()
    # read back: the usage columns are no user columns, the usage is whole
    again = get_job_db(path)
    table = again.read()
    assert "input_pixel" not in again.schema.names and json.loads(table.loc[key, "usage"]) == USAGE
    again.update(key, attempt=2)
    again.flush()
    raw2 = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(raw2.columns) == list(raw.columns)
    again.close()
    if suffix == ".csv":
        assert CsvJobDatabase(path).read().loc[0, "input_pixel"] == "1.5 mega-pixel"


def test_openeo_database_gets_one_column_per_usage_key(tmp_path):
    from eoextract.jobs.db import open_for_run

    openeo_db = CsvJobDatabase(tmp_path / "jobs.csv").initialize_from_df(pd.DataFrame({"title": ["a", "b"]}))
    db = open_for_run(None, openeo_db)
    key = db.read().index[1]
    db.update(key, **usage_fields({"usage": USAGE}))
    db.flush()
    raw = pd.read_csv(tmp_path / "jobs.csv")
    assert raw.loc[1, "input_pixel"] == "1.5 mega-pixel" and raw.loc[1, "memory"] == "3400 mb-seconds"


def test_create_and_get_job_db_take_openeos_argument_names(tmp_path):
    db = create_job_db(path=tmp_path / "jobz.csv", df=pd.DataFrame({"year": [2018, 2019]}))
    assert len(db.read()) == 2
    assert len(get_job_db(path=tmp_path / "jobz.csv").read()) == 2
    from eoextract.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="once"):
        get_job_db(tmp_path / "jobz.csv", path=tmp_path / "jobz.csv")
    with pytest.raises(ConfigurationError, match="df"):
        create_job_db(path=tmp_path / "other.csv")
