"""Schema versions, migrations and index use of the SQL job database (SQLite and ``pg``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from eoextract.errors import JobDatabaseError, SchemaVersionError
from eoextract.jobs.db import SqlJobDatabase, create_job_db, get_job_db
from eoextract.jobs.db import _migrations as migrations
from eoextract.jobs.db._models import SCHEMA_VERSION
from eoextract.jobs.db._sql_rows import META
from eoextract.jobs.status import JobStatus

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def _indexes(engine: sa.Engine) -> set[str]:
    return {ix["name"] for ix in sa.inspect(engine).get_indexes("jobs")}


def _meta(engine: sa.Engine, key: str):
    with engine.connect() as conn:
        return conn.scalar(sa.select(META.c.value).where(META.c.key == key))


def _make_v1(engine: sa.Engine) -> None:
    """Turn a current database back into the layout of schema version 1."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_jobs_status_backend")
        conn.exec_driver_sql("CREATE INDEX ix_jobs_status ON jobs (status)")
        conn.exec_driver_sql("CREATE INDEX ix_jobs_backend_status ON jobs (backend_name, status)")
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN usage")
        conn.execute(sa.update(META).where(META.c.key == "schema_version").values(value=1))


def test_migration_list_matches_schema_version():
    assert len(migrations.MIGRATIONS) + 1 == SCHEMA_VERSION


def test_older_schema_is_migrated_on_open(sql_location):
    db = create_job_db(sql_location, pd.DataFrame({"n": range(3)}))
    db.transition("0", JobStatus.CREATING, backend_name="b")
    engine = db.engine
    _make_v1(engine)
    db.close()
    assert "ix_jobs_status" in _indexes(engine)

    again = get_job_db(sql_location)
    assert _meta(again.engine, "schema_version") == SCHEMA_VERSION
    assert _meta(again.engine, "migrated_at")
    names = _indexes(again.engine)
    assert "ix_jobs_status_backend" in names
    assert not names & {"ix_jobs_status", "ix_jobs_backend_status"}
    assert "usage" in {c["name"] for c in sa.inspect(again.engine).get_columns("jobs")}
    # data and history untouched
    assert again.active_counts() == {"b": 1}
    assert [h.new for h in again.history("0")] == [JobStatus.NOT_STARTED, JobStatus.CREATING]
    again.close()
    # opening a current database changes nothing
    once_more = SqlJobDatabase(sql_location)
    assert _meta(once_more.engine, "migrated_at") == _meta(again.engine, "migrated_at")
    once_more.close()


def test_failed_migration_leaves_the_database_as_it_was(sql_location, monkeypatch):
    db = create_job_db(sql_location, pd.DataFrame({"n": range(3)}))
    engine = db.engine
    _make_v1(engine)
    db.close()

    def broken(conn):
        conn.exec_driver_sql("DROP INDEX ix_jobs_status")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(migrations, "MIGRATIONS", [broken])
    with pytest.raises(RuntimeError, match="migration bug"):
        SqlJobDatabase(sql_location)
    assert "ix_jobs_status" in _indexes(engine)
    assert _meta(engine, "schema_version") == 1
    monkeypatch.undo()
    migrated = SqlJobDatabase(sql_location)
    assert _meta(migrated.engine, "schema_version") == SCHEMA_VERSION
    migrated.close()


def test_newer_or_unknown_schema_is_refused(sql_location):
    db = create_job_db(sql_location, pd.DataFrame({"n": [1]}))
    engine = db.engine
    with engine.begin() as conn:
        conn.execute(sa.update(META).where(META.c.key == "schema_version")
                     .values(value=SCHEMA_VERSION + 1))
    with pytest.raises(SchemaVersionError, match="upgrade eoextract"):
        SqlJobDatabase(sql_location)
    with engine.begin() as conn:
        conn.execute(sa.update(META).where(META.c.key == "schema_version").values(value=0))
    with pytest.raises(JobDatabaseError, match="unknown schema version"):
        SqlJobDatabase(sql_location)
    engine.dispose()


# -- index use -----------------------------------------------------------------------------------

def _captured_queries(db: SqlJobDatabase, action) -> list[tuple[str, object]]:
    """The SELECTs and UPDATEs on our tables that ``action`` runs (reads by key list excepted)."""
    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        text = " ".join(statement.split())
        if re.search(r"pk IN \((%\(|\?)", text):
            return  # claimed rows read back by primary key
        if (text.startswith("SELECT") and ("FROM jobs" in text or "FROM job_status_changes" in text)
                or text.startswith("UPDATE jobs")):
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        action()
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    return seen


def _plan(db: SqlJobDatabase, statement: str, parameters: object) -> str:
    with db.engine.connect() as conn:
        if db.engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # tiny table: ask for the index path
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
        conn.rollback()
    return "\n".join(str(r[-1]) for r in rows)


def test_claims_counts_and_history_use_indexes_without_sorting(sql_location):
    db = create_job_db(sql_location, pd.DataFrame({"n": range(20)}))
    db.register_backend("b", None)
    db.transition("0", JobStatus.CREATING, backend_name="b", claimed_by="x")
    db.update("1", next_attempt_at=NOW)
    actions = {
        "claim": lambda: db.claim(5, manager_id="m", now=NOW, backend_name="b", max_active=10),
        "adopt": lambda: db.adopt_expired("m", now=NOW, lease_seconds=60),
        "count_by_status": lambda: db.count_by_status(["not_started", "running"]),
        "any_with_status": lambda: db.any_with_status(["running", "queued"]),
        "active_counts": db.active_counts,
        "history": lambda: db.history("3"),
        "renew": lambda: db.renew_leases("m", now=NOW, lease_seconds=60),
    }
    for name, action in actions.items():
        queries = _captured_queries(db, action)
        assert queries, name
        for statement, parameters in queries:
            plan = _plan(db, statement, parameters)
            if db.engine.dialect.name == "postgresql":
                assert not re.search(r"Seq Scan on (jobs|job_status_changes)\b", plan), (name, plan)
                if name == "claim" and "ORDER BY" in statement:
                    assert "Sort" not in plan and "Index Scan using ix_jobs_due" in plan, (name, plan)
            else:
                assert all("USING" in line for line in plan.splitlines()
                           if re.search(r"SCAN (jobs|job_status_changes)\b", line)), (name, plan)
                if name == "claim":  # adoption sorts the few active rows; claims never sort
                    assert "TEMP B-TREE FOR ORDER BY" not in plan, (name, plan)
                    if "ORDER BY" in statement:
                        assert "INDEX ix_jobs_due" in plan, (name, plan)
    db.close()
