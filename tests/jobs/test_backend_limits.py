"""Backends that allow fewer running jobs than ``parallel_jobs``: a refused start (the
production profile's ``ConcurrentJobLimit``) lowers the backend's slots to what it runs,
the created job waits for room, and one more slot is tried after a quiet period."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from eoextract.backend import BackendProfile, LocalBackend
from eoextract.jobs import JobManager, _scheduling
from eoextract.jobs.db import get_job_db

from conftest import make_start_job  # noqa: I001 - the jobs tests' helpers

SLOW = {"eoextract_fault": "slow", "eoextract_fault_delay_s": 0.3}


def _jobs(n: int) -> pd.DataFrame:
    prefix = uuid.uuid4().hex[:6]
    return pd.DataFrame({"title": [f"lim-{prefix}-{i}" for i in range(n)]})


def _limited(running: int) -> BackendProfile:
    """The production profile allowing ``running`` jobs and no queued places (as CDSE)."""
    return BackendProfile.named("cdse", max_running_jobs=running, max_queued_jobs=0)


def _manager(tmp_path, **backends: tuple[LocalBackend, int]) -> JobManager:
    """A fast-polling manager without downloads, with ``name=(backend, parallel_jobs)``."""
    manager = JobManager(poll_sleep=0.1, retry_backoff=0.05, root_dir=tmp_path / "out", download_results=False)
    for name, (backend, parallel_jobs) in backends.items():
        manager.add_backend(name, backend.connect, parallel_jobs=parallel_jobs)
    return manager


def _run(manager: JobManager, rows: pd.DataFrame, db_path) -> dict:
    """Run ``rows`` as slow jobs (0.3 s each on the backend)."""
    return manager.run_jobs(rows, make_start_job(lambda row: SLOW, instant=False), job_db=db_path)


def _refusals(db_path) -> int:
    db = get_job_db(db_path)
    try:
        return sum("ConcurrentJobLimit" in (h.message or "") for key in db.read().index for h in db.history(key))
    finally:
        db.close()


def test_two_backends_below_parallel_jobs_finish_without_failures(tmp_path):
    with LocalBackend(profile=_limited(2), workers=2) as a, LocalBackend(profile=_limited(3), workers=3) as b:
        stats = _run(_manager(tmp_path, a=(a, 6), b=(b, 6)), _jobs(16), tmp_path / "jobs.db")
        created = len(a.connect().list_jobs(limit=100)) + len(b.connect().list_jobs(limit=100))
    assert stats["status_counts"] == {"finished": 16}
    assert stats["start_job call"] == 16 and created == 16  # no job failed, none created twice
    # the first burst is refused once per job over each limit; after that the learned limit holds
    refused = stats.get("job start refused (backend full)", 0)
    assert 1 <= refused <= (6 - 2) + (6 - 3)
    assert _refusals(tmp_path / "jobs.db") == refused


def test_the_learned_limit_is_probed_upward(tmp_path, monkeypatch):
    monkeypatch.setattr(_scheduling, "CAPACITY_PROBE_S", 0.5)
    with LocalBackend(profile=_limited(2), workers=2) as backend:
        stats = _run(_manager(tmp_path, a=(backend, 4)), _jobs(12), tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 12} and stats["start_job call"] == 12
    # probes went over the real limit again and were refused, each a single refusal
    assert stats.get("job start refused (backend full)", 0) >= 3


def test_slots_follow_refusals_and_quiet_periods():
    clock = _scheduling.RunClock()
    health = _scheduling.BackendHealth(_scheduling.RetryPolicy(), clock)
    assert health.slots("a", 5) == 5
    health.full("a", started=2, racing=["j3"])
    assert health.slots("a", 5) == 2
    health.started("a", 3, "j3")  # a start that raced the refusal: 3 do run
    assert health.slots("a", 5) == 3
    # a later start counted 4: a job that ended on the backend may still be counted
    health.started("a", 4, "j4")
    health.started("a", 4, "j3")
    assert health.slots("a", 5) == 3
    clock._slept = clock.now() + _scheduling.CAPACITY_PROBE_S + 1
    assert health.slots("a", 5) == 4
    clock._slept += _scheduling.CAPACITY_PROBE_S + 1
    assert health.slots("a", 5) == 5 and "a" not in health.capacity
    health.full("a", started=0)
    assert health.slots("a", 5) == 1


@pytest.mark.parametrize("code", ["ConcurrentJobLimit", "TooManyRequests"])
def test_limit_answers_are_classified_backend_full(code):
    from openeo.rest import OpenEoApiError

    from eoextract.jobs._classify import classify, is_backend_full

    info = classify(OpenEoApiError(http_status_code=400, code=code, message="limit reached"))
    assert info.retryable and is_backend_full(info)
    assert not is_backend_full(classify(OpenEoApiError(http_status_code=400, code="ProcessGraphInvalid",
                                                       message="x")))


@pytest.mark.parametrize("suffix", [".db", ".csv"])
def test_the_learned_limit_is_kept_for_the_next_run_and_shown(tmp_path, suffix):
    from typer.testing import CliRunner

    from eoextract.cli import app

    db_path = tmp_path / f"jobs{suffix}"
    with LocalBackend(profile=_limited(2), workers=2) as backend:
        _run(_manager(tmp_path, a=(backend, 4)), _jobs(6), db_path)
        assert get_job_db(db_path).backend_state()["capacity"] == {"a": 2}
        # a second run with new rows starts at the learned limit: no refusal at all
        new_rows = _jobs(4).set_axis([f"new-{i}" for i in range(4)])  # keys the first run did not have
        stats = _run(_manager(tmp_path, a=(backend, 4)), new_rows, db_path)
    assert stats["status_counts"] == {"finished": 10}
    assert stats.get("job start refused (backend full)", 0) == 0
    shown = CliRunner().invoke(app, ["status", str(db_path)])
    assert shown.exit_code == 0 and "runs at most 2 job(s)" in shown.output
    page = tmp_path / f"report{suffix}.html"
    assert CliRunner().invoke(app, ["report", str(db_path), "-o", str(page)]).exit_code == 0
    assert "learned job limits" in page.read_text() and "a: 2" in page.read_text()


def test_queueing_limit_bounds_the_jobs_waiting_on_a_backend(local_backend, tmp_path):
    """openeo's queueing_limit: at most that many jobs created or queued at once."""
    from eoextract.jobs import _scheduling as scheduling

    seen: list[int] = []
    claim = scheduling.claim_launches

    def watching(db, backends, health, **kw):
        seen.append(len(db.jobs(scheduling._WAITING, backend_name="local")))
        yield from claim(db, backends, health, **kw)

    import eoextract.jobs._manager as manager_module

    manager = _manager(tmp_path)
    manager.add_backend("local", local_backend.connect, parallel_jobs=6, queueing_limit=2)
    original = manager_module.claim_launches
    manager_module.claim_launches = watching
    try:
        stats = _run(manager, _jobs(8), tmp_path / "jobs.db")
    finally:
        manager_module.claim_launches = original
    assert stats["status_counts"] == {"finished": 8}
    assert seen and max(seen) <= 2


