"""Claims and leases of the SQL job database, safe for several managers at once.

Each function runs in the caller's writing transaction. On PostgreSQL rows are taken with
``SELECT ... FOR UPDATE SKIP LOCKED`` (a row another transaction is taking is skipped, not
waited for), and the count-then-claim of :func:`claim_rows` with ``max_active`` holds a
transaction-scoped advisory lock per backend. On SQLite the transaction starts with
``BEGIN IMMEDIATE``, which serialises writers (also across processes on one machine).

Every query is shaped to walk an index in order instead of sorting or scanning the table:
the claim reads ``ix_jobs_due`` (``status, next_attempt_at, pk``) in two steps (never-due
rows, then due rows), slot counts and adoption read ``ix_jobs_status_backend``. A claim
takes and returns its rows in one ``UPDATE ... RETURNING`` per step.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Connection

from eoextract.jobs.db._interface import ADOPTABLE
from eoextract.jobs.db._sql_rows import BACKENDS, JOBS, RECORD_COLUMNS, chunks
from eoextract.jobs.status import ACTIVE, TERMINAL, JobStatus


c = JOBS.c

_NOT_STARTED = JobStatus.NOT_STARTED.value
_ACTIVE_VALUES = sorted(s.value for s in ACTIVE)
_TERMINAL_VALUES = sorted(s.value for s in TERMINAL)
#: Status values of :data:`~eoextract.jobs.db.ADOPTABLE`.
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
    counted once (two statements under READ COMMITTED could miss it). Both counts read
    ``ix_jobs_status_backend`` only (a lease is always dropped with its holder).
    """
    active = select(func.count()).where(c.status.in_(_ACTIVE_VALUES), c.backend_name == backend_name)
    claimed = select(func.count()).where(
        c.status == _NOT_STARTED, c.backend_name == backend_name, c.lease_until > now)
    return int(conn.scalar(select(active.scalar_subquery() + claimed.scalar_subquery())) or 0)


