"""Schema versions, migrations and index use of the SQL job database (SQLite and ``pg``).

The index checks run every query an action sends through ``EXPLAIN`` and fail on a table
scan of ``jobs`` or ``job_status_changes``; they fail when an index is dropped.
"""

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
from eoextract.jobs.db._models import SCHEMA_VERSION, Job, JobStatusChange
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


_V4_INDEXES = {"ix_jobs_status_error": "jobs", "ix_jobs_costs": "jobs", "ix_jobs_published": "jobs",
               "ix_job_status_changes_new_at": "job_status_changes",
               "ix_job_status_changes_new_old": "job_status_changes"}


def _index_sql(engine: sa.Engine) -> dict[str, str]:
    """Index name → its definition (SQL), of both tables."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            rows = conn.exec_driver_sql("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN "
                                        "('jobs', 'job_status_changes')").all()
        else:
            rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                        "AND sql IS NOT NULL").all()
    return {name: " ".join(str(sql).split()) for name, sql in rows}


def test_schema_3_gets_the_summary_indexes(sql_location):
    db = create_job_db(sql_location, pd.DataFrame({"n": range(3)}))
    db.transition("0", JobStatus.CREATING, backend_name="b")
    engine = db.engine
    with engine.begin() as conn:
        for name in _V4_INDEXES:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        conn.execute(sa.update(META).where(META.c.key == "schema_version").values(value=3))
    db.close()
    assert not _index_sql(engine).keys() & set(_V4_INDEXES)

    again = get_job_db(sql_location)
    assert _meta(again.engine, "schema_version") == SCHEMA_VERSION == 5
    assert set(_V4_INDEXES) - {"ix_jobs_costs"} <= _index_sql(again.engine).keys()  # gone in version 5
    assert again.count_by_status() == {"creating": 1, "not_started": 2}
    assert [h.new for h in again.history("0")] == [JobStatus.NOT_STARTED, JobStatus.CREATING]
    again.close()


def test_schema_4_gets_the_leaner_indexes_of_version_5(sql_location):
    db = create_job_db(sql_location, pd.DataFrame({"n": range(5)}))
    _ran(db)
    engine = db.engine
    with engine.begin() as conn:  # the indexes of version 4
        for name in ("ix_jobs_status_backend", "ix_jobs_status_error", "ix_job_status_changes_new_old"):
            conn.exec_driver_sql(f"DROP INDEX {name}")
        conn.exec_driver_sql("CREATE INDEX ix_jobs_status_backend ON jobs (status, backend_name, lease_until)")
        conn.exec_driver_sql("CREATE INDEX ix_jobs_status_error ON jobs (status, error_class, attempt)")
        conn.exec_driver_sql("CREATE INDEX ix_jobs_costs ON jobs (status, backend_name, costs)")
        conn.exec_driver_sql("CREATE INDEX ix_job_status_changes_new_old ON job_status_changes (new, old)")
        conn.execute(sa.update(META).where(META.c.key == "schema_version").values(value=4))
    db.close()

    again = get_job_db(sql_location)
    assert _meta(again.engine, "schema_version") == SCHEMA_VERSION == 5
    indexes = _index_sql(again.engine)
    assert "ix_jobs_costs" not in indexes
    assert "costs" in indexes["ix_jobs_status_backend"]
    assert "WHERE" in indexes["ix_jobs_status_error"].upper()
    assert "WHERE" in indexes["ix_job_status_changes_new_old"].upper()
    # a migrated database has the indexes of a new one
    assert {ix.name for table in (Job.__table__, JobStatusChange.__table__) for ix in table.indexes} \
        <= set(indexes)
    # the figures read from the new indexes are those of the rows
    from eoextract.report._sql_summary import sql_figures

    figures = sql_figures(again.engine)
    assert figures.retries_and_requeues == 1
    assert figures.error_classes["JobFailed"][:2] == [1, 1]
    assert again.cost_totals().spent == 1.5
    again.close()


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


def _unindexed(db: SqlJobDatabase, name: str, action) -> list[str]:
    """The plans of the queries of ``action`` that read a table without an index."""
    queries = _captured_queries(db, action)
    assert queries, name
    bad = []
    for statement, parameters in queries:
        plan = _plan(db, statement, parameters)
        if db.engine.dialect.name == "postgresql":
            scan = re.search(r"Seq Scan on (jobs|job_status_changes)\b", plan)
        else:
            scan = any("USING" not in line for line in plan.splitlines()
                       if re.search(r"SCAN (jobs|job_status_changes)\b", line))
        if scan:
            bad.append(f"{name}: {' '.join(statement.split())[:200]}\n{plan}")
    return bad


def _ran(db: SqlJobDatabase) -> None:
    """A few jobs through their life, a retry and a failure, so every summary query has rows."""
    db.register_backend("b", None)
    for key in ("2", "3", "4"):
        db.transition(key, JobStatus.CREATING, backend_name="b", attempt=1)
        db.transition(key, JobStatus.RUNNING, id=f"j{key}")
    db.transition("2", JobStatus.FINISHED, costs=1.5, input_published_at=NOW,
                  output_published_at=datetime(2025, 1, 2, tzinfo=UTC))
    db.transition("3", JobStatus.ERROR, error_class="JobFailed", error_message="boom")
    db.transition("4", JobStatus.NOT_STARTED, error_class="JobFailed", error_message="again")


def _summary_actions(db: SqlJobDatabase) -> dict:
    from eoextract.report._sql_summary import sample_keys, sql_figures

    return {
        "summary": lambda: sql_figures(db.engine),
        "report sample": lambda: sample_keys(db.engine, 5, 2),
        "cost_totals": db.cost_totals,
        "jobs --status error": lambda: db.read_where(["error"], limit=10),
        "unpin": lambda: db.unpin_unknown_backends(["b"]),
    }


def _summary_plans(db: SqlJobDatabase) -> str:
    return "\n".join(_plan(db, statement, parameters) for statement, parameters
                     in _captured_queries(db, _summary_actions(db)["summary"]))


#: Indexes the summary's queries read on SQLite (each covers its query; the counts per
#: status and backend read ix_jobs_status_backend).
_SUMMARY_INDEXES = ("ix_jobs_status_error", "ix_jobs_published",
                    "ix_job_status_changes_new_at", "ix_job_status_changes_new_old")


def test_summaries_listings_and_unpinning_use_indexes(sql_location):
    db = create_job_db(sql_location, pd.DataFrame({"n": range(20)}))
    _ran(db)
    bad = [line for name, action in _summary_actions(db).items()
           for line in _unindexed(db, name, action)]
    assert not bad, "\n\n".join(bad)
    if db.engine.dialect.name == "sqlite":
        plans = _summary_plans(db)
        assert [ix for ix in _SUMMARY_INDEXES if ix not in plans] == [], plans
    db.close()


def test_a_dropped_summary_index_is_noticed(tmp_path):
    db = create_job_db(tmp_path / "jobs.db", pd.DataFrame({"n": range(20)}))
    _ran(db)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_job_status_changes_new_at")
        conn.exec_driver_sql("DROP INDEX ix_jobs_published")
    plans = _summary_plans(db)
    assert [ix for ix in _SUMMARY_INDEXES if ix not in plans] == [
        "ix_jobs_published", "ix_job_status_changes_new_at"]
    # the latency of publication now reads the table
    assert _unindexed(db, "summary", _summary_actions(db)["summary"])
    db.close()


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
