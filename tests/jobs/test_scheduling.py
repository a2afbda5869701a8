"""The run loop's pieces without a backend: what raw statuses mean, retries, backend pauses,
and how results are applied to the job database."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from eoextract._util.retry import RetryPolicy
from eoextract.errors import JobDatabaseError
from eoextract.jobs import JobStatus
from eoextract.jobs._classify import ErrorInfo
from eoextract.jobs._download._transfer import resume_policy
from eoextract.jobs._outcomes import Failure, FollowUp, ResultApplier, TaskResult, Update
from eoextract.jobs._polling import follow_status
from eoextract.jobs._runstate import _Run
from eoextract.jobs._scheduling import BackendHealth, after_failure
from eoextract.jobs.db import JobRecord, create_job_db
from eoextract.jobs.db import Transition

S = JobStatus


def record(status, **fields):
    return JobRecord(pk=1, job_key="k", status=S(status), fields={"id": "j-1", "backend_name": "b", **fields})


def test_raw_statuses_become_changes_and_follow_ups():
    queued = follow_status(record("created", backend_status="created"), {"status": "queued"},
                           needs_start=True, cancel_after=None, results_work=True)
    assert [(e.new, e.expect) for e in queued.effects] == [(S.QUEUED, S.CREATED)]
    assert queued.needs_start is False and queued.then is None

    start = follow_status(record("created", backend_status="created"), {"status": "created"},
                          needs_start=True, cancel_after=None, results_work=True)
    assert start.effects == () and start.then is FollowUp.START

    finished = follow_status(record("running", backend_status="running"),
                             {"status": "finished", "costs": 3, "usage": {"cpu": {"value": 2, "unit": "cpu-h"}}},
                             needs_start=False, cancel_after=None, results_work=True)
    [change] = finished.effects
    assert change.new is S.DOWNLOADING and finished.then is FollowUp.FINISH
    assert change.fields["costs"] == 3 and change.fields["cpu"] == "2 cpu-h"
    assert finished.counts == ("job finished",)

    plain = follow_status(record("running"), {"status": "finished"}, needs_start=False, cancel_after=None,
                          results_work=False)
    assert plain.effects[0].new is S.FINISHED and plain.then is None

    failed = follow_status(record("running"), {"status": "error"}, needs_start=False, cancel_after=None,
                           results_work=True)
    assert isinstance(failed.effects[0], Update) and failed.then is FollowUp.JOB_ERROR


def test_a_job_running_too_long_is_canceled():
    rec = record("running", backend_status="running", running_start_time="2020-01-01T00:00:00Z")
    result = follow_status(rec, {"status": "running"}, needs_start=False, cancel_after=timedelta(hours=1),
                           results_work=True)
    assert result.then is FollowUp.CANCEL and result.counts == ("job cancel requested",)
    unchanged = follow_status(rec, {"status": "running"}, needs_start=False, cancel_after=None, results_work=True)
    assert unchanged.effects == () and unchanged.then is None


def test_failures_retry_while_attempts_are_left():
    info = ErrorInfo("RetryableBackendError", "boom", True, retry_after=None)
    change, count = after_failure(record("running", attempt=1), info, stage="run", backend_job_id="j-1",
                                  max_attempts=2, backoff=RetryPolicy(base=10))
    assert change.new is S.NOT_STARTED and count == "run retry" and "backend job j-1" in change.message
    assert change.fields["id"] is None and change.fields["next_attempt_at"] is not None
    change, count = after_failure(record("creating", attempt=2), info, stage="start", backend_job_id=None,
                                  max_attempts=2, backoff=RetryPolicy(base=10))
    assert change.new is S.START_FAILED and count == "start error"
    fatal = ErrorInfo("FatalBackendError", "bad graph", False)
    change, _ = after_failure(record("running", attempt=1), fatal, stage="run", backend_job_id=None,
                              max_attempts=5, backoff=RetryPolicy())
    assert change.new is S.ERROR and change.fields["error_class"] == "FatalBackendError"


def test_a_backend_is_paused_after_repeated_failures():
    health = BackendHealth(RetryPolicy(base=60))
    info = ErrorInfo("ConnectionError", "refused", True)
    assert not health.failed("b", info) and not health.failed("b", info)
    assert not health.paused("b")
    assert health.failed("b", info) and health.paused("b")
    health.ok("b")
    assert health.failures["b"] == 0
    assert not health.failed("c", ErrorInfo("JobLost", "gone", True, lost=True))  # lost jobs do not count


def test_download_resumes_wait_as_before():
    policy = resume_policy(0.5)
    assert [policy.delay(n) for n in (1, 2, 3, 7, 8)] == [0.5, 1.0, 2.0, 30.0, 30.0]
    assert policy.delay(1, retry_after=45) == 45 and policy.delay(1, retry_after=600) == 60


@pytest.fixture()
def run(tmp_path):
    db = create_job_db(tmp_path / "jobs.db", pd.DataFrame({"x": [1, 2, 3]}, index=["a", "b", "c"]))
    return _Run(db=db, start_job=lambda **kw: None, health=BackendHealth(RetryPolicy()))


def applier(run, followed):
    return ResultApplier(run, manager_id="m", max_attempts=2, backoff=RetryPolicy(base=1), follow=followed.append)


def test_results_are_applied_in_order_and_follow_ups_only_after_their_change(run):
    followed: list[TaskResult] = []
    run.inflight.update({"a", "b"})
    run.needs_start.add("c")
    results = [
        TaskResult("c", (Transition("c", S.CREATING),)),
        TaskResult("a", (Transition("a", S.CREATING),), counts=("x",), task_done=True,
                   then=FollowUp.START),
        TaskResult("b", (Transition("b", S.RUNNING),), then=FollowUp.CANCEL),  # refused: not_started
        TaskResult("a", (Update("a", {"error_message": "note"}),), task_done=True),
        TaskResult("c", (Failure("c", ErrorInfo("ConnectionError", "down", True), "start"),)),
    ]
    applier(run, followed).apply(results)
    assert run.db.get("a").status is S.CREATING and run.db.get("a").fields["error_message"] == "note"
    assert run.db.get("b").status is S.NOT_STARTED
    assert [r.job_key for r in followed] == ["a"]
    assert run.inflight == {"b"} and run.stats["x"] == 1
    assert run.stats["start retry"] == 1 and run.db.get("c").status is S.NOT_STARTED
    assert run.db.get("c").fields["error_class"] == "ConnectionError"
    assert "c" not in run.needs_start  # a failure ends the wait for a start


def test_results_not_applied_when_the_database_fails_are_kept(run, monkeypatch):
    results = [TaskResult("a", (Transition("a", S.CREATING),), task_done=True)]
    run.inflight.add("a")

    def broken(*args, **kwargs):
        raise JobDatabaseError("database is locked")

    monkeypatch.setattr(run.db, "transition_many", broken)
    with pytest.raises(JobDatabaseError):
        applier(run, []).apply(results)
    assert run.inflight == {"a"} and run.unapplied == results
    monkeypatch.undo()
    applier(run, []).apply(run.drain())
    assert run.db.get("a").status is S.CREATING and run.inflight == set() and run.unapplied == []


def test_default_backend_order_prefers_good_jobs_per_hour():
    from eoextract.jobs._scheduling import BackendLoad, default_backend_order

    loads = [BackendLoad("fresh", 2, 0, 0, 1.0), BackendLoad("slow", 2, 2, 0, 1.0),
             BackendLoad("fast", 2, 20, 1, 1.0), BackendLoad("failing", 2, 1, 9, 1.0),
             BackendLoad("fresh2", 2, 0, 0, 1.0)]
    assert default_backend_order(loads) == ["fast", "slow", "fresh", "fresh2", "failing"]
    assert BackendLoad("x", 0, 3, 1, 0.5).throughput_per_hour == 6
    assert BackendLoad("x", 0, 0, 0, 0.0).success_rate == 0.5


def test_a_users_order_decides_where_unpinned_jobs_go(local_backend, start_jobs, job_df, tmp_path):
    from eoextract.jobs import JobManager

    seen = []

    class Preferring(JobManager):
        def order_backends(self, loads):
            seen.append({load.name: load.finished for load in loads})
            return ["second"]  # the others follow in registration order

    manager = Preferring(poll_sleep=0.1, retry_backoff=0.05, root_dir=tmp_path / "out", download_results=False)
    manager.add_backend("first", local_backend.connect, parallel_jobs=1)
    manager.add_backend("second", local_backend.connect, parallel_jobs=1)
    df = job_df(3)
    df["backend_name"] = [None, None, "first"]  # the pinned row stays on its backend
    stats = manager.run_jobs(df, start_jobs(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 3}
    from eoextract.jobs.db import get_job_db

    table = get_job_db(tmp_path / "jobs.db").read()
    assert table.loc[table.index[2], "backend_name"] == "first"
    assert table.loc[table.index[0], "backend_name"] == "second"  # the first claim went to "second"
    assert seen and max(s["first"] + s["second"] for s in seen) >= 1  # finished jobs were counted
