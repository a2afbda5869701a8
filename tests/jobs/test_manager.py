"""The job manager against the embedded backend over real HTTP."""

from __future__ import annotations

import time
import uuid

import pandas as pd
import pytest

from eoextract.jobs.db import get_job_db
from eoextract.jobs import JobManager, MultiBackendJobManager
from eoextract.jobs.status import JobStatus



def manager(**kw):
    kw.setdefault("poll_sleep", 0.1)
    kw.setdefault("download_results", False)
    kw.setdefault("retry_backoff", 0.05)
    return JobManager(**kw)


def test_runs_all_jobs_to_finished_with_history(start_jobs, local_backend, job_df, tmp_path):
    m = manager()
    m.add_backend("local", local_backend.connect, parallel_jobs=3)
    stats = m.run_jobs(job_df(7), start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 7}
    assert stats["start_job call"] == 7
    db = get_job_db(tmp_path / "jobs.db")
    df = db.read()
    assert df["id"].notna().all() and df["id"].is_unique
    assert (df["backend_name"] == "local").all()
    assert df["value"].tolist() == list(range(7))  # user columns kept
    path = [str(c.new) for c in db.history(df.index[0])]
    assert path[:2] == ["not_started", "creating"] and path[-1] == "finished"
    assert "downloading" not in path  # nothing to download: no downloading step
    assert db.backends()["local"].startswith("http://127.0.0.1")


def test_multibackendjobmanager_alias_and_download(start_jobs, local_backend, job_df, tmp_path):
    assert MultiBackendJobManager is JobManager
    m = JobManager(poll_sleep=0.1, root_dir=tmp_path / "out")
    m.add_backend("local", local_backend.connect(), parallel_jobs=2)
    m.run_jobs(job_df(2), start_jobs(), job_db=tmp_path / "jobs.db")
    df = get_job_db(tmp_path / "jobs.db").read()
    for job_id in df["id"]:
        job_dir = tmp_path / "out" / f"job_{job_id}"
        assert (job_dir / f"job_{job_id}.json").exists()
        assert any(p.suffix == ".nc" for p in job_dir.iterdir())


def test_user_code_errors_mark_only_their_row(start_jobs, local_backend, job_df, tmp_path):
    inner = start_jobs()

    def start_job(row, connection, **kw):
        if row["value"] == 1:
            raise KeyError("missing column")
        if row["value"] == 2:
            return None
        return inner(row, connection)

    m = manager()
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(job_df(4), start_job, job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2, "start_failed": 1, "skipped": 1}
    df = get_job_db(tmp_path / "jobs.db").read().set_index("value")
    assert df.loc[1, "status"] == "start_failed"
    assert df.loc[1, "error_class"] == "UserCodeError.KeyError"
    assert df.loc[2, "status"] == "skipped"


def test_callback_exception_does_not_stop_the_run(start_jobs, local_backend, job_df, tmp_path):
    class Failing(JobManager):
        def on_job_done(self, job, row):
            if row["value"] == 0:
                raise RuntimeError("callback bug")

    m = Failing(poll_sleep=0.1, retry_backoff=0.05, max_attempts=2)
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(job_df(3), start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2, "error": 1}
    df = get_job_db(tmp_path / "jobs.db").read().set_index("value")
    assert df.loc[0, "error_class"] == "UserCodeError.RuntimeError"


def test_backend_job_error_once_is_retried(start_jobs, local_backend, job_df, tmp_path):
    start = start_jobs(lambda row: {"eoextract_fault": "error", "eoextract_fault_times": 1})
    m = manager()
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(job_df(2), start, job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2}
    db = get_job_db(tmp_path / "jobs.db")
    df = db.read()
    assert df["attempt"].tolist() == [2, 2]  # each title's first job errs, its second succeeds
    retried = df.index[0]
    history = db.history(retried)
    assert [str(c.new) for c in history].count("creating") == 2
    errs = [c for c in history if str(c.new) == "not_started" and c.old is not None]
    assert errs and "run:" in errs[0].message
    # the failed attempt's backend job id stays in the history
    assert errs[0].backend_job_id or "backend job" in errs[0].message


def test_persistent_job_error_ends_in_error_after_max_attempts(start_jobs, local_backend, job_df, tmp_path):
    start = start_jobs(lambda row: {"eoextract_fault": "error"})
    m = manager(max_attempts=2)
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(job_df(1), start, job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"error": 1}
    row = get_job_db(tmp_path / "jobs.db").read().iloc[0]
    assert row["attempt"] == 2
    assert row["error_class"] == "JobFailed"
    assert row["error_message"]


