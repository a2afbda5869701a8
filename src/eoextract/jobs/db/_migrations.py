"""Schema migrations of the SQL job database.

:data:`MIGRATIONS` is an ordered list: ``MIGRATIONS[i]`` upgrades a database from schema
version ``i + 1`` to ``i + 2``, so the newest version is ``len(MIGRATIONS) + 1``
(:data:`~eoextract.jobs.db._models.SCHEMA_VERSION`). :func:`upgrade` runs the missing steps
in the caller's transaction (SQLite and PostgreSQL both roll DDL back), so a failed
migration leaves the database as it was.

A migration is written against the tables as they were at its version, in plain SQL that
both SQLite and PostgreSQL accept; it never imports the current models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy.engine import Connection

from eoextract.errors import JobDatabaseError, SchemaVersionError
from eoextract.jobs.db._models import SCHEMA_VERSION

_log = logging.getLogger(__name__)


#: A migration step: changes the tables in the given connection's open transaction.
Migration = Callable[[Connection], None]


def _v1_to_v2(conn: Connection) -> None:
    """Indexes for status counts and slots at scale.

    ``(status, backend_name, lease_until)`` serves ``count_by_status``, ``active_counts``,
    the slots claimed per backend and lease adoption; it makes ``(status)`` and
    ``(backend_name, status)`` redundant.
    """
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_jobs_status")
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_jobs_backend_status")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_jobs_status_backend "
                         "ON jobs (status, backend_name, lease_until)")


def _v2_to_v3(conn: Connection) -> None:
    """The ``usage`` column: every usage key a backend reported, as JSON."""
    conn.exec_driver_sql("ALTER TABLE jobs ADD COLUMN usage TEXT")


def _v3_to_v4(conn: Connection) -> None:
    """Indexes for summaries of large tables, answered from indexes alone.

    ``jobs (status, error_class, attempt)``: failures per error class; ``jobs (status,
    backend_name, costs)``: credits spent and counts per status and backend; ``jobs (output_published_at, input_published_at)``: published jobs; ``job_status_changes (new, at)``: first launch
    and latest change; ``job_status_changes (new, old)``: retries and requeues.
    """
    for statement in _V4_INDEXES:
        conn.exec_driver_sql(statement)


_V4_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_jobs_status_error ON jobs (status, error_class, attempt)",
    "CREATE INDEX IF NOT EXISTS ix_jobs_costs ON jobs (status, backend_name, costs)",
    "CREATE INDEX IF NOT EXISTS ix_jobs_published ON jobs (output_published_at, input_published_at)",
    "CREATE INDEX IF NOT EXISTS ix_job_status_changes_new_at ON job_status_changes (new, at)",
    "CREATE INDEX IF NOT EXISTS ix_job_status_changes_new_old ON job_status_changes (new, old)",
)


def _v4_to_v5(conn: Connection) -> None:
    """Fewer index entries to move on each status change.

    ``costs`` joins ``ix_jobs_status_backend``, which then also covers the credit totals
    (``ix_jobs_costs`` goes); ``ix_jobs_status_error`` holds only jobs with an error and
    ``ix_job_status_changes_new_old`` only the changes back to ``not_started`` after another
    status: the status changes of jobs that run without trouble do not touch them.
    """
    for statement in _V5_INDEXES:
        conn.exec_driver_sql(statement)


_V5_INDEXES = (
    "DROP INDEX IF EXISTS ix_jobs_costs",
    "DROP INDEX IF EXISTS ix_jobs_status_backend",
    "CREATE INDEX ix_jobs_status_backend ON jobs (status, backend_name, lease_until, costs)",
    "DROP INDEX IF EXISTS ix_jobs_status_error",
    "CREATE INDEX ix_jobs_status_error ON jobs (status, error_class, attempt) WHERE error_class IS NOT NULL",
    "DROP INDEX IF EXISTS ix_job_status_changes_new_old",
    "CREATE INDEX ix_job_status_changes_new_old ON job_status_changes (new, old) "
    "WHERE new = 'not_started' AND old IS NOT NULL",
)


#: ``MIGRATIONS[i]`` upgrades schema version ``i + 1`` to ``i + 2``.
MIGRATIONS: list[Migration] = [_v1_to_v2, _v2_to_v3, _v3_to_v4, _v4_to_v5]

if len(MIGRATIONS) + 1 != SCHEMA_VERSION:  # pragma: no cover - caught by any test run
    raise RuntimeError("SCHEMA_VERSION and the list of migrations disagree")


def upgrade(
    conn: Connection, current: int, *, migrations: Sequence[Migration] | None = None
) -> int:
    """Apply the migrations from version ``current`` to the newest one, in ``conn``'s transaction.

    Args:
        conn: a connection inside a writing transaction; the caller commits.
        current: the version the database has.
        migrations: the steps (default: :data:`MIGRATIONS`, looked up at call time).

    Returns:
        The version the database has afterwards.

    Raises:
        SchemaVersionError: ``current`` is newer than the newest known version.
        JobDatabaseError: ``current`` is not a version any migration starts from.
    """
    steps = MIGRATIONS if migrations is None else migrations
    newest = len(steps) + 1
    if current > newest:
        raise SchemaVersionError(f"schema version {current} is newer than {newest}; upgrade eoextract")
    if current < 1:
        raise JobDatabaseError(f"unknown schema version {current!r}; cannot migrate")
    for version in range(current, newest):
        step = steps[version - 1]
        _log.info("Migrating job database schema %d -> %d (%s)", version, version + 1,
                  getattr(step, "__name__", step))
        step(conn)
    return newest
