"""Row-level statements of the SQL job database: adding and merging jobs, applying transitions.

Statements are built once per set of fields (building a statement costs more than running
it on SQLite). Every function runs in the caller's transaction and commits nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.engine import Connection

from eoextract._util.utc import utc_now
from eoextract.errors import InvalidTransition, JobError
from eoextract.jobs.db import _rules as rules
from eoextract.jobs.db._columns import UserSchema
from eoextract.jobs.db._frame import MANAGED_KINDS, PreparedJobs
from eoextract.jobs.db._models import Backend, Job, JobStatusChange, Meta
from eoextract.jobs.db._records import StatusChange, Transition
from eoextract.jobs.db._sql_batch import BatchStatement
from eoextract.jobs.status import JobStatus


JOBS: sa.Table = Job.__table__  # type: ignore[assignment]
CHANGES: sa.Table = JobStatusChange.__table__  # type: ignore[assignment]
META: sa.Table = Meta.__table__  # type: ignore[assignment]
BACKENDS: sa.Table = Backend.__table__  # type: ignore[assignment]
OUR_TABLES = {JOBS.name, CHANGES.name, META.name, BACKENDS.name}
_CHUNK = 500  # keys per IN (...) clause

#: Managed fields of a :class:`~eoextract.jobs.db.JobRecord` (``JobRecord.fields``).
RECORD_FIELDS = tuple(name for name in MANAGED_KINDS if name != "status")
#: Columns of a :class:`~eoextract.jobs.db.JobRecord`: ``pk``, ``job_key``, ``status``,
#: the :data:`RECORD_FIELDS`, ``data``.
RECORD_COLUMNS = [JOBS.c.pk, JOBS.c.job_key, JOBS.c.status,
                  *(JOBS.c[name] for name in RECORD_FIELDS), JOBS.c.data]

_SELECT_MANY = select(JOBS.c.pk, JOBS.c.job_key, JOBS.c.status, JOBS.c.id).where(
    JOBS.c.job_key.in_(sa.bindparam("keys", expanding=True))).order_by(JOBS.c.pk)
_SELECT_MANY_FOR_UPDATE = _SELECT_MANY.with_for_update()
_INSERT_CHANGE = insert(CHANGES)
#: The columns :func:`apply_transitions` writes to a history row.
_HISTORY_KEYS = ("job_pk", "old", "new", "at", "manager_id", "message", "backend_job_id")


def chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices small enough for one ``IN (...)`` clause."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def prefixed(values: dict[str, Any]) -> dict[str, Any]:
    """Parameters of :func:`update_by_key` / the update by primary key."""
    return {f"v_{k}": v for k, v in values.items()}


@functools.lru_cache(maxsize=256)
def _update_statement(by: str, names: tuple[str, ...]) -> sa.Update:
    where = JOBS.c.pk == sa.bindparam("_pk") if by == "pk" else JOBS.c.job_key == sa.bindparam("_key")
    return update(JOBS).where(where).values({n: sa.bindparam(f"v_{n}", type_=JOBS.c[n].type)
                                             for n in names})


def update_by_key(values: dict[str, Any]) -> sa.Update:
    """``UPDATE jobs SET <values> WHERE job_key = :_key`` (parameters: :func:`prefixed`)."""
    return _update_statement("key", tuple(sorted(values)))


@functools.lru_cache(maxsize=64)
def select_records(statuses: bool, backend: bool, keys: bool, limit: bool, latest_first: bool
                   ) -> sa.Select:
    """The records (:data:`RECORD_COLUMNS`) of the jobs in table order (``latest_first``:
    latest update first), filtered by what is given as parameters: ``statuses`` (a list),
    ``backend``, ``keys`` (a list of at most :data:`_CHUNK`), at most ``limit``."""
    stmt = select(*RECORD_COLUMNS).order_by(
        *((JOBS.c.updated_at.desc().nulls_last(), JOBS.c.pk) if latest_first else (JOBS.c.pk,)))
    if statuses:
        stmt = stmt.where(JOBS.c.status.in_(sa.bindparam("statuses", expanding=True)))
    if backend:
        stmt = stmt.where(JOBS.c.backend_name == sa.bindparam("backend", type_=JOBS.c.backend_name.type))
    if keys:
        stmt = stmt.where(JOBS.c.job_key.in_(sa.bindparam("keys", expanding=True)))
    return stmt.limit(sa.bindparam("limit", type_=sa.Integer())) if limit else stmt


#: Jobs inserted per statement (a million-row dataframe is not bound at once).
_INSERT_BATCH = 5000


def insert_jobs(session: Connection, keys: Sequence[str], managed: Sequence[dict[str, Any]],
                records: Sequence[dict[str, Any]], now: datetime) -> int:
    """Insert new jobs (key, given managed values, encoded user record) with history rows."""
    if len(keys) != len(managed) or len(keys) != len(records):
        raise ValueError("keys, managed values and records differ in length")
    if not keys:
        return 0
    before = session.scalar(select(func.max(JOBS.c.pk))) or 0
    for start in range(0, len(keys), _INSERT_BATCH):  # bounded parameter lists
        rows = []
        for i in range(start, min(start + _INSERT_BATCH, len(keys))):
            row = {name: None for name in MANAGED_KINDS}
            row.update(attempt=0, status=JobStatus.NOT_STARTED.value, created_at=now)
            for name, value in managed[i].items():
                if value is not None:
                    row[name] = value.value if isinstance(value, JobStatus) else value
            row.update(job_key=keys[i], data=records[i], updated_at=now)
            rows.append(row)
        session.execute(insert(JOBS), rows)
    # One history row per inserted job; updated_at tells them from rows another process
    # inserted meanwhile (PostgreSQL hands out primary keys to concurrent inserts).
    stamp = literal(now, JOBS.c.updated_at.type)
    session.execute(insert(CHANGES).from_select(
        ["job_pk", "old", "new", "at", "message", "backend_job_id"],
        select(JOBS.c.pk, sa.null(), JOBS.c.status, stamp, literal("added"), JOBS.c.id)
        .where(JOBS.c.pk > before, JOBS.c.updated_at == stamp)))
    return len(keys)


def existing_keys(session: Connection, keys: Sequence[str]) -> set[str]:
    """The ``keys`` the jobs table holds."""
    found: set[str] = set()
    for chunk in chunks(list(keys)):
        found.update(session.scalars(select(JOBS.c.job_key).where(JOBS.c.job_key.in_(chunk))))
    return found


def add_jobs(session: Connection, prepared: PreparedJobs, schema: UserSchema, skip: set[str],
             now: datetime) -> int:
    """Insert the rows of ``prepared`` whose key is not in ``skip``, with history rows."""
    records = schema.encode_records(prepared.user)
    wanted = [i for i, key in enumerate(prepared.keys) if key not in skip]
    return insert_jobs(session, [prepared.keys[i] for i in wanted],
                       [prepared.managed_row(i) for i in wanted], [records[i] for i in wanted], now)


def merge_jobs(session: Connection, prepared: PreparedJobs, schema: UserSchema, now: datetime
               ) -> set[str]:
    """Write the rows of ``prepared`` whose key the table holds; returns those keys.

    Managed values are written as given; a changed ``status`` gets a history row (message
    ``"persist"``) but is not checked against the status model. ``schema`` must already
    know ``prepared``'s user columns.
    """
    existing: dict[str, sa.Row] = {}
    for chunk in chunks(prepared.keys):
        stmt = select(JOBS.c.pk, JOBS.c.job_key, JOBS.c.status, JOBS.c.id, JOBS.c.data)
        for row in session.execute(stmt.where(JOBS.c.job_key.in_(chunk))):
            existing[row.job_key] = row
    records = schema.encode_records(prepared.user)
    updates, changes = [], []
    for i, key in enumerate(prepared.keys):
        old = existing.get(key)
        if old is None:
            continue
        values = {k: (v.value if isinstance(v, JobStatus) else v)
                  for k, v in prepared.managed_row(i).items()}
        values.update(_pk=old.pk, data={**(old.data or {}), **records[i]}, updated_at=now)
        updates.append(values)
        new_status = values.get("status", old.status)
        if new_status != old.status:
            changes.append(dict(job_pk=old.pk, old=old.status, new=new_status, at=now,
                                message="persist", backend_job_id=values.get("id", old.id)))
    if updates:
        params = {k: sa.bindparam(f"v_{k}") for k in updates[0] if k != "_pk"}
        session.execute(
            update(JOBS).where(JOBS.c.pk == sa.bindparam("_pk")).values(params),
            [{("_pk" if k == "_pk" else f"v_{k}"): v for k, v in u.items()} for u in updates])
    if changes:
        session.execute(insert(CHANGES), changes)
    return set(existing)


def apply_transitions(
    session: Connection,
    dialect: str,
    changes: Sequence[Transition],
    *,
    manager_id: str | None,
    user_retry: bool,
    known: Mapping[str, tuple[int, JobStatus, str | None]] | None = None,
) -> list[StatusChange | InvalidTransition]:
    """Check and apply transitions in the caller's transaction, in order; a refused one is
    returned as its :class:`InvalidTransition` (nothing of it is written).

    Set-based: the rows are read in one statement per :data:`_CHUNK` keys (locked, in
    primary-key order, on PostgreSQL), each change is checked against the status its job
    has at that point of the batch (a job may change several times in one batch), then the
    rows are written with one ``executemany`` per set of written columns and the history
    with one ``executemany``. ``change.fields`` are coerced managed fields.

    ``known`` gives the primary key, status and backend job id of jobs the caller read (and
    locked) in this transaction: they are not read again.

    Raises:
        JobError: an unknown key (nothing is written; the caller's transaction rolls back).
    """
    stmt = _SELECT_MANY_FOR_UPDATE if dialect == "postgresql" else _SELECT_MANY
    # key -> [pk, status, backend job id]
    current: dict[str, list[Any]] = {key: list(state) for key, state in (known or {}).items()}
    for chunk in chunks(sorted({c.job_key for c in changes} - current.keys())):
        for row in session.execute(stmt, {"keys": list(chunk)}):
            current[row.job_key] = [row.pk, JobStatus(row.status), row.id]
    now = utc_now()
    results: list[StatusChange | InvalidTransition] = []
    written: dict[int, dict[str, Any]] = {}  # pk -> values, merged in order of the changes
    history: list[dict[str, Any]] = []
    for change in changes:
        state = current.get(change.job_key)
        if state is None:
            raise JobError(f"unknown job {change.job_key!r}", job_key=change.job_key)
        pk, old, backend_job_id = state
        try:
            values, result = rules.plan_transition(change, old, backend_job_id, manager_id=manager_id,
                                                   user_retry=user_retry, now=now)
        except InvalidTransition as exc:
            results.append(exc)
            continue
        state[1], state[2] = result.new, result.backend_job_id
        written.setdefault(pk, {}).update(values)
        history.append(dict(job_pk=pk, old=old.value, new=result.new.value, at=result.at,
                            manager_id=manager_id, message=change.message,
                            backend_job_id=result.backend_job_id))
        results.append(result)
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for pk, values in written.items():
        by_columns.setdefault(tuple(sorted(values)), []).append({"_pk": pk, **prefixed(values)})
    for names, params in by_columns.items():
        BatchStatement.of(_update_statement("pk", names), session.dialect).execute_many(session, params)
    if history:
        BatchStatement.of(_INSERT_CHANGE, session.dialect, _HISTORY_KEYS).execute_many(session, history)
    return results


def history_rows(session: Connection, columns: Sequence[sa.ColumnElement[Any]],
                 keys: Sequence[str] | None = None) -> Iterator[sa.Row[Any]]:
    """``columns`` (of the job and history tables) of every status change, or of those of
    the jobs ``keys`` (one query per :data:`_CHUNK` of them), in the order written per job."""
    stmt = select(*columns).select_from(CHANGES.join(JOBS, JOBS.c.pk == CHANGES.c.job_pk)).order_by(CHANGES.c.id)
    if keys is None:
        yield from session.execute(stmt)
        return
    for chunk in chunks(list(dict.fromkeys(keys))):
        yield from session.execute(stmt.where(JOBS.c.job_key.in_(chunk)))


def read_histories(session: Connection, keys: Sequence[str] | None) -> dict[str, list[StatusChange]]:
    """The status changes of every job (or of ``keys``) in the order written, per job key."""
    c = CHANGES.c
    found: dict[str, list[StatusChange]] = {}
    for r in history_rows(session, (JOBS.c.job_key, c.old, c.new, c.at, c.manager_id, c.message,
                                    c.backend_job_id), keys):
        found.setdefault(r.job_key, []).append(StatusChange(
            job_key=r.job_key, old=None if r.old is None else JobStatus(r.old), new=JobStatus(r.new),
            at=r.at, manager_id=r.manager_id, message=r.message, backend_job_id=r.backend_job_id))
    return found