def test_lost_job_is_detected_and_retried(start_jobs, local_backend, job_df, tmp_path):
    start = start_jobs(lambda row: {"eoextract_fault": "lost", "eoextract_fault_times": 1},
                           instant=False)
    m = manager()
    m.add_backend("local", local_backend.connect, parallel_jobs=1)
    stats = m.run_jobs(job_df(1), start, job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 1}
    assert stats["job lost"] >= 1
    row = get_job_db(tmp_path / "jobs.db").read().iloc[0]
    assert row["attempt"] == 2


def test_server_errors_on_create_are_retried(start_jobs, local_backend, job_df, tmp_path):
    local_backend.inject_fault(r"^/jobs$", status=503, times=3, method="POST")
    try:
        m = manager()
        m.add_backend("local", local_backend.connect, parallel_jobs=2)
        stats = m.run_jobs(job_df(2), start_jobs(), job_db=tmp_path / "jobs.db")
    finally:
        local_backend.clear_faults()
    assert stats["status_counts"] == {"finished": 2}
    assert stats["start retry"] >= 1


def test_retry_after_is_honoured(start_jobs, local_backend, job_df, tmp_path):
    local_backend.inject_fault(r"^/jobs$", status=429, times=1, retry_after=1, method="POST")
    try:
        m = manager(max_attempts=3)
        m.add_backend("local", local_backend.connect, parallel_jobs=1)
        t0 = time.monotonic()
        stats = m.run_jobs(job_df(1), start_jobs(), job_db=tmp_path / "jobs.db")
        elapsed = time.monotonic() - t0
    finally:
        local_backend.clear_faults()
    assert stats["status_counts"] == {"finished": 1}
    assert elapsed >= 1.0  # waited for Retry-After, not the 0.05 s backoff


def test_polling_uses_the_job_listing(start_jobs, local_backend, job_df, tmp_path):
    m = manager()
    m.add_backend("local", local_backend.connect, parallel_jobs=4)
    stats = m.run_jobs(job_df(8), start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 8}
    assert stats["job listing"] >= 1
    assert stats.get("job describe", 0) == 0


def test_backend_name_pins_row_or_is_replaced(start_jobs, local_backend, job_df, tmp_path):
    df = job_df(4)
    df["backend_name"] = ["b", "b", "cdse-label", None]
    m = manager()
    m.add_backend("a", local_backend.connect, parallel_jobs=2)
    m.add_backend("b", local_backend.connect, parallel_jobs=2)
    m.run_jobs(df, start_jobs(), job_db=tmp_path / "jobs.db")
    out = get_job_db(tmp_path / "jobs.db").read().set_index("value")
    assert out.loc[0, "backend_name"] == "b" and out.loc[1, "backend_name"] == "b"
    assert out.loc[2, "backend_name"] in {"a", "b"}
    assert (out["status"] == "finished").all()


def test_rows_added_later_are_run(start_jobs, local_backend, job_df, tmp_path):
    m = manager()
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    df = job_df(2)
    m.run_jobs(df, start_jobs(), job_db=tmp_path / "jobs.db")
    more = pd.concat([df, job_df(2).set_axis([2, 3])])
    stats = m.run_jobs(more, start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 4}
    assert stats["start_job call"] == 2  # only the new rows


def test_stop_job_thread_is_prompt_with_jobs_running(start_jobs, local_backend, job_df, tmp_path):
    start = start_jobs(lambda row: {"eoextract_fault": "slow", "eoextract_fault_delay_s": 30},
                           instant=False)
    m = JobManager(poll_sleep=5, download_results=False)
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    from eoextract.jobs.db import create_job_db

    db = create_job_db(tmp_path / "jobs.db", job_df(2))
    m.start_job_thread(start, db)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if sum(db.count_by_status(["queued", "running"]).values()) == 2:
            break
        time.sleep(0.1)
    t0 = time.monotonic()
    m.stop_job_thread()
    assert time.monotonic() - t0 < 3
    counts = db.count_by_status()
    assert set(counts) <= {"queued", "running", "created"}
    # cancel the slow jobs so the backend's workers are free for other tests
    con = local_backend.connect()
    for job_id in db.read()["id"].dropna():
        con.job(job_id).stop()


