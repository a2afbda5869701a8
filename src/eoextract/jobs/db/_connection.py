"""Database URLs and SQLAlchemy engines of the SQL job database.

Paths become SQLite URLs, ``postgresql://`` URLs use the psycopg 3 driver, and SQLite
connections get WAL, ``synchronous=NORMAL``, a busy timeout and our own ``BEGIN`` (so
writing transactions can start with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import StaticPool

from eoextract.errors import JobDatabaseError

_log = logging.getLogger(__name__)


_SQLITE_SUFFIXES = {".db", ".sqlite", ".sqlite3"}
#: Execution option naming the ``BEGIN`` mode of a SQLite transaction (e.g. ``IMMEDIATE``).
BEGIN_OPTION = "eoextract_begin"
#: Seconds to wait for a PostgreSQL server to accept a connection.
PG_CONNECT_TIMEOUT = 10


def is_sql_location(path_or_url: str | Path) -> bool:
    """Whether a path or URL names a SQL job database (by suffix or URL scheme)."""
    text = str(path_or_url)
    if "://" in text:
        return text.split("://", 1)[0].split("+", 1)[0].lower() in {"sqlite", "postgresql", "postgres"}
    return Path(text).suffix.lower() in _SQLITE_SUFFIXES


def to_sqlalchemy_url(path_or_url: str | Path) -> URL:
    """The SQLAlchemy URL of a SQLite path or a database URL.

    A path becomes ``sqlite:///path``; ``postgresql://`` and ``postgres://`` URLs use the
    psycopg 3 driver (``postgresql+psycopg://``).
    """
    text = str(path_or_url)
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text).expanduser()))
    url = make_url(text)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def strip_credentials(url: str | None) -> str | None:
    """``url`` without user name and password (never store credentials)."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        _log.warning("Dropping credentials from backend URL before storing it")
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (``None`` in memory), checking that its folder exists.

    Raises:
        JobDatabaseError: the folder does not exist or the path is a folder.
    """
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    path = Path(database)
    if not path.parent.exists():
        raise JobDatabaseError(f"cannot create job database {str(path)!r}: folder "
                               f"{str(path.parent)!r} does not exist")
    if path.is_dir():
        raise JobDatabaseError(f"job database path {str(path)!r} is a folder")
    return path


def create_engine(url: URL) -> Engine:
    """An engine for ``url``; in-memory SQLite shares one connection between threads.

    PostgreSQL connections time out after :data:`PG_CONNECT_TIMEOUT` seconds, are checked
    before use (a restarted server costs one failed operation, not a broken pool) and
    name themselves ``eoextract`` in ``pg_stat_activity``. psycopg does not prepare
    statements on the server, so every statement is planned with its actual parameters
    (PostgreSQL may switch a prepared statement to a generic plan; a generic plan of a claim
    or an adoption reads the whole table: 100 ms to 1 s instead of 1 to 5 ms at 1M jobs),
    and connection poolers such as PgBouncer work.
    """
    database = url.database
    backend = url.get_backend_name()
    if backend == "sqlite" and (not database or database == ":memory:"):
        return sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    if backend == "postgresql":
        connect_args: dict[str, Any] = {"application_name": "eoextract", "prepare_threshold": None}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT
        return sa.create_engine(url, pool_size=5, max_overflow=40, pool_pre_ping=True,
                                connect_args=connect_args)
    # the manager's worker threads each hold a connection for one short transaction
    return sa.create_engine(url, pool_size=5, max_overflow=40)


def is_unreachable(exc: BaseException) -> bool:
    """Whether a database error means the server could not be reached (or went away)."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError
                      | sa.exc.DisconnectionError | sa.exc.TimeoutError)


def describe_error(exc: BaseException) -> str:
    """A short description of a database error: the driver's message, without the SQL
    statement, its parameters or SQLAlchemy's help link."""
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    text = str(source)
    for marker in ("[SQL:", "(Background on this error"):
        text = text.split(marker, 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = " ".join(lines[:3]) or type(source).__name__
    if len(message) > 500:
        message = message[:497] + "..."
    return f"{type(source).__name__}: {message}"


def _enable_wal(cursor: Any, timeout: float) -> None:
    """Switch the database to write-ahead logging, waiting up to ``timeout`` s for other processes.

    SQLite answers "database is locked" at once, without its busy handler, when several
    processes open a new database and switch it at the same moment; so this retries.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def install_sqlite_hooks(engine: Engine, *, busy_timeout_ms: int) -> None:
    """Pragmas on every new SQLite connection, and ``BEGIN`` emitted by us.

    A transaction begins with ``BEGIN <mode>`` where the mode is the connection's
    :data:`BEGIN_OPTION` execution option (default ``DEFERRED``).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        _enable_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # on the driver's connection: SQLAlchemy's execution path costs more than BEGIN
        statement = f"BEGIN {conn.get_execution_options().get(BEGIN_OPTION, 'DEFERRED')}"
        try:
            conn.connection.driver_connection.execute(statement)
        except sqlite3.Error as exc:  # as SQLAlchemy raises it (e.g. OperationalError: locked)
            raise sa.exc.DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc
