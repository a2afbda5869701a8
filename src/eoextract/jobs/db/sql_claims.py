"""Claims and leases of the SQL job database, safe for several managers at once.

Each function runs in the caller's writing transaction. On PostgreSQL rows are taken with
``SELECT ... FOR UPDATE SKIP LOCKED`` (a row another transaction is taking is skipped, not
waited for), and the count-then-claim of :func:`claim_pks` with ``max_active`` holds a
transaction-scoped advisory lock per backend. On SQLite the transaction starts with
``BEGIN IMMEDIATE``, which serialises writers (also across processes on one machine).

Every query is shaped to walk an index in order instead of sorting or scanning the table:
the claim reads ``ix_jobs_due`` (``status, next_attempt_at, pk``) in two steps (never-due
rows, then due rows), slot counts and adoption read ``ix_jobs_status_backend``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Connection

from eoextract.jobs.db.base import ADOPTABLE
from eoextract.jobs.db.models import Backend, Job
from eoextract.jobs.status import ACTIVE, TERMINAL, JobStatus

__all__ = ["claim_pks", "adopt_pks", "renew", "release", "slots_used", "ADOPTABLE_VALUES"]

JOBS: sa.Table = Job.__table__  # type: ignore[assignment]
BACKENDS: sa.Table = Backend.__table__  # type: ignore[assignment]
c = JOBS.c

_NOT_STARTED = JobStatus.NOT_STARTED.value
_ACTIVE_VALUES = sorted(s.value for s in ACTIVE)
_TERMINAL_VALUES = sorted(s.value for s in TERMINAL)
#: Status values of :data:`~eoextract.jobs.db.base.ADOPTABLE`.
ADOPTABLE_VALUES = sorted(s.value for s in ADOPTABLE)


def _locking(stmt: sa.Select, dialect: str) -> sa.Select:
    return stmt.with_for_update(skip_locked=True) if dialect == "postgresql" else stmt


def _lock_backend(conn: Connection, dialect: str, backend_name: str) -> None:
    """Serialise slot counting for one backend until the transaction ends (PostgreSQL).

    SQLite needs nothing: ``BEGIN IMMEDIATE`` already serialises every writer.
    """
    if dialect == "postgresql":
        key = zlib.crc32(f"eoextract.slots:{backend_name}".encode()) - 2**31
        conn.execute(select(func.pg_advisory_xact_lock(key)))


def slots_used(conn: Connection, backend_name: str, now: datetime) -> int:
    """Slots of ``backend_name`` in use: its active jobs plus its claimed, leased new jobs.

    One statement, so one snapshot: a job moving from claimed to active meanwhile is
    counted once (two statements under READ COMMITTED could miss it).
    """
    active = select(func.count()).where(c.status.in_(_ACTIVE_VALUES), c.backend_name == backend_name)
    claimed = select(func.count()).where(
        c.status == _NOT_STARTED, c.backend_name == backend_name,
        c.claimed_by.is_not(None), c.lease_until > now)
    return int(conn.scalar(select(active.scalar_subquery() + claimed.scalar_subquery())) or 0)


def claim_pks(
    conn: Connection,
    dialect: str,
    limit: int,
    *,
    manager_id: str,
    now: datetime,
    lease_seconds: float,
    backend_name: str | None = None,
    max_active: int | None = None,
) -> list[int]:
    """Claim up to ``limit`` due ``not_started`` jobs; returns their primary keys in claim order.

    See :meth:`~eoextract.jobs.db.base.JobDatabase.claim` for the rules.
    """
    if max_active is not None and backend_name is not None:
        _lock_backend(conn, dialect, backend_name)
        limit = min(limit, max_active - slots_used(conn, backend_name, now))
    if limit <= 0:
        return []
    free = or_(c.claimed_by.is_(None), c.claimed_by == manager_id,
               c.lease_until.is_(None), c.lease_until <= now)
    base = select(c.pk).where(c.status == _NOT_STARTED, free)
    if backend_name is not None:
        others = [n for n in conn.scalars(select(BACKENDS.c.name)) if n != backend_name]
        pinned = c.backend_name.in_(others) if others else c.backend_name != backend_name
        base = base.where(or_(c.backend_name.is_(None), c.backend_name == backend_name, ~pinned))
    # Two index-ordered steps: rows never given a next_attempt_at, then due rows.
    order = (c.next_attempt_at, c.pk)
    pks = list(conn.scalars(_locking(
        base.where(c.next_attempt_at.is_(None)).order_by(*order).limit(limit), dialect)))
    if len(pks) < limit:
        pks += conn.scalars(_locking(
            base.where(c.next_attempt_at <= now).order_by(*order).limit(limit - len(pks)), dialect))
    if pks:
        values: dict[str, object] = dict(claimed_by=manager_id, updated_at=now,
                                         lease_until=now + timedelta(seconds=lease_seconds))
        if max_active is not None and backend_name is not None:
            values["backend_name"] = backend_name
        conn.execute(update(JOBS).where(c.pk.in_(pks)).values(values))
    return pks


def adopt_pks(
    conn: Connection,
    dialect: str,
    manager_id: str,
    *,
    now: datetime,
    lease_seconds: float,
    limit: int | None = None,
    backend_names: Iterable[str] | None = None,
) -> list[tuple[int, str | None]]:
    """Take over jobs with an expired (or no) lease; returns ``(pk, previous holder)`` pairs.

    See :meth:`~eoextract.jobs.db.base.JobDatabase.adopt_expired` for the rules.
    """
    if limit is not None and limit <= 0:
        return []
    stmt = select(c.pk, c.claimed_by).where(
        c.status.in_(ADOPTABLE_VALUES),
        or_(c.lease_until.is_(None), c.lease_until <= now),
        or_(c.claimed_by.is_(None), c.claimed_by != manager_id),
    ).order_by(c.pk)
    if backend_names is not None:
        stmt = stmt.where(c.backend_name.in_(list(backend_names)))
    if limit is not None:
        stmt = stmt.limit(limit)
    taken = [(pk, holder) for pk, holder in conn.execute(_locking(stmt, dialect))]
    if taken:
        conn.execute(update(JOBS).where(c.pk.in_([pk for pk, _ in taken])).values(
            claimed_by=manager_id, lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now))
    return taken


def renew(conn: Connection, manager_id: str, *, now: datetime, lease_seconds: float) -> int:
    """Extend the leases ``manager_id`` holds on unfinished jobs; returns how many."""
    stmt = (update(JOBS)
            .where(c.claimed_by == manager_id, c.status.not_in(_TERMINAL_VALUES))
            .values(lease_until=now + timedelta(seconds=lease_seconds)))
    return int(conn.execute(stmt).rowcount)


def release(conn: Connection, manager_id: str) -> int:
    """Drop every lease of ``manager_id``; returns how many."""
    stmt = update(JOBS).where(c.claimed_by == manager_id).values(claimed_by=None, lease_until=None)
    return int(conn.execute(stmt).rowcount)
