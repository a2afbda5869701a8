"""Leases shared by several managers: adoption of expired leases, the per-backend slot cap.
On SQLite, PostgreSQL (``pg``) and a CSV file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from eoextract.errors import InvalidTransition
from eoextract.jobs.db import create_job_db, get_job_db
from eoextract.jobs.db import ADOPTABLE, StatusChange, Transition
from eoextract.jobs.status import ACTIVE, JobStatus

S = JobStatus
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg), "csv"])
def location(request, tmp_path):
    if request.param == "pg":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / ("jobs.db" if request.param == "sqlite" else "jobs.csv"))


@pytest.fixture()
def db(location):
    database = create_job_db(location, pd.DataFrame({"n": range(10)}))
    yield database
    database.close()


def _walk(db, key, to, manager, lease_until, backend="b1"):
    """Claim-free path of one job to ``to`` as manager ``manager`` holding a lease."""
    path = [S.CREATING, S.CREATED, S.QUEUED, S.RUNNING, S.DOWNLOADING, S.POSTPROCESSING]
    for status in path[:path.index(to) + 1]:
        fields = dict(claimed_by=manager, lease_until=lease_until)
        if status is S.CREATING:
            fields["backend_name"] = backend
        db.transition(key, status, manager_id=manager, **fields)


def test_adoptable_statuses():
    assert ADOPTABLE == ACTIVE | {S.DOWNLOADING, S.POSTPROCESSING}


def test_adopt_expired_takes_over_expired_and_unleased_jobs_once(db):
    live, dead = NOW + timedelta(minutes=10), NOW - timedelta(seconds=1)
    _walk(db, "0", S.CREATING, "a", dead)
    _walk(db, "1", S.RUNNING, "a", dead)
    _walk(db, "2", S.POSTPROCESSING, "a", dead)
    _walk(db, "3", S.RUNNING, "b", live)          # lease still valid
    _walk(db, "4", S.QUEUED, "c", dead, backend="b2")
    _walk(db, "5", S.RUNNING, "a", None)          # no lease at all: an old single-manager run
    db.transition("6", S.CREATING, backend_name="b1")  # never leased
    db.transition("6", S.ERROR)                     # final: never adopted
    # a claimed new job ("7"): claim's business, never adopted
    db.claim(1, manager_id="a", now=NOW - timedelta(hours=1), lease_seconds=1)
    _walk(db, "8", S.RUNNING, "m", dead)          # already the adopter's own

    got = db.adopt_expired("m", now=NOW, lease_seconds=60, backend_names=["b1"])
    assert [r.job_key for r in got] == ["0", "1", "2", "5"]
    assert all(r.fields["claimed_by"] == "m" for r in got)
    assert all(r.fields["lease_until"] == NOW + timedelta(seconds=60) for r in got)
    assert [r.status for r in got] == [S.CREATING, S.RUNNING, S.POSTPROCESSING, S.RUNNING]
    # another manager finds the adopter's own expired job and the other backend's job only
    assert [r.job_key for r in db.adopt_expired("x", now=NOW, lease_seconds=60,
                                                backend_names=["b1"])] == ["8"]
    assert [r.job_key for r in db.adopt_expired("x", now=NOW, lease_seconds=60)] == ["4"]
    assert db.adopt_expired("x", now=NOW, lease_seconds=60) == []
    # the adopted jobs' history is untouched: adoption is no status change
    assert [h.new for h in db.history("1")][-1] is S.RUNNING
    # the first manager's renewal no longer covers them
    assert db.renew_leases("a", now=NOW, lease_seconds=60) == 1  # "7", still not_started and claimed
    assert db.get("1").fields["claimed_by"] == "m"
    # a limit, and leases that expire again
    later = NOW + timedelta(minutes=30)
    assert [r.job_key for r in db.adopt_expired("y", now=later, lease_seconds=60, limit=2)] == ["0", "1"]


def test_adopted_jobs_move_on_under_the_new_lease(db):
    _walk(db, "0", S.RUNNING, "a", NOW - timedelta(seconds=1))
    [rec] = db.adopt_expired("m", now=NOW, lease_seconds=60)
    assert db.renew_leases("m", now=NOW, lease_seconds=600) == 1
    assert db.get("0").fields["lease_until"] == NOW + timedelta(seconds=600)
    db.transition(rec.job_key, S.DOWNLOADING, manager_id="m", expect=S.RUNNING)
    assert db.get("0").fields["claimed_by"] == "m"  # kept while finishing
    db.transition(rec.job_key, S.FINISHED, manager_id="m")
    assert db.get("0").fields["claimed_by"] is None  # final: lease dropped
    assert db.adopt_expired("z", now=NOW + timedelta(days=1), lease_seconds=60) == []
    with pytest.raises(InvalidTransition):
        db.transition(rec.job_key, S.RUNNING, expect=S.RUNNING)


def test_release_makes_active_jobs_adoptable_at_once(db):
    _walk(db, "0", S.QUEUED, "a", NOW + timedelta(hours=1))
    assert db.adopt_expired("m", now=NOW, lease_seconds=60) == []
    db.release("a")
    assert [r.job_key for r in db.adopt_expired("m", now=NOW, lease_seconds=60)] == ["0"]


def test_claim_with_max_active_caps_slots_across_managers(db):
    db.register_backend("b1", None)
    db.register_backend("b2", None)
    first = db.claim(10, manager_id="a", now=NOW, lease_seconds=60, backend_name="b1", max_active=3)
    assert [r.job_key for r in first] == ["0", "1", "2"]
    assert all(r.backend_name == "b1" for r in first)
    # claimed but not yet started jobs hold their slots, for every manager
    assert db.claim(10, manager_id="b", now=NOW, backend_name="b1", max_active=3) == []
    assert db.claim(10, manager_id="a", now=NOW, backend_name="b1", max_active=3) == []
    db.transition("0", S.CREATING, backend_name="b1")
    db.transition("1", S.CREATING, backend_name="b1")
    db.transition("1", S.NOT_STARTED, next_attempt_at=NOW + timedelta(hours=1))  # retry: frees a slot
    got = db.claim(10, manager_id="b", now=NOW, backend_name="b1", max_active=3)
    assert [r.job_key for r in got] == ["3"]
    # other backends have their own slots; a row claimed for b1 is pinned to it
    got = db.claim(10, manager_id="b", now=NOW, backend_name="b2", max_active=2)
    assert [r.job_key for r in got] == ["4", "5"]
    # an expired claim gives its slot back
    later = NOW + timedelta(seconds=61)
    got = db.claim(10, manager_id="c", now=later, backend_name="b1", max_active=3)
    assert "2" in [r.job_key for r in got]
    # without max_active the caller does the counting (older behaviour)
    assert len(db.claim(2, manager_id="d", now=later, backend_name="b1")) == 2


def _creating(rec, backend="b1"):
    return Transition(rec.job_key, S.CREATING, expect=S.NOT_STARTED, message=f"attempt 1 on {backend}",
                      fields=dict(backend_name=backend, attempt=rec.attempt + 1, create_tag=f"tag-{rec.job_key}"))


def test_claim_and_transition_marks_the_claimed_jobs_at_once(db):
    db.register_backend("b1", None)
    db.update("1", next_attempt_at=NOW + timedelta(hours=1))  # not due: not claimed
    got = db.claim_and_transition(3, _creating, manager_id="a", now=NOW, lease_seconds=60,
                                  backend_name="b1", max_active=5)
    assert [rec.job_key for rec, _, _ in got] == ["0", "2", "3"]
    assert all(rec.status is S.NOT_STARTED and rec.fields["claimed_by"] == "a" for rec, _, _ in got)
    assert all(change == _creating(rec) for rec, change, _ in got)  # the change asked for
    assert all(isinstance(outcome, StatusChange) and outcome.new is S.CREATING and outcome.manager_id == "a"
               for _, _, outcome in got)
    for key in ("0", "2", "3"):
        rec = db.get(key)
        assert rec.status is S.CREATING and rec.fields["create_tag"] == f"tag-{key}"
        assert rec.fields["claimed_by"] == "a" and rec.attempt == 1
        assert [(c.old, c.new) for c in db.history(key)][-1] == (S.NOT_STARTED, S.CREATING)
    # the creating jobs hold their slots: two are left of five
    more = db.claim_and_transition(9, _creating, manager_id="b", now=NOW, backend_name="b1", max_active=5)
    assert [rec.job_key for rec, _, _ in more] == ["4", "5"]
    assert db.claim_and_transition(0, _creating, manager_id="b", now=NOW) == []


def test_claim_and_transition_returns_a_refused_change_and_leaves_the_job_claimed(db):
    def wrong(rec):
        return Transition(rec.job_key, S.CREATING, expect=S.QUEUED) if rec.job_key == "1" else _creating(rec)

    got = {rec.job_key: outcome for rec, _, outcome in
           db.claim_and_transition(2, wrong, manager_id="a", now=NOW, lease_seconds=60)}
    assert isinstance(got["1"], InvalidTransition) and isinstance(got["0"], StatusChange)
    assert db.get("1").status is S.NOT_STARTED and db.get("1").fields["claimed_by"] == "a"
    assert db.get("0").status is S.CREATING


def test_claim_and_transition_claims_nothing_when_a_change_cannot_be_made(location):
    db = create_job_db(location, pd.DataFrame({"n": range(3)}))

    def broken(rec):
        raise RuntimeError("no tag")

    with pytest.raises(RuntimeError, match="no tag"):
        db.claim_and_transition(2, broken, manager_id="a", now=NOW)
    if not location.endswith(".csv"):  # one transaction: the claim is undone with it
        assert all(rec.fields.get("claimed_by") is None for rec in db.jobs())
    assert db.count_by_status() == {"not_started": 3}
    db.close()


def test_any_with_status(db):
    assert db.any_with_status([S.NOT_STARTED])
    assert not db.any_with_status([S.RUNNING, "finished"])
    assert not db.any_with_status([])
    db.transition("3", S.CREATING)
    assert db.any_with_status(["creating"]) and not db.any_with_status(["queued"])


def test_claims_without_update_returning(tmp_path, monkeypatch):
    """Databases that cannot return updated rows (SQLite < 3.35) take a select and an update."""
    db = create_job_db(tmp_path / "old.db", pd.DataFrame({"n": range(6)}))
    monkeypatch.setattr(db.engine.dialect, "update_returning", False)
    db.register_backend("b1", None)
    db.update("0", next_attempt_at=NOW - timedelta(seconds=1))
    got = db.claim(3, manager_id="a", now=NOW, lease_seconds=60, backend_name="b1", max_active=4)
    assert [r.job_key for r in got] == ["1", "2", "3"]
    assert all(r.fields["claimed_by"] == "a" and r.backend_name == "b1" for r in got)
    assert [r.job_key for r in db.claim(9, manager_id="b", now=NOW, backend_name="b1",
                                        max_active=4)] == ["4"]
    _walk(db, "5", S.RUNNING, "dead", NOW - timedelta(seconds=1))
    [adopted] = db.adopt_expired("m", now=NOW, lease_seconds=60)
    assert adopted.job_key == "5" and adopted.fields["claimed_by"] == "m"
    db.close()


def test_a_job_that_finishes_drops_the_error_of_an_earlier_attempt(db):
    _walk(db, "0", S.RUNNING, "m1", NOW + timedelta(minutes=5))
    db.transition("0", S.NOT_STARTED, message="run: JobFailed: out of memory; retry in 1 s",
                  error_class="JobFailed", error_message="out of memory", id=None)
    _walk(db, "0", S.RUNNING, "m1", NOW + timedelta(minutes=5))
    assert db.get("0").fields["error_message"] == "out of memory"  # while retrying, it shows
    db.transition("0", S.FINISHED)
    fields = db.get("0").fields
    assert fields.get("error_class") is None and fields.get("error_message") is None
    assert any(c.message and "out of memory" in c.message for c in db.history("0"))
    # a finish that says why keeps it
    _walk(db, "1", S.RUNNING, "m1", NOW + timedelta(minutes=5))
    db.transition("1", S.FINISHED, error_class="QualityWarning", error_message="2 % nodata")
    assert db.get("1").fields["error_message"] == "2 % nodata"