def test_cancel_running_job_after(start_jobs, local_backend, job_df, tmp_path):
    start = start_jobs(lambda row: {"eoextract_fault": "slow", "eoextract_fault_delay_s": 30},
                           instant=False)
    m = manager(cancel_running_job_after=0.5)
    m.add_backend("local", local_backend.connect, parallel_jobs=1)
    stats = m.run_jobs(job_df(1), start, job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"canceled": 1}
    assert stats["job cancel requested"] >= 1


def test_no_backends_is_a_clear_error(start_jobs, job_df, tmp_path):
    from eoextract.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="add_backend"):
        JobManager().run_jobs(job_df(1), start_jobs(), job_db=tmp_path / "jobs.db")
    assert not (tmp_path / "jobs.db").exists()  # checked before anything is written


def test_history_records_manager_id(start_jobs, local_backend, job_df, tmp_path):
    m = manager(manager_id="mgr-A")
    m.add_backend("local", local_backend.connect, parallel_jobs=1)
    m.run_jobs(job_df(1), start_jobs(), job_db=tmp_path / "jobs.db")
    db = get_job_db(tmp_path / "jobs.db")
    changes = db.history(db.read().index[0])
    assert {c.manager_id for c in changes if c.old is not None} == {"mgr-A"}
    assert JobStatus(changes[-1].new) is JobStatus.FINISHED


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_job_databases_as_live_db(start_jobs, local_backend, job_df, tmp_path, suffix):
    path = tmp_path / f"jobs{suffix}"
    m = manager()
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(job_df(3), start_jobs(), job_db=path)
    assert stats["status_counts"] == {"finished": 3}
    df = get_job_db(path).read()
    assert (df["status"] == "finished").all() and df["id"].is_unique
    # openeo's own reader sees the finished jobs
    from openeo.extra.job_management import CsvJobDatabase, ParquetJobDatabase

    theirs = (CsvJobDatabase if suffix == ".csv" else ParquetJobDatabase)(path).read()
    assert set(theirs["status"]) == {"finished"}
    assert set(theirs["id"]) == set(df["id"])


def test_failing_backend_is_backed_off(start_jobs, local_backend, job_df, tmp_path):
    local_backend.inject_fault(r"^/jobs$", status=500, times=6, method="POST")
    try:
        m = manager(max_attempts=5, retry_backoff=0.2)
        m.add_backend("local", local_backend.connect, parallel_jobs=3)
        stats = m.run_jobs(job_df(3), start_jobs(), job_db=tmp_path / "jobs.db")
    finally:
        local_backend.clear_faults()
    assert stats["status_counts"] == {"finished": 3}
    assert stats["backend paused"] >= 1


def test_secrets_stay_out_of_db_and_logs(start_jobs, job_df, tmp_path, caplog):
    import logging

    from eoextract.backend import LocalBackend

    password = "pw-Zq81-not-in-db"
    with LocalBackend(user="alice", password=password) as backend:
        con = backend.connect()
        token = con.auth.bearer
        m = manager()
        m.add_backend("local", con, parallel_jobs=2)
        with caplog.at_level(logging.DEBUG, logger="eoextract"):
            m.run_jobs(job_df(2), start_jobs(lambda row: {"eoextract_fault": "error",
                                                           "eoextract_fault_times": 1}),
                       job_db=tmp_path / "jobs.db")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("jobs.db*"))
    for secret in (password, token):
        assert secret.encode() not in raw
        assert secret not in caplog.text
    assert get_job_db(tmp_path / "jobs.db").backends()["local"].startswith("http://127.0.0.1")


