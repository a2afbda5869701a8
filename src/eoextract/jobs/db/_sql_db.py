"""The SQL job database: SQLite (embedded default) and PostgreSQL through SQLAlchemy 2.

Every status change is one transaction holding the job's row update and its history row;
every update touches only the rows it changes. On SQLite the database runs in WAL mode
with ``synchronous=NORMAL`` and a busy timeout, and writing transactions start with
``BEGIN IMMEDIATE`` so several processes on one machine claim jobs safely. On PostgreSQL
claims use ``SELECT ... FOR UPDATE SKIP LOCKED`` (:mod:`~eoextract.jobs.db._sql_claims`),
so several managers on several machines share one database.

Opening a database checks its schema version: a newer one is refused, an older one is
migrated (:mod:`~eoextract.jobs.db._migrations`). Database errors surface as
:class:`~eoextract.errors.JobDatabaseError` with the driver's message only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from eoextract._util.lazy import lazy_module
from eoextract._util.utc import utc_now
from eoextract.errors import InvalidTransition, JobDatabaseError, JobError
from eoextract.jobs.db import _rules as rules
from eoextract.jobs.db import _sql_claims as claims
from eoextract.jobs.db._checked import checked
from eoextract.jobs.db._columns import UserSchema
from eoextract.jobs.db._connection import (
    BEGIN_OPTION,
    create_engine,
    describe_error,
    install_sqlite_hooks,
    is_unreachable,
    sqlite_file,
    strip_credentials,
    to_sqlalchemy_url,
)
from eoextract.jobs.db._frame import (
    MANAGED_KINDS,
    PreparedJobs,
    build_frame,
    parse_status,
    prepare_job_frame,
    status_values,
)
from eoextract.jobs.db._interface import CostTotals, JobDatabase
from eoextract.jobs.db._models import CREATED_BY, SCHEMA_VERSION, Base
from eoextract.jobs.db._records import Claimed, JobRecord, StatusChange, Transition
from eoextract.jobs.db._sql_rows import (
    BACKENDS,
    CHANGES,
    JOBS,
    META,
    RECORD_COLUMNS,
    RECORD_FIELDS,
    add_jobs,
    apply_transitions,
    chunks,
    existing_keys,
    merge_jobs,
    prefixed,
    read_histories,
    select_records,
    update_by_key,
)
from eoextract.jobs.db._sql_schema import migrate, read_meta, schema_version, write_meta
from eoextract.jobs.status import ACTIVE, TERMINAL, JobStatus

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
else:  # imported on first use: commands reading a few columns never need it
    pd = lazy_module("pandas", globals(), "pd")

_log = logging.getLogger(__name__)


_ANALYZE_AFTER = 10_000  # rows inserted at once after which PostgreSQL's statistics are renewed
_ACTIVE_COUNTS = (select(JOBS.c.backend_name, func.count())
                  .where(JOBS.c.status.in_(sorted(s.value for s in ACTIVE))).group_by(JOBS.c.backend_name))


@functools.lru_cache(maxsize=32)
def _any_with_status(values: tuple[str, ...]) -> sa.Select:
    """The query whether a job has one of ``values`` (one row or none). ORDER BY the index's first
    column, so the planner walks the index, never the table (with LIMIT 1 alone
    PostgreSQL may bet on a sequential scan over finished jobs). Built once per set of
    statuses: the run loop asks every pass."""
    return select(JOBS.c.status).where(JOBS.c.status.in_(values)).order_by(JOBS.c.status).limit(1)


class SqlJobDatabase(JobDatabase):
    """Jobs and their history in a SQL database (SQLite file or PostgreSQL).

    Args:
        url_or_engine: a SQLite path (``jobs.db``), a URL (``sqlite:///jobs.db``,
            ``postgresql://user@host/db``, ``postgresql+psycopg://...``) or an
            :class:`~sqlalchemy.engine.Engine`.
        busy_timeout: seconds SQLite waits for another process's write lock.

    Raises:
        JobDatabaseError: the SQLite file's folder does not exist, the database belongs to
            another tool, or it cannot be opened.
        SchemaVersionError: the database was written by a newer eoextract.
    """

    def __init__(self, url_or_engine: str | Path | URL | Engine, *, busy_timeout: float = 30.0):
        self._busy_timeout_ms = int(busy_timeout * 1000)
        if isinstance(url_or_engine, Engine):
            self._engine = url_or_engine
            self._url = url_or_engine.url
        else:
            self._url = url_or_engine if isinstance(url_or_engine, URL) else to_sqlalchemy_url(url_or_engine)
            self._engine = create_engine(self._url)
        self._dialect = self._engine.dialect.name
        self._file = sqlite_file(self._url) if self._dialect == "sqlite" else None
        if self._dialect == "sqlite":
            install_sqlite_hooks(self._engine, busy_timeout_ms=self._busy_timeout_ms)
        self._memory = self._dialect == "sqlite" and self._file is None
        self._lock = threading.RLock() if self._memory else contextlib.nullcontext()
        # Core connections (not ORM sessions): every statement here is a Core statement.
        self._read_session = self._engine.connect
        self._write_session = self._engine.execution_options(**{BEGIN_OPTION: "IMMEDIATE"}).connect
        self._schema: UserSchema | None = None
        self._meta: dict[str, Any] = {}
        self._exists: bool | None = None
        if self._file is None or self._file.exists():
            self._check()

    @contextlib.contextmanager
    def _session(self, write: bool = False) -> Iterator[Connection]:
        """A Core connection; the caller opens the transaction with ``.begin()``."""
        factory = self._write_session if write else self._read_session
        with self._lock, self._errors(), factory() as session:
            yield session

    @contextlib.contextmanager
    def _errors(self, doing: str | None = None) -> Iterator[None]:
        """Turn SQLAlchemy's errors into :class:`JobDatabaseError` with a short message."""
        try:
            yield
        except SQLAlchemyError as exc:
            raise self._error(exc, doing) from exc

    def _error(self, exc: SQLAlchemyError, doing: str | None = None) -> JobDatabaseError:
        where = self._url.render_as_string(hide_password=True)
        if is_unreachable(exc):
            return JobDatabaseError(f"job database {where} is unreachable: {describe_error(exc)}")
        prefix = f"cannot {doing} job database" if doing else "job database"
        return JobDatabaseError(f"{prefix} {where}: {describe_error(exc)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine."""
        return self._engine

    # -- schema ----------------------------------------------------------------------------
    def _check(self) -> bool:
        """Read and check ``meta`` (migrating an older schema); returns whether the
        database holds our tables."""
        name = repr(self)
        with self._lock, self._errors("open"):
            with self._engine.connect() as conn:
                meta = read_meta(conn, self._dialect, name)
            if meta is None:
                self._exists = False
                return False
            if schema_version(meta, name) < SCHEMA_VERSION:
                with self._write_session() as conn, conn.begin():
                    meta = migrate(conn, self._dialect, name)
        self._meta = meta
        self._schema = UserSchema.from_dict(meta.get("user_columns"))
        self._exists = True
        return True

    def _write_meta(self, session: Connection, **values: Any) -> None:
        write_meta(session, **values)
        self._meta.update(values)

    @property
    def schema(self) -> UserSchema:
        """Dtypes of the user columns (empty before initialisation)."""
        return self._schema or UserSchema()

    @property
    def key_column(self) -> str | None:
        """The column whose values are the job keys (``None``: the dataframe index)."""
        return self._meta.get("key_column")

    # -- openeo's interface ------------------------------------------------------------------
    def exists(self) -> bool:
        if self._file is not None and not self._file.exists():
            return False
        if not self._exists:
            self._check()
        return bool(self._exists)

    def _require(self) -> None:
        if not self.exists():
            raise JobDatabaseError(f"{self!r} has no jobs table yet; use initialize_from_df() "
                                   f"or create_job_db()")

    def _initialize(self, prepared: PreparedJobs, *, exists: bool, key_column: str | None) -> bool:
        """Create the tables and insert the jobs (see :meth:`JobDatabase.initialize_from_df`)."""
        now = utc_now()
        with self._session(write=True) as session, session.begin():
            # Another process may have created the tables while this one waited for the lock.
            created_meanwhile = not exists and sa.inspect(session).has_table(META.name)
            if not created_meanwhile:
                if not exists:
                    Base.metadata.create_all(session)
                    self._schema = prepared.schema
                    self._write_meta(
                        session, created_by=CREATED_BY, schema_version=SCHEMA_VERSION,
                        created_at=now.isoformat(), key_column=key_column,
                        user_columns=self._schema.to_dict(), geometry_column=self._schema.geometry,
                        crs=(self._schema.spec(self._schema.geometry).crs
                             if self._schema.geometry else None))
                    known: set[str] = set()
                else:
                    known = existing_keys(session, prepared.keys)
                    if self.schema.extend(prepared.user):
                        self._write_meta(session, user_columns=self.schema.to_dict())
                added = add_jobs(session, prepared, self.schema, known, now)
                if self._dialect == "postgresql" and added >= _ANALYZE_AFTER:
                    # fresh statistics, so the first claims already get index plans
                    session.exec_driver_sql("ANALYZE jobs")
        if created_meanwhile:  # to be started again, now as an existing database
            self._exists = None
            self._check()
            return False
        self._exists = True
        _log.info("Job database %r: %d jobs added", self, added)
        return True

    def read(self) -> pd.DataFrame:
        return self._frame(None)

    def _frame(self, where: Any, limit: int | None = None) -> pd.DataFrame:
        self._require()
        stmt = select(*RECORD_COLUMNS).order_by(JOBS.c.pk)
        if where is not None:
            stmt = stmt.where(where)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._session() as session, session.begin():
            rows = session.execute(stmt).all()
        return self._rows_to_frame(rows)

    def _rows_to_frame(self, rows: Sequence[sa.Row]) -> pd.DataFrame:
        index = pd.Index([r.job_key for r in rows], name="job_key", dtype=object)
        user = self.schema.decode_records([r.data or {} for r in rows], index)
        managed = {name: [getattr(r, name) for r in rows] for name in MANAGED_KINDS}
        return build_frame(user, managed, self.schema)

    def persist(self, df: pd.DataFrame) -> None:
        """Insert or update the given rows only (matched on ``job_key``, else on the index).

        Managed columns present in ``df`` are written as given; a changed ``status`` gets a
        history row (message ``"persist"``) but is not checked against the status model,
        since openeo's manager writes statuses this way. New user columns are added.
        """
        self._require()
        prepared = prepare_job_frame(df, self.key_column if self.key_column in df.columns else None)
        now = utc_now()
        with self._session(write=True) as session, session.begin():
            if self.schema.extend(prepared.user):
                self._write_meta(session, user_columns=self.schema.to_dict())
            known = merge_jobs(session, prepared, self.schema, now)
            add_jobs(session, prepared, self.schema, known, now)

    def count_by_status(self, statuses: Iterable[str] = ()) -> dict[str, int]:
        wanted = {parse_status(s).value for s in statuses}
        stmt = select(JOBS.c.status, func.count()).group_by(JOBS.c.status)
        if wanted:
            stmt = stmt.where(JOBS.c.status.in_(wanted))
        self._require()
        with self._session() as session, session.begin():
            return {status: n for status, n in session.execute(stmt)}

    def cost_totals(self) -> CostTotals:
        # one pass over ix_jobs_status_backend (status, backend_name, lease_until, costs)
        c = JOBS.c
        stmt = (select(c.status, c.backend_name, func.sum(c.costs), func.count(c.costs), func.count())
                .group_by(c.status, c.backend_name))
        self._require()
        with self._session() as session, session.begin():
            groups = session.execute(stmt).all()
        ended = {"finished", "error", "canceled"}
        by_backend: dict[str, float] = {}
        for _, backend, spent, n, _ in groups:
            if n:
                by_backend[str(backend)] = by_backend.get(str(backend), 0.0) + float(spent)
        return CostTotals(sum(by_backend.values()), sum(n for *_, n, _ in groups),
                          sum(total - n for status, _, _, n, total in groups if status in ended),
                          by_backend)

    def any_with_status(self, statuses: Iterable[JobStatus | str]) -> bool:
        values = status_values(statuses)
        if not values:
            return False
        self._require()
        with self._session() as session, session.begin():
            return session.execute(_any_with_status(tuple(sorted(values)))).first() is not None

    def get_by_status(self, statuses: Iterable[str], max: int | None = None) -> pd.DataFrame:
        return self._frame(JOBS.c.status.in_(status_values(statuses)), limit=max)

    def read_where(self, statuses: Iterable[JobStatus | str] | None = None, *,
                   backend_name: str | None = None, limit: int | None = None) -> pd.DataFrame:
        conditions = []
        if statuses is not None:
            conditions.append(JOBS.c.status.in_(status_values(statuses)))
        if backend_name is not None:
            conditions.append(JOBS.c.backend_name == backend_name)
        return self._frame(sa.and_(*conditions) if conditions else None, limit=limit)

    def get_by_indices(self, indices: Iterable[Any]) -> pd.DataFrame:
        keys = [str(i) for i in indices]
        frames = [self._frame(JOBS.c.job_key.in_(chunk)) for chunk in chunks(keys)]
        if not frames:
            return self._frame(sa.false())
        return frames[0] if len(frames) == 1 else pd.concat(frames)

    # -- the manager's interface ---------------------------------------------------------------
    def _record(self, row: sa.Row) -> JobRecord:
        """A record of a row of :data:`RECORD_COLUMNS` (read by position: much faster)."""
        pk, job_key, status, *fields, data = row
        return JobRecord(pk=pk, job_key=job_key, status=JobStatus(status),
                         fields=dict(zip(RECORD_FIELDS, fields, strict=True)),
                         row=self.schema.decode_row(data or {}))

    def _jobs(self, statuses: list[str] | None, backend_name: str | None,
              keys: list[str] | None, *, limit: int | None = None,
              latest_first: bool = False) -> list[JobRecord]:
        self._require()
        stmt = select_records(statuses is not None, backend_name is not None, keys is not None,
                              limit is not None, latest_first)
        params = {"statuses": statuses, "backend": backend_name, "limit": limit}
        with self._session() as session, session.begin():
            if keys is None:
                rows = session.execute(stmt, params).all()
            else:
                rows = [r for chunk in chunks(keys)
                        for r in session.execute(stmt, {**params, "keys": list(chunk)})]
                if limit is not None or latest_first:  # ordered and cut across the chunks
                    rows.sort(key=lambda r: r.pk)
                    if latest_first:  # stable: equal times stay in table order
                        rows.sort(key=lambda r: (r.updated_at is not None, r.updated_at or 0),
                                  reverse=True)
                    rows = rows[:limit]
        return [self._record(r) for r in rows]

    def get(self, job_key: str) -> JobRecord:
        found = self.jobs(keys=[job_key])
        if not found:
            raise JobError(f"unknown job {job_key!r} in {self!r}", job_key=job_key)
        return found[0]

    def _claim(self, claim: rules.Claim) -> list[JobRecord]:
        """Claim jobs (see :meth:`JobDatabase.claim`).

        On PostgreSQL rows being claimed by another manager are skipped (``FOR UPDATE SKIP
        LOCKED``); on SQLite claims are serialised.
        """
        self._require()
        if claim.limit <= 0:
            return []
        with self._session(write=True) as session, session.begin():
            rows = claims.claim_rows(session, self._dialect, claim)
        return [self._record(r) for r in rows]

    def _claim_and_transition(self, claim: rules.Claim, change: Callable[[JobRecord], Transition]
                              ) -> list[Claimed]:
        """Claim and transition in one transaction (see :meth:`JobDatabase.claim_and_transition`)."""
        self._require()
        if claim.limit <= 0:
            return []
        with self._session(write=True) as session, session.begin():
            records = [self._record(r) for r in claims.claim_rows(session, self._dialect, claim)]
            changes = [change(rec) for rec in records]
            known = {rec.job_key: (rec.pk, rec.status, rec.backend_job_id) for rec in records}
            outcomes = apply_transitions(session, self._dialect, [checked(c) for c in changes],
                                         manager_id=claim.manager_id, user_retry=False, known=known)
        return list(zip(records, changes, outcomes, strict=True))

    def unpin_unknown_backends(self, names: Iterable[str]) -> dict[str, str]:
        self._require()
        with self._session(write=True) as session, session.begin():
            return claims.unpin(session, self._dialect, list(names), utc_now())

    def _adopt(self, adoption: rules.Adoption) -> list[JobRecord]:
        self._require()
        with self._session(write=True) as session, session.begin():
            rows, holders = claims.adopt_rows(session, self._dialect, adoption)
        if rows:
            _log.info("Manager %s adopted %d jobs with expired leases (held by %s)",
                      adoption.manager_id, len(rows), ", ".join(sorted(str(h) for h in holders)))
        return [self._record(r) for r in rows]

    def _apply_transitions(
        self, changes: Sequence[Transition], *, manager_id: str | None, user_retry: bool
    ) -> list[StatusChange | InvalidTransition]:
        """Apply transitions in one database transaction (see :meth:`JobDatabase.transition`)."""
        self._require()
        with self._session(write=True) as session, session.begin():
            return apply_transitions(session, self._dialect, changes, manager_id=manager_id,
                                     user_retry=user_retry)

    def _update(self, job_key: str, values: dict[str, Any]) -> None:
        self._require()
        values["updated_at"] = utc_now()
        with self._session(write=True) as session, session.begin():
            result = session.execute(update_by_key(values), {"_key": job_key, **prefixed(values)})
            if result.rowcount == 0:
                raise JobError(f"unknown job {job_key!r}", job_key=job_key)

    def history(self, job_key: str) -> list[StatusChange]:
        return self.histories([job_key]).get(job_key, [])

    def histories(self, keys: Iterable[str] | None = None) -> dict[str, list[StatusChange]]:
        self._require()
        with self._session() as session, session.begin():
            return read_histories(session, None if keys is None else [str(k) for k in keys])

    def active_counts(self) -> dict[str, int]:
        self._require()
        with self._session() as session, session.begin():
            return {name: n for name, n in session.execute(_ACTIVE_COUNTS) if name is not None}

    def _renew(self, manager_id: str, values: Mapping[str, Any]) -> int:
        self._require()
        with self._session(write=True) as session, session.begin():
            return claims.renew(session, manager_id, values)

    def lease_holders(self) -> set[str]:
        """Managers holding a lease on some open job (one indexed query)."""
        if not self.exists():
            return set()
        stmt = (select(JOBS.c.claimed_by).distinct()
                .where(JOBS.c.claimed_by.is_not(None),
                       JOBS.c.status.not_in([s.value for s in TERMINAL])))
        with self._session() as session, session.begin():
            return set(session.scalars(stmt))

    def release(self, manager_id: str) -> None:
        if not self.exists():
            return
        with self._session(write=True) as session, session.begin():
            claims.release(session, manager_id)

    def register_backend(self, name: str, url: str | None) -> None:
        self._require()
        url = strip_credentials(url)
        with self._session(write=True) as session, session.begin():
            known = session.execute(select(BACKENDS.c.name).where(BACKENDS.c.name == name)).first()
            if known:
                session.execute(update(BACKENDS).where(BACKENDS.c.name == name).values(url=url))
            else:
                session.execute(insert(BACKENDS).values(name=name, url=url, registered_at=utc_now()))

    def backend_state(self) -> dict[str, Any]:
        if not self.exists():
            return {}
        with self._session() as session, session.begin():
            value = session.scalar(select(META.c.value).where(META.c.key == "backend_state"))
        return dict(value or {})

    def save_backend_state(self, state: Mapping[str, Any]) -> None:
        self._require()
        with self._session(write=True) as session, session.begin():
            self._write_meta(session, backend_state=dict(state))

    def backends(self) -> dict[str, str | None]:
        if not self.exists():
            return {}
        with self._session() as session, session.begin():
            return {n: u for n, u in session.execute(select(BACKENDS.c.name, BACKENDS.c.url))}

    def close(self) -> None:
        self._engine.dispose()
