"""Opening the SQL job database: recognising our tables, checking and migrating the schema.

``meta`` holds the schema version (:data:`~eoextract.jobs.db._models.SCHEMA_VERSION`). A
database with a newer version is refused; an older one is migrated on open, once, in one
transaction (:mod:`~eoextract.jobs.db._migrations`).
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from eoextract._util.utc import utc_now
from eoextract.errors import JobDatabaseError, SchemaVersionError
from eoextract.jobs.db import _migrations as migrations
from eoextract.jobs.db._models import CREATED_BY, SCHEMA_VERSION
from eoextract.jobs.db._sql_rows import META, OUR_TABLES

_log = logging.getLogger(__name__)


def read_meta(conn: Connection, dialect: str, name: str) -> dict[str, Any] | None:
    """The ``meta`` settings of an eoextract database, or ``None`` when it has no tables yet.

    Raises:
        JobDatabaseError: the database holds another tool's tables.
        SchemaVersionError: its schema is newer than this eoextract's.
    """
    tables = set(sa.inspect(conn).get_table_names())
    ours = tables & OUR_TABLES
    foreign = dialect == "sqlite" and tables and META.name not in tables
    if (ours and META.name not in tables) or foreign:
        raise JobDatabaseError(f"{name} is not an eoextract job database (it holds tables "
                               f"{sorted(tables)[:8]!r}); use a new file or URL")
    if not ours:
        return None
    meta = {k: v for k, v in conn.execute(select(META.c.key, META.c.value))}
    if meta.get("created_by") != CREATED_BY:
        raise JobDatabaseError(f"{name} is not an eoextract job database (no eoextract "
                               f"metadata); use a new file or URL")
    schema_version(meta, name)
    return meta


def schema_version(meta: dict[str, Any], name: str) -> int:
    """The schema version in ``meta``, refusing versions newer than :data:`SCHEMA_VERSION`."""
    try:
        version = int(meta.get("schema_version", 0))
    except (TypeError, ValueError):
        raise JobDatabaseError(f"{name} has an unreadable schema version "
                               f"{meta.get('schema_version')!r}") from None
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"{name} has schema version {version}, this eoextract knows up "
                                 f"to {SCHEMA_VERSION}; upgrade eoextract")
    return version


def migrate(conn: Connection, dialect: str, name: str) -> dict[str, Any]:
    """Bring an older schema up to :data:`SCHEMA_VERSION` in ``conn``'s writing transaction.

    The version is read again under a lock (the ``schema_version`` row on PostgreSQL, the
    write lock of ``BEGIN IMMEDIATE`` on SQLite), so two processes opening the same old
    database migrate it once. Returns the ``meta`` settings afterwards.
    """
    version_row = select(META.c.value).where(META.c.key == "schema_version")
    if dialect == "postgresql":
        version_row = version_row.with_for_update()
    version = schema_version({"schema_version": conn.scalar(version_row)}, name)
    if version < SCHEMA_VERSION:
        reached = migrations.upgrade(conn, version)
        write_meta(conn, schema_version=reached, migrated_at=utc_now().isoformat())
        _log.warning("Job database %s migrated from schema version %d to %d", name, version, reached)
    return {k: v for k, v in conn.execute(select(META.c.key, META.c.value))}


def write_meta(conn: Connection, **values: Any) -> None:
    """Set ``meta`` keys (JSON values) in ``conn``'s transaction."""
    for key, value in values.items():
        conn.execute(sa.delete(META).where(META.c.key == key))
        conn.execute(insert(META).values(key=key, value=value))
