"""One INFO log line per job event, under ``eoextract.jobs``, over a real run."""

from __future__ import annotations

import logging
import re

import pytest

from eoextract.jobs import JobManager
from eoextract.jobs.db import get_job_db


def _events(caplog) -> dict[str, list[logging.LogRecord]]:
    by_key: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        if record.name == "eoextract.jobs.events":
            by_key.setdefault(record.job_key, []).append(record)
    return by_key


def test_every_status_change_of_a_run_is_one_info_line(start_jobs, local_backend, job_df, tmp_path,
                                                        caplog, monkeypatch):
    secret = "tok-4f9a1c77e2d04b"
    monkeypatch.setenv("EOEXTRACT_TEST_TOKEN", secret)
    inner = start_jobs(lambda row: {"eoextract_fault": "error", "eoextract_fault_times": 1}
                       if row["value"] == 1 else None)

    def start_job(row, connection, **kw):
        if row["value"] == 2:
            raise KeyError(f"no column for {secret}")
        return inner(row, connection, **kw)

    caplog.set_level(logging.INFO, logger="eoextract")
    m = JobManager(poll_sleep=0.1, download_results=False, retry_backoff=0.05, max_attempts=2)
    m.add_backend("local", local_backend.connect, parallel_jobs=3)
    stats = m.run_jobs(job_df(3), start_job, job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2, "start_failed": 1}
    events = _events(caplog)
    assert set(events) == {"0", "1", "2"}
    db = get_job_db(tmp_path / "jobs.db")
    for key, records in events.items():
        assert all(r.levelno == logging.INFO for r in records)
        # one line per recorded status change, in order
        history = db.history(key)[1:]  # the first row records the job's insertion
        assert [r.event for r in records] == [
            {"not_started": "retried"}.get(c.new.value, c.new.value) for c in history]
    finished = [r.getMessage() for r in events["0"]]
    job_id = db.get("0").backend_job_id
    assert finished[0] == "job 0 on local: creating (attempt 1)"
    assert f"job 0 on local ({job_id}): queued" in finished
    assert finished[-1] == f"job 0 on local ({job_id}): finished"
    failed_once = [r.getMessage() for r in events["1"]]
    assert any(re.match(r"job 1 on local: retried after JobFailed: run: .*backend job j-.*retry in", m)
               for m in failed_once), failed_once
    assert failed_once[-1].endswith("finished") and "creating (attempt 2)" in " ".join(failed_once)
    user_error = events["2"][-1]
    assert user_error.event == "start_failed" and user_error.backend_job_id is None
    assert user_error.getMessage().startswith("job 2 on local: start_failed (UserCodeError.KeyError): ")
    lines = [r.getMessage() for records in events.values() for r in records]
    assert not [line for line in lines if secret in line] and "***" in user_error.getMessage()


def test_events_stay_quiet_above_info(start_jobs, local_backend, job_df, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="eoextract")
    m = JobManager(poll_sleep=0.1, download_results=False)
    m.add_backend("local", local_backend.connect, parallel_jobs=2)
    m.run_jobs(job_df(2), start_jobs(), job_db=tmp_path / "jobs.db")
    assert not _events(caplog)


def test_the_run_forgets_the_backend_of_jobs_that_ended(caplog):
    from datetime import datetime, timezone

    from eoextract.jobs._events import JobEvents
    from eoextract.jobs.db import StatusChange, Transition
    from eoextract.jobs.status import JobStatus as S

    caplog.set_level(logging.INFO, logger="eoextract.jobs.events")
    events = JobEvents()
    now = datetime.now(timezone.utc)
    for i in range(1000):
        key = str(i)
        events.log(Transition(key, S.CREATING, fields={"backend_name": "cdse"}),
                   StatusChange(key, S.NOT_STARTED, S.CREATING, now))
        events.log(Transition(key, S.QUEUED), StatusChange(key, S.CREATED, S.QUEUED, now, backend_job_id=f"j-{i}"))
        if i < 990:
            events.log(Transition(key, S.FINISHED), StatusChange(key, S.DOWNLOADING, S.FINISHED, now,
                                                                   backend_job_id=f"j-{i}"))
    assert len(events) == 10  # only the jobs still open
    lines = [r.getMessage() for r in caplog.records if r.name == "eoextract.jobs.events"]
    assert lines[2] == "job 0 on cdse (j-0): finished"  # the last line still names the backend
