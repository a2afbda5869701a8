"""``histories``: the status changes of many jobs in one read, the same as asking job by job,
in every kind of job database; summaries of file databases stay linear in the jobs."""

from __future__ import annotations

import pandas as pd
import pytest
from openeo.extra.job_management import CsvJobDatabase

from eoextract.jobs.db import create_job_db, get_job_db
from eoextract.jobs.db import _file_format
from eoextract.jobs.status import JobStatus
from eoextract.report import history_frame, summarize

KINDS = ["sqlite", pytest.param("pg", marks=pytest.mark.pg), "csv", "parquet", "openeo-csv"]


def _database(kind: str, tmp_path, request, n: int):
    frame = pd.DataFrame({"tile": [f"t{i}" for i in range(n)]})
    if kind == "openeo-csv":
        db = get_job_db(CsvJobDatabase(tmp_path / "openeo.csv"))
        db.initialize_from_df(frame)
        return db
    location = {"sqlite": str(tmp_path / "jobs.db"), "csv": tmp_path / "jobs.csv",
                "parquet": tmp_path / "jobs.parquet"}.get(kind) or request.getfixturevalue("pg_url")
    return create_job_db(location, frame)


@pytest.mark.parametrize("kind", KINDS)
def test_histories_equal_the_history_of_each_job(kind, tmp_path, request):
    db = _database(kind, tmp_path, request, 6)
    keys = list(db.read().index.astype(str))
    db.transition(keys[1], JobStatus.CREATING, backend_name="b1", attempt=1)
    db.transition(keys[1], JobStatus.RUNNING, id="j1")
    db.transition(keys[1], JobStatus.FINISHED)
    db.transition(keys[4], JobStatus.SKIPPED, message="not needed")
    if hasattr(db, "flush"):
        db.flush()
    db.transition(keys[4], JobStatus.NOT_STARTED, user_retry=True)  # not flushed yet, if files

    each = {key: db.history(key) for key in keys}
    every = db.histories()
    assert every == {key: changes for key, changes in each.items() if changes}
    assert [c.new for c in every[keys[1]]][-3:] == [JobStatus.CREATING, JobStatus.RUNNING, JobStatus.FINISHED]
    assert [c.new for c in every[keys[4]]][-2:] == [JobStatus.SKIPPED, JobStatus.NOT_STARTED]
    assert db.histories([keys[4], "no such job"]) == {keys[4]: each[keys[4]]}
    assert db.histories([]) == {}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_file_database_summary_reads_its_history_once(fmt, tmp_path, monkeypatch):
    """Before, each job read the whole history file: 4,000 jobs took 26 s, 100,000 hours."""
    db = create_job_db(tmp_path / f"jobs.{fmt}", pd.DataFrame({"tile": [f"t{i}" for i in range(300)]}))
    for key in ("3", "7"):
        db.transition(key, JobStatus.CREATING, backend_name="b1", attempt=1)
    db.flush()
    reads = []
    real = _file_format.read_history
    monkeypatch.setattr("eoextract.jobs.db._file_db.read_history",
                        lambda path: reads.append(path) or real(path))
    summary = summarize(db)
    assert reads == [db.history_path] and summary.total == 300 and summary.started_at is not None
    reads.clear()
    frame = history_frame(db)
    assert len(reads) == 1 and len(frame) == 302 and set(frame["new"]) == {"not_started", "creating"}


def test_a_stage_retry_of_many_jobs_reads_the_history_once(tmp_path, monkeypatch):
    from eoextract.jobs import retry_jobs

    db = create_job_db(tmp_path / "jobs.csv", pd.DataFrame({"tile": [f"t{i}" for i in range(40)]}))
    for i in range(0, 40, 2):  # every other job: its backend job finished, its download failed
        key = str(i)
        db.transition(key, JobStatus.CREATING, backend_name="b1", attempt=1)
        db.transition(key, JobStatus.RUNNING, id=f"j{i}")
        if i % 4 == 0:
            db.transition(key, JobStatus.DOWNLOADING)
        db.transition(key, JobStatus.ERROR, error_class="DownloadFailed", error_message="boom")
    db.flush()
    reads = []
    real = _file_format.read_history
    monkeypatch.setattr("eoextract.jobs.db._file_db.read_history",
                        lambda path: reads.append(path) or real(path))
    results = retry_jobs(db, statuses=[JobStatus.ERROR], stage="download")
    assert len(reads) == 1 and len(results) == 20
    assert {r.job_key for r in results if r.ok} == {str(i) for i in range(0, 40, 4)}
    assert all("never finished" in r.message for r in results if not r.ok)
