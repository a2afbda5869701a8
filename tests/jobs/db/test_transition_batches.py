"""Batches of transitions (``transition_many``) on the SQL job database: each change is
checked on its own, a refused one leaves its job untouched, a job may change several times
in one batch, and a batch costs a few statements whatever its size.

Tests run on SQLite and on PostgreSQL (marked ``pg``).
"""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import event

from eoextract.errors import InvalidTransition, JobError
from eoextract.jobs.db import Transition, create_job_db
from eoextract.jobs.status import JobStatus

from history_faults import failing_history_writes  # noqa: I001 - a helper module beside the tests

S = JobStatus


@pytest.fixture()
def db(sql_location):
    database = create_job_db(sql_location, pd.DataFrame({"title": [f"t{i}" for i in range(6)]}))
    yield database
    database.close()


def _statuses(db) -> dict[str, JobStatus]:
    return {r.job_key: r.status for r in db.jobs()}


def test_stale_expectation_refuses_only_its_job(db):
    # another manager moved job 1 meanwhile
    db.transition("1", S.CREATING, manager_id="other")
    results = db.transition_many(
        [Transition(k, S.CREATING, expect=S.NOT_STARTED, fields={"create_tag": f"tag-{k}"})
         for k in ("0", "1", "2")], manager_id="me")
    assert [type(r).__name__ for r in results] == ["StatusChange", "InvalidTransition", "StatusChange"]
    assert "expected" in str(results[1])
    assert _statuses(db) == {"0": S.CREATING, "1": S.CREATING, "2": S.CREATING,
                             "3": S.NOT_STARTED, "4": S.NOT_STARTED, "5": S.NOT_STARTED}
    assert db.get("1").fields["create_tag"] is None  # the refused change wrote nothing
    assert [h.manager_id for h in db.history("1")] == [None, "other"]
    assert [h.new for h in db.history("0")] == [S.NOT_STARTED, S.CREATING]
    assert db.get("2").fields["create_tag"] == "tag-2"


def test_one_job_changing_several_times_in_a_batch(db):
    results = db.transition_many([
        Transition("0", S.CREATING, fields={"create_tag": "x"}),
        Transition("0", S.CREATED, fields={"id": "j-0"}),
        Transition("0", S.NOT_STARTED, message="forbidden: created cannot be not_started twice",
                   expect=S.CREATING),
        Transition("0", S.RUNNING, message="up"),
        Transition("0", S.SKIPPED),  # running -> skipped is not allowed
        Transition("0", S.FINISHED),
    ], manager_id="m")
    assert [isinstance(r, InvalidTransition) for r in results] == [False, False, True, False, True, False]
    rec = db.get("0")
    assert rec.status is S.FINISHED
    assert (rec.backend_job_id, rec.fields["create_tag"]) == ("j-0", "x")
    hist = db.history("0")
    assert [(h.old, h.new) for h in hist] == [
        (None, S.NOT_STARTED), (S.NOT_STARTED, S.CREATING), (S.CREATING, S.CREATED),
        (S.CREATED, S.RUNNING), (S.RUNNING, S.FINISHED)]
    # the backend job id set by the second change is carried by the later history rows
    assert [h.backend_job_id for h in hist[2:]] == ["j-0", "j-0", "j-0"]
    assert hist[3].message == "up"


def test_each_row_gets_only_its_own_fields(db):
    db.transition_many([Transition(k, S.CREATING) for k in "0123"], manager_id="m")
    db.update("2", claimed_by="m", error_message="old failure", error_class="Boom")
    db.transition_many([
        Transition("0", S.CREATED, fields={"id": "j-0"}),
        Transition("1", S.QUEUED, fields={"backend_status": "queued"}),
        Transition("2", S.FINISHED),  # drops the lease and the earlier error
        Transition("3", S.ERROR, fields={"error_class": "Bad", "error_message": "no"}),
    ], manager_id="m")
    recs = {r.job_key: r for r in db.jobs()}
    assert (recs["0"].backend_job_id, recs["0"].fields["backend_status"]) == ("j-0", None)
    assert (recs["1"].backend_job_id, recs["1"].fields["backend_status"]) == (None, "queued")
    assert recs["2"].fields["claimed_by"] is None and recs["2"].fields["error_class"] is None
    assert (recs["3"].fields["error_class"], recs["3"].fields["error_message"]) == ("Bad", "no")
    assert [r.status for r in recs.values()] == [S.CREATED, S.QUEUED, S.FINISHED, S.ERROR,
                                                 S.NOT_STARTED, S.NOT_STARTED]


def test_unknown_key_writes_nothing_of_the_batch(db):
    with pytest.raises(JobError):
        db.transition_many([Transition("0", S.CREATING), Transition("nope", S.CREATING)])
    assert db.get("0").status is S.NOT_STARTED and len(db.history("0")) == 1


def test_failing_history_write_rolls_back_the_batch(db):
    with failing_history_writes(db), pytest.raises(RuntimeError):
        db.transition_many([Transition(k, S.CREATING) for k in "012"])
    assert set(_statuses(db).values()) == {S.NOT_STARTED}
    assert all(len(db.history(k)) == 1 for k in "012")


def test_large_batch_runs_a_few_statements(sql_location):
    n = 1200  # more keys than one IN (...) clause takes
    db = create_job_db(sql_location, pd.DataFrame({"v": range(n)}))
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        results = db.transition_many(
            [Transition(str(i), S.CREATING, expect=S.NOT_STARTED,
                        fields={"create_tag": f"t{i}"} if i % 2 else {}) for i in range(n)])
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert not any(isinstance(r, InvalidTransition) for r in results)
    data = [s for s in statements if s.split()[0] in ("SELECT", "UPDATE", "INSERT")]
    # reads in 3 chunks, 2 updates (with and without create_tag), one history insert
    assert len(data) <= 8, data
    assert db.count_by_status() == {"creating": n}
    assert db.get("7").fields["create_tag"] == "t7" and db.get("8").fields["create_tag"] is None
    assert len(db.history(str(n - 1))) == 2
    db.close()


def test_write_lock_held_elsewhere_is_a_database_error(tmp_path):
    import sqlite3

    from eoextract.errors import JobDatabaseError
    from eoextract.jobs.db import SqlJobDatabase

    path = tmp_path / "jobs.db"
    create_job_db(path, pd.DataFrame({"v": range(3)})).close()
    db = SqlJobDatabase(path, busy_timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        with pytest.raises(JobDatabaseError, match="locked"):
            db.transition_many([Transition("0", S.CREATING)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    db.transition_many([Transition("0", S.CREATING)])  # the lock is gone: it goes through
    assert db.get("0").status is S.CREATING
    db.close()