def _pinned_elsewhere(backend: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """Rows pinned to a backend other than ``backend`` (see ``JobDatabase.claim``).

    A row is pinned when its ``backend_name`` names another registered backend or, while
    no other backend is registered, when it holds any other name.
    """
    registered = select(BACKENDS.c.name)
    none_other = ~sa.exists().where(BACKENDS.c.name != backend)
    return sa.and_(c.backend_name.is_not(None), c.backend_name != backend,
                   or_(c.backend_name.in_(registered), none_other))


# Parameters of the claim statements, which are built once per shape (building and keying a
# statement costs more than running it).
_NOW = sa.bindparam("now", type_=c.lease_until.type)
_MANAGER = sa.bindparam("manager_id", type_=c.claimed_by.type)
_BACKEND = sa.bindparam("backend", type_=c.backend_name.type)
_LIMIT = sa.bindparam("lim", type_=sa.Integer())
_SET = {"claimed_by": sa.bindparam("v_claimed_by", type_=c.claimed_by.type),
        "lease_until": sa.bindparam("v_lease_until", type_=c.lease_until.type),
        "updated_at": sa.bindparam("v_updated_at", type_=c.updated_at.type),
        "backend_name": sa.bindparam("v_backend_name", type_=c.backend_name.type)}


@functools.lru_cache(maxsize=32)
def _claim_pick(dialect: str, due: bool, pinned: bool) -> sa.Select:
    """Due (or never-due) claimable rows in claim order, ``:lim`` of them, locked."""
    free = or_(c.claimed_by.is_(None), c.claimed_by == _MANAGER,
               c.lease_until.is_(None), c.lease_until <= _NOW)
    pick = select(c.pk).where(c.status == _NOT_STARTED, free,
                              c.next_attempt_at <= _NOW if due else c.next_attempt_at.is_(None))
    if pinned:
        pick = pick.where(~_pinned_elsewhere(_BACKEND))
    return _locking(pick.order_by(c.next_attempt_at, c.pk).limit(_LIMIT), dialect)


@functools.lru_cache(maxsize=32)
def _claim_update(dialect: str, due: bool, pinned: bool, set_backend: bool) -> sa.Update:
    """Take the rows of :func:`_claim_pick` and return their records."""
    names = ("claimed_by", "lease_until", "updated_at", *(("backend_name",) if set_backend else ()))
    return (update(JOBS).where(c.pk.in_(_claim_pick(dialect, due, pinned)))
            .values({n: _SET[n] for n in names}).returning(*RECORD_COLUMNS))


def _take(conn: Connection, dialect: str, due: bool, pinned: bool, params: dict[str, Any]
          ) -> list[sa.Row]:
    """Claim rows: one ``UPDATE ... WHERE pk IN (SELECT ... FOR UPDATE SKIP LOCKED)
    RETURNING ...`` where the database can return rows, else a select and an update."""
    set_backend = "v_backend_name" in params
    if conn.dialect.update_returning:
        return conn.execute(_claim_update(dialect, due, pinned, set_backend), params).all()
    pks = list(conn.scalars(_claim_pick(dialect, due, pinned), params))
    if not pks:
        return []
    values = {name: params[f"v_{name}"] for name in _SET if f"v_{name}" in params}
    conn.execute(update(JOBS).where(c.pk.in_(pks)).values(values))
    return conn.execute(select(*RECORD_COLUMNS).where(c.pk.in_(pks))).all()


def claim_rows(
    conn: Connection,
    dialect: str,
    limit: int,
    *,
    manager_id: str,
    now: datetime,
    lease_seconds: float,
    backend_name: str | None = None,
    max_active: int | None = None,
) -> list[sa.Row]:
    """Claim up to ``limit`` due ``not_started`` jobs; returns their rows in claim order.

    See :meth:`~eoextract.jobs.db.JobDatabase.claim` for the rules.
    """
    capped = max_active is not None and backend_name is not None
    if capped:
        _lock_backend(conn, dialect, backend_name)
        limit = min(limit, max_active - slots_used(conn, backend_name, now))
    if limit <= 0:
        return []
    params: dict[str, Any] = {"now": now, "manager_id": manager_id, "backend": backend_name,
                              "v_claimed_by": manager_id, "v_updated_at": now,
                              "v_lease_until": now + timedelta(seconds=lease_seconds)}
    if capped:
        params["v_backend_name"] = backend_name
    pinned = backend_name is not None
    # Two index-ordered steps: rows never given a next_attempt_at, then due rows.
    fresh = _take(conn, dialect, False, pinned, {**params, "lim": limit})
    fresh.sort(key=lambda r: r.pk)
    if len(fresh) >= limit:
        return fresh
    due = _take(conn, dialect, True, pinned, {**params, "lim": limit - len(fresh)})
    due.sort(key=lambda r: (r.next_attempt_at, r.pk))
    return fresh + due


def adopt_rows(
    conn: Connection,
    dialect: str,
    manager_id: str,
    *,
    now: datetime,
    lease_seconds: float,
    limit: int | None = None,
    backend_names: Iterable[str] | None = None,
) -> tuple[list[sa.Row], set[str | None]]:
    """Take over jobs with an expired (or no) lease; returns their rows (by primary key)
    and the managers that held them.

    See :meth:`~eoextract.jobs.db.JobDatabase.adopt_expired` for the rules.
    """
    if limit is not None and limit <= 0:
        return [], set()
    pick = select(c.pk, c.claimed_by).where(
        c.status.in_(ADOPTABLE_VALUES),
        or_(c.lease_until.is_(None), c.lease_until <= now),
        or_(c.claimed_by.is_(None), c.claimed_by != manager_id),
    ).order_by(c.pk)
    if backend_names is not None:
        pick = pick.where(c.backend_name.in_(list(backend_names)))
    if limit is not None:
        pick = pick.limit(limit)
    found = list(conn.execute(_locking(pick, dialect)))
    values = dict(claimed_by=manager_id, lease_until=now + timedelta(seconds=lease_seconds),
                  updated_at=now)
    rows = []
    for chunk in chunks([pk for pk, _ in found]):
        stmt = update(JOBS).where(c.pk.in_(chunk)).values(values)
        if conn.dialect.update_returning:
            rows += conn.execute(stmt.returning(*RECORD_COLUMNS)).all()
        else:
            conn.execute(stmt)
            rows += conn.execute(select(*RECORD_COLUMNS).where(c.pk.in_(chunk))).all()
    rows.sort(key=lambda r: r.pk)
    return rows, {holder for _, holder in found}


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