def test_process_based_job_creator_with_job_options(local_backend, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    from eoextract.jobs import ProcessBasedJobCreator

    con = local_backend.connect()
    udp_id = f"ndvi_mean_{uuid.uuid4().hex[:6]}"
    from openeo.api.process import Parameter

    geometry = Parameter.geojson("geometry", description="area")
    start = Parameter.string("start_date")
    cube = (con.load_collection("SENTINEL2_L2A", spatial_extent=geometry, temporal_extent=[start, "2021-07-01"],
                                bands=["B04", "B08"]).ndvi())
    con.save_user_defined_process(udp_id, cube.save_result("netCDF"), parameters=[geometry, start])

    gdf = gpd.GeoDataFrame(
        {"start_date": ["2021-06-01", "2021-06-10"], "title": ["pbjc-a", "pbjc-b"]},
        geometry=[box(5.0, 51.0, 5.005, 51.005), box(5.01, 51.0, 5.015, 51.005)], crs=4326)
    creator = ProcessBasedJobCreator(process_id=udp_id, job_options={"eoextract_mode": "instant"})
    args = creator.arguments(gdf.iloc[0], con)
    assert args["geometry"]["type"] == "Polygon"  # linked to the geometry column
    assert args["start_date"] == "2021-06-01"
    m = manager()
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(gdf, creator, job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2}
    job_id = get_job_db(tmp_path / "jobs.db").read()["id"].iloc[0]
    description = con.job(job_id).describe()
    assert description["job_options"] == {"eoextract_mode": "instant"}
    assert description["process"]["process_graph"]  # the UDP call was sent


def test_finished_job_hook_records_fields_and_postprocessing(start_jobs, local_backend, job_df, tmp_path):
    from eoextract.jobs import FinishedJob, FinishedJobResult

    seen = []

    class Summaries(JobManager):
        def process_finished_job(self, job: FinishedJob) -> FinishedJobResult:
            assert job.status is JobStatus.DOWNLOADING and job.batch_job.job_id == job.backend_job_id
            seen.append(job.row["value"])
            job.postprocessing("summary being written")
            return FinishedJobResult(fields={"output_dir": str(tmp_path / job.job_key)}, message="summarised")

    m = Summaries(poll_sleep=0.1, download_results=False, retry_backoff=0.05)
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(job_df(2), start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2} and sorted(seen) == [0, 1]
    db = get_job_db(tmp_path / "jobs.db")
    key = db.read().index[0]
    assert db.get(key).fields["output_dir"] == str(tmp_path / key)
    changes = db.history(key)
    assert [str(c.new) for c in changes][-3:] == ["downloading", "postprocessing", "finished"]
    assert changes[-2].message == "summary being written" and changes[-1].message == "summarised"


def test_finished_job_hook_can_run_the_job_again_or_fail_it(start_jobs, local_backend, job_df, tmp_path):
    from eoextract.errors import ChecksumMismatch
    from eoextract.jobs import FinishedJob, FinishedJobResult

    calls: dict[int, int] = {}

    class Picky(JobManager):
        def process_finished_job(self, job: FinishedJob) -> FinishedJobResult | None:
            value = int(job.row["value"])
            calls[value] = calls.get(value, 0) + 1
            if value == 0 and calls[value] == 1:
                return FinishedJobResult(run_again=ChecksumMismatch("corrupt on the backend"))
            if value == 1:
                raise ValueError("cannot read the result")
            return None

    m = Picky(poll_sleep=0.1, download_results=False, retry_backoff=0.05)
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(job_df(2), start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 1, "error": 1}
    df = get_job_db(tmp_path / "jobs.db").read().set_index("value")
    assert df.loc[0, "attempt"] == 2 and calls[0] == 2  # ran again on the backend, then finished
    assert df.loc[1, "status"] == "error" and df.loc[1, "error_class"] == "UserCodeError.ValueError"
    assert calls[1] == 1  # a user error is not retried


def test_a_run_keeps_no_state_of_its_ended_jobs(start_jobs, local_backend, job_df, tmp_path):
    """What the run loop keeps per job is dropped when the job ends: a long run's memory is
    bounded by the jobs in flight, not by the jobs done."""
    fail_once = start_jobs(lambda row: {"eoextract_fault": "error", "eoextract_fault_times": 1}
                           if row["value"] == 1 else None)
    m = manager(max_attempts=2)
    m.add_backend("local", local_backend.connect, parallel_jobs=3)
    stats = m.run_jobs(job_df(12), fail_once, job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 12}
    assert stats["run retry"] == 1
    run = m._run
    assert len(run.events) == 0
    left = {name: getattr(run, name) for name in ("inflight", "needs_start", "starting", "waiting_start",
                                                   "finish_due", "finish_failures", "unreconciled")}
    assert not any(left.values()), left


def test_expired_leases_are_looked_for_once_per_tenth_of_the_lease(start_jobs, local_backend, job_df,
                                                                   tmp_path):
    class CountingAdoptions(JobManager):
        adoptions = 0

        def _adopt(self, run):
            type(self).adoptions += 1
            super()._adopt(run)

    m = CountingAdoptions(poll_sleep=0.05, download_results=False, lease_seconds=600)
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = m.run_jobs(job_df(6), start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 6}
    assert stats["track_statuses"] >= 3
    assert CountingAdoptions.adoptions == 2  # when the run starts, and at its first poll
