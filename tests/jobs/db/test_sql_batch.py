"""Rows written through the driver's executemany (:class:`BatchStatement`) are stored exactly
as SQLAlchemy's own ``execute`` stores them, on SQLite and PostgreSQL (marked ``pg``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from eoextract.jobs.db import create_job_db
from eoextract.jobs.db._connection import create_engine, to_sqlalchemy_url
from eoextract.jobs.db._sql_batch import BatchStatement
from eoextract.jobs.db._sql_rows import _HISTORY_KEYS, _INSERT_CHANGE, _update_statement, prefixed

_NAMES = ("attempt", "backend_status", "costs", "error_message", "id", "lease_until", "running_start_time",
          "start_time", "status", "updated_at")


@pytest.fixture()
def engine(sql_location):
    create_job_db(sql_location, pd.DataFrame({"title": ["a", "b", "c", "d"]})).close()
    engine = create_engine(to_sqlalchemy_url(sql_location))
    yield engine
    engine.dispose()


def _values(i: int) -> dict:
    aware = datetime(2026, 3, 4, 5, 6, 7, 890 * i, tzinfo=timezone(timedelta(hours=2)))
    return {"attempt": i + 1, "costs": 0.5 * i, "lease_until": datetime(2026, 3, 4, 5, 6, 7 + i),  # naive: UTC
            "backend_status": "queued", "error_message": None if i % 2 else "it's 100% failed",
            "id": f"j-{i}", "running_start_time": None, "start_time": aware,
            "status": "queued", "updated_at": datetime(2026, 3, 4, 3, 0, 0, tzinfo=UTC)}


def _raw(conn: sa.Connection, sql: str) -> list[tuple]:
    return [tuple(row) for row in conn.exec_driver_sql(sql)]


def test_updates_and_history_rows_match_sqlalchemys(engine):
    update = _update_statement("pk", _NAMES)
    with engine.begin() as conn:
        conn.execute(update, [{"_pk": pk, **prefixed(_values(pk - 1))} for pk in (1, 2)])
        BatchStatement.of(update, conn.dialect).execute_many(
            conn, [{"_pk": pk, **prefixed(_values(pk - 3))} for pk in (3, 4)])
        stamp = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
        history = [dict(zip(_HISTORY_KEYS, (pk, "creating", "queued", stamp, "m", f"{pk}'s message", None)))
                   for pk in (1, 2, 3, 4)]
        conn.execute(_INSERT_CHANGE, history[:2])
        BatchStatement.of(_INSERT_CHANGE, conn.dialect, _HISTORY_KEYS).execute_many(conn, history[2:])
    with engine.connect() as conn:
        jobs = _raw(conn, f"SELECT {', '.join(_NAMES)} FROM jobs ORDER BY pk")
        changes = _raw(conn, "SELECT old, new, at, manager_id, message, backend_job_id "
                             "FROM job_status_changes WHERE manager_id = 'm' ORDER BY job_pk")
    assert jobs[2:] == jobs[:2]  # the same values, stored alike
    assert jobs[0][_NAMES.index("id")] == "j-0" and jobs[0][_NAMES.index("error_message")] == "it's 100% failed"
    assert [c[:4] for c in changes[2:]] == [c[:4] for c in changes[:2]] and len(changes) == 4
    assert changes[3][4] == "4's message"


def test_no_rows_run_nothing(engine):
    with engine.begin() as conn:
        BatchStatement.of(_INSERT_CHANGE, conn.dialect, _HISTORY_KEYS).execute_many(conn, [])
        assert conn.scalar(sa.text("SELECT count(*) FROM job_status_changes WHERE manager_id = 'm'")) == 0


@settings(max_examples=300, deadline=None)
@given(when=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7, minutes=-30))]))
       | st.datetimes())
def test_utc_datetimes_are_bound_for_sqlite_as_the_general_path_binds_them(when):
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.types import TypeDecorator

    from eoextract.jobs.db._sql_types import UTCDateTime

    dialect = sqlite.dialect()
    impl = UTCDateTime().dialect_impl(dialect)
    quick = impl.bind_processor(dialect)
    general = TypeDecorator.bind_processor(impl, dialect)
    assert quick(when) == general(when)
    assert quick(None) is None
