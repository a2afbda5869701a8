"""What only PostgreSQL has: URL forms, column types, unreachable and restarted servers."""

from __future__ import annotations

import time

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from eoextract.errors import JobDatabaseError
from eoextract.jobs.db import SqlJobDatabase, create_job_db, get_job_db
from eoextract.jobs.status import JobStatus

pytestmark = pytest.mark.pg


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def test_both_url_forms_open_the_same_database(pg_url):
    created = create_job_db(_plain(pg_url), pd.DataFrame({"n": [1, 2]}, index=["a", "b"]))
    assert isinstance(created, SqlJobDatabase) and created.engine.dialect.name == "postgresql"
    assert created.engine.dialect.driver == "psycopg"
    created.transition("a", JobStatus.CREATING)
    created.close()
    for url in (pg_url, _plain(pg_url)):
        db = get_job_db(url)
        assert db.exists()
        assert db.count_by_status() == {"creating": 1, "not_started": 1}
        db.close()


def test_tables_use_jsonb_and_timestamptz(pg_url):
    db = create_job_db(pg_url, pd.DataFrame({"n": [1]}))
    columns = {c["name"]: c["type"] for c in sa.inspect(db.engine).get_columns("jobs")}
    assert isinstance(columns["data"], JSONB)
    assert isinstance(columns["lease_until"], sa.DateTime) and columns["lease_until"].timezone
    meta = {c["name"]: c["type"] for c in sa.inspect(db.engine).get_columns("meta")}
    assert isinstance(meta["value"], JSONB)
    with db.engine.connect() as conn:  # JSON operators work on the user columns
        assert conn.exec_driver_sql("SELECT data->>'n' FROM jobs").scalar() == "1"
    db.close()


def _check_short(message: str) -> None:
    assert "sqlalche.me" not in message and "[SQL" not in message and "Traceback" not in message
    assert len(message) < 700


@pytest.mark.parametrize("url", [
    "postgresql://postgres@/postgres?host=/nonexistent-eoextract-dir",
    "postgresql://postgres@127.0.0.1:1/postgres",
])
def test_unreachable_server_is_a_short_job_database_error(url):
    start = time.monotonic()
    with pytest.raises(JobDatabaseError, match="unreachable") as info:
        get_job_db(url)
    assert time.monotonic() - start < 15
    _check_short(str(info.value))
    assert "***" in str(info.value) or "postgres@" in str(info.value)


def test_password_is_not_shown_in_errors():
    with pytest.raises(JobDatabaseError) as info:
        get_job_db("postgresql://someone:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value)


def test_killed_connections_are_replaced(pg_url, pg_server):
    db = create_job_db(pg_url, pd.DataFrame({"n": range(3)}))
    assert db.count_by_status() == {"not_started": 3}
    name = pg_url.split("@/", 1)[1].split("?", 1)[0]
    with psycopg.connect(_plain(pg_server), autocommit=True) as admin:
        killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = %s", (name,)).fetchone()[0]
    assert killed >= 1
    assert db.count_by_status() == {"not_started": 3}  # the pool checks connections first
    db.transition("0", JobStatus.CREATING)
    db.close()


def test_database_gone_while_running_is_a_short_job_database_error(pg_url, pg_server):
    db = create_job_db(pg_url, pd.DataFrame({"n": range(3)}))
    name = pg_url.split("@/", 1)[1].split("?", 1)[0]
    with psycopg.connect(_plain(pg_server), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    for call in (db.count_by_status, lambda: db.transition("0", JobStatus.CREATING),
                 lambda: db.claim(1, manager_id="m", now=pd.Timestamp.now(tz="UTC"))):
        with pytest.raises(JobDatabaseError, match="unreachable") as info:
            call()
        _check_short(str(info.value))
    db.close()


def test_large_initial_insert_leaves_fresh_statistics(pg_url):
    db = create_job_db(pg_url, pd.DataFrame({"n": range(10_000)}))
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT reltuples FROM pg_class WHERE relname = 'jobs'").scalar() == 10_000
    assert len(db.claim(100, manager_id="m", now=pd.Timestamp.now(tz="UTC"))) == 100
    db.close()
