"""Claims and leases of the SQL job database, safe for several managers at once.

Which rows each function takes and what it writes are the rules of
:mod:`~eoextract.jobs.db._rules`, evaluated here as SQL. Each function runs in the
caller's writing transaction. On PostgreSQL rows are taken with
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
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from eoextract.jobs.db import _rules as rules
from eoextract.jobs.db._sql_rows import BACKENDS, JOBS, RECORD_COLUMNS, chunks

c = JOBS.c


class _SqlColumns:
    """The jobs table as SQLAlchemy expressions (:class:`~eoextract.jobs.db._rules.Columns`)."""

    def __getitem__(self, name: str) -> sa.ColumnElement[Any]:
        return c[name]

    def is_null(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        return column.is_(None)

    def is_in(self, column: sa.ColumnElement[Any], values: Any) -> sa.ColumnElement[bool]:
        return column.in_(values)


_T = _SqlColumns()


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
    return int(conn.scalar(_slots_used(), {"backend": backend_name, "now": now}) or 0)


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


@functools.lru_cache(maxsize=1)
def _slots_used() -> sa.Select:
    """The statement of :func:`slots_used` (parameters ``backend``, ``now``)."""
    active = select(func.count()).where(rules.active_on(_T, _BACKEND))
    claimed = select(func.count()).where(rules.claimed_for(_T, _BACKEND, _NOW))
    return select(active.scalar_subquery() + claimed.scalar_subquery())


@functools.lru_cache(maxsize=32)
def _claim_pick(dialect: str, due: bool, pinned: bool) -> sa.Select:
    """Due (or never-due) claimable rows in claim order, ``:lim`` of them, locked."""
    pick = select(c.pk).where(rules.claimable(_T, _MANAGER, _NOW),
                              rules.due(_T, _NOW) if due else rules.never_due(_T))
    if pinned:
        none_other = ~sa.exists().where(BACKENDS.c.name != _BACKEND)
        pick = pick.where(~rules.pinned_elsewhere(_T, _BACKEND, select(BACKENDS.c.name), none_other))
    return _locking(pick.order_by(c.next_attempt_at, c.pk).limit(_LIMIT), dialect)


@functools.lru_cache(maxsize=32)
def _claim_update(dialect: str, due: bool, pinned: bool, names: tuple[str, ...]) -> sa.Update:
    """Take the rows of :func:`_claim_pick`, set ``names``, and return their records."""
    return (update(JOBS).where(c.pk.in_(_claim_pick(dialect, due, pinned)))
            .values({n: _SET[n] for n in names}).returning(*RECORD_COLUMNS))


def _take(conn: Connection, dialect: str, due: bool, pinned: bool, params: dict[str, Any],
          values: Mapping[str, Any]) -> list[sa.Row]:
    """Claim rows: one ``UPDATE ... WHERE pk IN (SELECT ... FOR UPDATE SKIP LOCKED)
    RETURNING ...`` where the database can return rows, else a select and an update."""
    if conn.dialect.update_returning:
        stmt = _claim_update(dialect, due, pinned, tuple(values))
        return conn.execute(stmt, {**params, **{f"v_{k}": v for k, v in values.items()}}).all()
    pks = list(conn.scalars(_claim_pick(dialect, due, pinned), params))
    if not pks:
        return []
    conn.execute(update(JOBS).where(c.pk.in_(pks)).values(values))
    return conn.execute(select(*RECORD_COLUMNS).where(c.pk.in_(pks))).all()


def claim_rows(conn: Connection, dialect: str, claim: rules.Claim) -> list[sa.Row]:
    """Claim up to ``claim.limit`` due ``not_started`` jobs; returns their rows in claim order.

    See :meth:`~eoextract.jobs.db.JobDatabase.claim` for the rules.
    """
    limit = claim.limit
    if claim.max_active is not None:
        _lock_backend(conn, dialect, claim.backend_name)
        limit = claim.capped_limit(slots_used(conn, claim.backend_name, claim.now))
    if limit <= 0:
        return []
    params: dict[str, Any] = {"now": claim.now, "manager_id": claim.manager_id,
                              "backend": claim.backend_name}
    pinned = claim.backend_name is not None
    # Two index-ordered steps: rows never given a next_attempt_at, then due rows.
    fresh = _take(conn, dialect, False, pinned, {**params, "lim": limit}, claim.values)
    fresh.sort(key=lambda r: r.pk)
    if len(fresh) >= limit:
        return fresh
    due = _take(conn, dialect, True, pinned, {**params, "lim": limit - len(fresh)}, claim.values)
    due.sort(key=lambda r: (r.next_attempt_at, r.pk))
    return fresh + due


def adopt_rows(conn: Connection, dialect: str, adoption: rules.Adoption
               ) -> tuple[list[sa.Row], set[str | None]]:
    """Take over jobs with an expired (or no) lease; returns their rows (by primary key)
    and the managers that held them.

    See :meth:`~eoextract.jobs.db.JobDatabase.adopt_expired` for the rules.
    """
    if adoption.limit is not None and adoption.limit <= 0:
        return [], set()
    pick = select(c.pk, c.claimed_by).where(
        rules.adoptable(_T, adoption.manager_id, adoption.now, adoption.backend_names)).order_by(c.pk)
    if adoption.limit is not None:
        pick = pick.limit(adoption.limit)
    found = list(conn.execute(_locking(pick, dialect)))
    rows = []
    for chunk in chunks([pk for pk, _ in found]):
        stmt = update(JOBS).where(c.pk.in_(chunk)).values(adoption.values)
        if conn.dialect.update_returning:
            rows += conn.execute(stmt.returning(*RECORD_COLUMNS)).all()
        else:
            conn.execute(stmt)
            rows += conn.execute(select(*RECORD_COLUMNS).where(c.pk.in_(chunk))).all()
    rows.sort(key=lambda r: r.pk)
    return rows, {holder for _, holder in found}


def renew(conn: Connection, manager_id: str, values: Mapping[str, Any]) -> int:
    """Extend the leases ``manager_id`` holds on unfinished jobs (``values``: the
    :func:`~eoextract.jobs.db._rules.renewed_lease`); returns how many."""
    return int(conn.execute(update(JOBS).where(rules.renewable(_T, manager_id)).values(values)).rowcount)


def release(conn: Connection, manager_id: str) -> int:
    """Drop every lease of ``manager_id``; returns how many."""
    stmt = update(JOBS).where(rules.held_by(_T, manager_id)).values(rules.RELEASED)
    return int(conn.execute(stmt).rowcount)


def unpin(conn: Connection, dialect: str, names: list[str], now: datetime) -> dict[str, str]:
    """Empty ``backend_name`` of ``not_started`` jobs pinned to a name not in ``names``;
    returns their keys and former names. Reads the pinned rows only
    (``ix_jobs_status_backend``: ``status = 'not_started' AND backend_name > ''``)."""
    pinned = c.status == "not_started"
    pick = select(c.pk, c.job_key, c.backend_name).where(pinned, c.backend_name > "")
    if names:
        pick = pick.where(c.backend_name.not_in(names))
    found = list(conn.execute(_locking(pick, dialect)))
    for chunk in chunks([pk for pk, _, _ in found]):
        conn.execute(update(JOBS).where(c.pk.in_(chunk)).values(backend_name=None, updated_at=now))
    return {key: name for _, key, name in found}