def test_created_jobs_are_kept_ready_on_a_backend_at_its_limit():
    health = _scheduling.BackendHealth(_scheduling.RetryPolicy())
    assert health.held("a", 8) == 8  # no limit learned: parallel_jobs, nothing kept ready
    health.full("a", started=2)
    assert health.slots("a", 8) == 2 and health.held("a", 8) == 3
    health.full("b", started=5)
    assert health.held("b", 8) == 7
    health.full("c", started=4)
    assert health.held("c", 4) == 4  # never beyond parallel_jobs


def test_a_run_at_a_learned_limit_starts_jobs_kept_ready_without_refusals(tmp_path):
    db_path = tmp_path / "jobs.db"
    with LocalBackend(profile=_limited(2), workers=2) as backend:
        _run(_manager(tmp_path, a=(backend, 6)), _jobs(3), db_path)
        assert get_job_db(db_path).backend_state()["capacity"] == {"a": 2}  # learned
        new_rows = _jobs(8).set_axis([f"new-{i}" for i in range(8)])
        stats = _run(_manager(tmp_path, a=(backend, 6)), new_rows, db_path)
        created = len(backend.connect().list_jobs(limit=100))
    assert stats["status_counts"] == {"finished": 11} and created == 11
    assert stats.get("job start refused (backend full)", 0) == 0
    db = get_job_db(db_path)
    try:
        messages = [h.message or "" for key in db.read().index for h in db.history(key)]
    finally:
        db.close()
    assert any("ready to start" in m for m in messages)  # created ahead, started once a place freed
    assert stats["job start"] == 8


def test_polls_come_sooner_while_started_jobs_wait_for_a_place():
    from datetime import timedelta

    from eoextract._util.utc import utc_now

    health = _scheduling.BackendHealth(_scheduling.RetryPolicy())
    assert health.poll_interval(60, jobs_wait=True) == 60  # no run time known yet
    health.job_ended("a", True, utc_now() - timedelta(seconds=600))
    assert health.typical_run_s == pytest.approx(600, abs=1)
    assert health.poll_interval(60, jobs_wait=False) == 60
    assert health.poll_interval(60, jobs_wait=True) == pytest.approx(18, abs=0.1)  # 3 % of 10 min
    health.job_ended("a", True, utc_now() - timedelta(seconds=10))
    assert health.poll_interval(60, jobs_wait=True) == 15  # never below a quarter of poll_sleep
