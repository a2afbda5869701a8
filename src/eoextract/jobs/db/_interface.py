"""The job database interface.

A superset of openeo's ``JobDatabaseInterface`` (``exists``, ``persist``, ``count_by_status``,
``get_by_status``, ``get_by_indices``, ``initialize_from_df``, ``read``) plus what the
:class:`~eoextract.jobs.JobManager` needs: claim jobs to work on, change one job's
status (with its history row, in one transaction), update fields, read a job's history,
count active jobs per backend, remember registered backends.

The columns of a job are listed in :mod:`~eoextract.jobs.db._records`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from contextlib import AbstractContextManager
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Self, get_args

from eoextract._util.utc import as_utc
from eoextract.errors import ConfigurationError, InvalidTransition, JobDatabaseError
from eoextract.jobs.db import _rules as rules
from eoextract.jobs.db._checked import checked, coerce_fields
from eoextract.jobs.db._columns import parse_as_column
from eoextract.jobs.db._frame import (
    EXACT_STATUS_COLUMN,
    PreparedJobs,
    prepare_job_frame,
    status_values,
)
from eoextract.jobs.db._records import UPDATABLE_FIELDS, Claimed, JobRecord, StatusChange, Transition
from eoextract.jobs.status import TERMINAL, JobStatus

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


#: What :meth:`JobDatabase.initialize_from_df` does with a database that exists.
OnExists = Literal["error", "skip", "append"]


@dataclass(frozen=True)
class CostTotals:
    """Credits spent: their sum, the jobs that reported costs, and the ended jobs that did not."""

    spent: float = 0.0
    jobs_with_costs: int = 0
    ended_without_costs: int = 0
    #: Credits spent per backend.
    by_backend: Mapping[str, float] = field(default_factory=dict)


class JobDatabase(abc.ABC):
    """Storage of jobs and their status history.

    Implementations: :class:`~eoextract.jobs.db.SqlJobDatabase` (SQLite, PostgreSQL) and
    :class:`~eoextract.jobs.db.FileJobDatabase` (openeo-compatible CSV / Parquet).
    """

    #: Held while :meth:`initialize_from_df` checks and fills the database (a lock, or a
    #: ``contextlib.nullcontext()`` where the database serialises writers itself).
    _lock: AbstractContextManager[Any]

    # -- openeo's JobDatabaseInterface -------------------------------------------------
    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the database already holds a job table."""

    @abc.abstractmethod
    def read(self) -> pd.DataFrame:
        """All jobs as a dataframe indexed by ``job_key`` (a GeoDataFrame when there is geometry)."""

    @abc.abstractmethod
    def persist(self, df: pd.DataFrame) -> None:
        """Insert or update the given rows (matched on ``job_key``, else on the index).

        Only the given rows are written; status changes made this way are recorded in the
        history too (message ``"persist"``).
        """

    @abc.abstractmethod
    def count_by_status(self, statuses: Iterable[str] = ()) -> dict[str, int]:
        """Number of jobs per status (only the given statuses when some are given)."""

    def any_with_status(self, statuses: Iterable[JobStatus | str]) -> bool:
        """Whether any job has one of ``statuses``; unlike :meth:`count_by_status`, the
        SQL databases answer from the first index entry, whatever the table's size."""
        wanted = [str(s) for s in statuses]
        return bool(wanted) and any(self.count_by_status(wanted).values())

    @abc.abstractmethod
    def get_by_status(self, statuses: Iterable[str], max: int | None = None) -> pd.DataFrame:
        """Jobs whose status is one of ``statuses`` (at most ``max``), as a dataframe."""

    def read_where(
        self,
        statuses: Iterable[JobStatus | str] | None = None,
        *,
        backend_name: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Jobs in table order as a dataframe, filtered by status and backend, at most
        ``limit``; SQL databases read only these rows."""
        df = self.read()
        if statuses is not None:
            df = df[df["status"].astype(str).isin(status_values(statuses))]
        if backend_name is not None:
            df = df[df["backend_name"] == backend_name]
        return df.head(limit) if limit is not None else df

    @abc.abstractmethod
    def get_by_indices(self, indices: Iterable[Any]) -> pd.DataFrame:
        """Jobs with the given ``job_key`` values, as a dataframe."""

    def initialize_from_df(
        self,
        df: pd.DataFrame,
        *,
        on_exists: OnExists = "error",
        key_column: str | None = None,
    ) -> Self:
        """Fill a new database from a job dataframe and return ``self``.

        Every row is checked before anything is written; an empty dataframe makes an empty
        database (its columns are remembered).

        Args:
            df: the jobs, one per row.
            on_exists: ``"error"`` raises when the database exists, ``"skip"`` leaves it
                as it is, ``"append"`` adds the rows whose key is not in it yet.
            key_column: column holding stable job keys (default: the dataframe index); an
                existing database keeps the key column it was created with.

        Raises:
            ConfigurationError: bad job dataframe (duplicate keys, reserved column names
                holding other things, geometry without CRS), bad ``on_exists``, or a
                ``key_column`` other than the existing database's.
            JobDatabaseError: the database exists and ``on_exists="error"``.
        """
        if on_exists not in get_args(OnExists):
            raise ConfigurationError(f"on_exists must be 'error', 'skip' or 'append', got {on_exists!r}")
        while True:
            with self._lock:
                exists = self.exists()
                if exists:
                    if on_exists == "skip":
                        return self
                    if on_exists == "error":
                        raise JobDatabaseError(f"job database {self!r} already exists (use on_exists="
                                               f"'skip' to resume it or 'append' to add rows)")
                    if key_column is not None and key_column != self.key_column:
                        raise ConfigurationError(f"{self!r} is keyed on {self.key_column!r}, "
                                                 f"not {key_column!r}")
                prepared = prepare_job_frame(df, self.key_column if exists else key_column)
                if self._initialize(prepared, exists=exists, key_column=key_column):
                    return self
            # another process created the database meanwhile: start again, as an existing one

    @abc.abstractmethod
    def _initialize(self, prepared: PreparedJobs, *, exists: bool, key_column: str | None) -> bool:
        """Create the database from ``prepared`` with ``key_column`` (or add the new rows to
        the existing one); called by :meth:`initialize_from_df` under :attr:`_lock` once
        the arguments are checked.

        Returns:
            ``False`` when the database turned out to have been created meanwhile (by
            another process) and nothing was written, else ``True``.
        """

    @property
    @abc.abstractmethod
    def key_column(self) -> str | None:
        """The column whose values are the job keys (``None``: the dataframe index)."""

    # -- what the manager needs ----------------------------------------------------------
    def jobs(
        self,
        statuses: Iterable[JobStatus | str] | None = None,
        *,
        backend_name: str | None = None,
        keys: Sequence[str] | None = None,
        limit: int | None = None,
        latest_first: bool = False,
    ) -> list[JobRecord]:
        """Jobs as records in table order (``latest_first``: latest update first), filtered
        by status, backend and/or keys (other statuses are left out), at most ``limit``."""
        return self._jobs(None if statuses is None else status_values(statuses), backend_name,
                          None if keys is None else [str(k) for k in keys], limit=limit,
                          latest_first=latest_first)

    @abc.abstractmethod
    def _jobs(self, statuses: list[str] | None, backend_name: str | None,
              keys: list[str] | None, *, limit: int | None = None,
              latest_first: bool = False) -> list[JobRecord]:
        """Jobs as records (see :meth:`jobs`), filtered by status values, backend and/or keys."""

    @abc.abstractmethod
    def get(self, job_key: str) -> JobRecord:
        """One job by key; raises :class:`~eoextract.errors.JobError` when unknown."""

    def claim(
        self,
        limit: int,
        *,
        manager_id: str,
        now: datetime,
        lease_seconds: float = 300.0,
        backend_name: str | None = None,
        max_active: int | None = None,
    ) -> list[JobRecord]:
        """Claim up to ``limit`` jobs that are ``not_started`` and due (``next_attempt_at``).

        A claimed job carries ``claimed_by=manager_id`` and ``lease_until=now+lease``; jobs
        whose lease is held by another manager and not expired are never returned (a
        manager's own claims may be returned again). Jobs pinned to another backend are
        skipped when ``backend_name`` is given: a row is pinned when its ``backend_name``
        names another registered backend (:meth:`register_backend`), or, while no backend
        is registered, when it holds any other non-empty name. Order: jobs never given a
        ``next_attempt_at`` first, then by ``next_attempt_at``, ties by primary key
        (dataframe order).

        ``max_active`` (with ``backend_name``) caps the backend's slots across every
        manager sharing the database: the claim returns at most ``max_active`` minus the
        jobs in an :data:`~eoextract.jobs.status.ACTIVE` status on that backend and the
        ``not_started`` jobs claimed for it under a valid lease (by any manager, this one
        included). Claimed jobs then carry ``backend_name``, and counting and claiming
        happen atomically, so several managers never exceed the cap together.
        """
        return self._claim(rules.Claim.of(limit, manager_id, as_utc(now), lease_seconds,
                                          backend_name, max_active))

    def claim_and_transition(self, limit: int, change: Callable[[JobRecord], Transition], *, manager_id: str,
                             now: datetime, lease_seconds: float = 300.0, backend_name: str | None = None,
                             max_active: int | None = None) -> list[Claimed]:
        """Claim jobs as :meth:`claim` does, then apply ``change(record)`` to each claimed job
        as :meth:`transition_many` does (by ``manager_id``): how a manager takes jobs and marks
        them ``creating``. SQL databases do both in one transaction, reading no row twice.

        Returns:
            Each claimed record (as claimed), its change and the change's outcome, in claim order.
        """
        claim = rules.Claim.of(limit, manager_id, as_utc(now), lease_seconds, backend_name, max_active)
        return self._claim_and_transition(claim, change)

    def _claim_and_transition(self, claim: rules.Claim, change: Callable[[JobRecord], Transition]
                              ) -> list[Claimed]:
        """:meth:`claim_and_transition` in two steps (SQL databases override it with one)."""
        records = self._claim(claim)
        changes = [change(r) for r in records]
        outcomes = self.transition_many(changes, manager_id=claim.manager_id)
        return list(zip(records, changes, outcomes, strict=True))

    def unpin_unknown_backends(self, names: Iterable[str]) -> dict[str, str]:
        """Empty the ``backend_name`` of ``not_started`` jobs pinned to a name not in
        ``names`` (any backend may run them); returns their keys and former names. SQL
        databases read only those rows (an index range), never every waiting job."""
        known = set(names)
        found = {r.job_key: str(r.backend_name) for r in self.jobs([JobStatus.NOT_STARTED])
                 if r.backend_name and r.backend_name not in known}
        for key in found:
            self.update(key, backend_name=None)
        return found

    @abc.abstractmethod
    def _claim(self, claim: rules.Claim) -> list[JobRecord]:
        """Carry out a claim with the rules of :mod:`~eoextract.jobs.db._rules`."""

    def transition(
        self,
        job_key: str,
        new: JobStatus | str,
        *,
        message: str | None = None,
        manager_id: str | None = None,
        user_retry: bool = False,
        expect: JobStatus | str | None = None,
        **fields: Any,
    ) -> StatusChange:
        """Move one job to ``new`` and set ``fields``, with its history row, in one transaction.

        Raises :class:`~eoextract.errors.InvalidTransition` when the status model forbids it,
        or when ``expect`` is given and the current status differs (another manager moved it);
        :class:`~eoextract.errors.JobError` for an unknown key; ``ValueError`` for a field
        not in :data:`UPDATABLE_FIELDS`. ``updated_at`` is set by the database; ``message``
        and ``error_message`` are stored redacted (:func:`~eoextract._util.redact.redact`). Moving to
        ``not_started`` or a final status drops the lease (``claimed_by``/``lease_until``)
        unless those fields are given.
        """
        change = checked(Transition(job_key, new, message, expect, fields))  # type: ignore[arg-type]
        (result,) = self._apply_transitions([change], manager_id=manager_id, user_retry=user_retry)
        if isinstance(result, InvalidTransition):
            raise result
        return result

    def transition_many(
        self, changes: Sequence[Transition], *, manager_id: str | None = None
    ) -> list[StatusChange | InvalidTransition]:
        """Apply several transitions; each is checked on its own (a refused one is returned
        as its :class:`InvalidTransition`, the others still apply).

        SQL databases apply them in one transaction, which is much cheaper than one each.
        """
        if not changes:
            return []
        return self._apply_transitions([checked(c) for c in changes], manager_id=manager_id,
                                       user_retry=False)

    @abc.abstractmethod
    def _apply_transitions(
        self, changes: Sequence[Transition], *, manager_id: str | None, user_retry: bool
    ) -> list[StatusChange | InvalidTransition]:
        """Apply checked requests (statuses parsed, fields coerced) with
        :func:`~eoextract.jobs.db._rules.plan_transition`, in one transaction where the
        database has them; a refused one is returned as its :class:`InvalidTransition`.

        Raises:
            JobError: an unknown key.
        """

    def update(self, job_key: str, **fields: Any) -> None:
        """Set fields of one job (never ``status``); ``updated_at`` is set too.

        Fields in :data:`UPDATABLE_FIELDS` are managed columns (``output_dir``,
        ``output_published_at``, ...); any other name is one of the user's columns (e.g.
        ``output_path``, ``product_id``), existing or new: a value is stored with the type of
        its column (a text date in a date column becomes a date), a new column takes the
        type of its first value and is ``None`` for the other jobs.

        Raises:
            JobError: an unknown key.
            ValueError: ``status``, ``job_key`` or the key column (keys never change).
        """
        if "status" in fields:
            raise ValueError("status changes go through transition()")
        user = {k: v for k, v in fields.items() if k not in UPDATABLE_FIELDS}
        fixed = sorted({"job_key", EXACT_STATUS_COLUMN, self.key_column} & set(user))
        if fixed:
            raise ValueError(f"cannot set {fixed!r}: a job's key does not change")
        if any(not isinstance(k, str) or not k for k in user):
            raise ValueError(f"column names must be non-empty text, got {list(user)!r}")
        managed = self._coerce({k: v for k, v in fields.items() if k in UPDATABLE_FIELDS})
        if managed or not user:
            self._update(job_key, managed)
        if user:
            self._update_user(job_key, user)

    def _update_user(self, job_key: str, values: dict[str, Any]) -> None:
        """Write user columns of one existing job (through :meth:`persist`, which writes
        only the given row and columns)."""
        import pandas as pd

        current = self.get(job_key).row
        schema = getattr(self, "schema", None)
        converted = {name: parse_as_column(schema.spec(name) if schema is not None else None, current.get(name), value)
                     for name, value in values.items()}
        self.persist(pd.DataFrame({"job_key": [job_key], **{k: [v] for k, v in converted.items()}}))

    @abc.abstractmethod
    def _update(self, job_key: str, values: dict[str, Any]) -> None:
        """Write coerced managed values and ``updated_at`` to one job's row."""

    @staticmethod
    def _coerce(fields: Mapping[str, Any]) -> dict[str, Any]:
        """``fields`` as stored (see :func:`~eoextract.jobs.db._checked.coerce_fields`)."""
        return coerce_fields(fields)

    @abc.abstractmethod
    def history(self, job_key: str) -> list[StatusChange]:
        """The status changes of one job, oldest first."""

    def histories(self, keys: Iterable[str] | None = None) -> dict[str, list[StatusChange]]:
        """The status changes of many jobs, oldest first per job: job key → changes, for
        every job (or each of ``keys``) that has any. Asked job by job here; databases
        override it to read their history once (a summary stays linear in the jobs)."""
        wanted = [rec.job_key for rec in self.jobs()] if keys is None else [str(k) for k in keys]
        return {key: changes for key in dict.fromkeys(wanted) if (changes := self.history(key))}

    @abc.abstractmethod
    def active_counts(self) -> dict[str, int]:
        """Number of jobs per backend in an active status (holding a slot)."""

    def renew_leases(self, manager_id: str, *, now: datetime, lease_seconds: float) -> int:
        """Extend the leases ``manager_id`` holds on jobs not in a final status to
        ``now + lease_seconds``; returns how many were renewed.

        A job another manager has adopted meanwhile is no longer ``manager_id``'s and is not
        renewed (compare the count with the jobs the manager believes it holds).
        """
        return self._renew(manager_id, rules.renewed_lease(as_utc(now), lease_seconds))

    @abc.abstractmethod
    def _renew(self, manager_id: str, values: Mapping[str, Any]) -> int:
        """Write ``values`` to the rows :func:`~eoextract.jobs.db._rules.renewable` selects."""

    def lease_holders(self) -> set[str]:
        """Managers holding a lease on some job that is not in a final status."""
        return {r.fields.get("claimed_by") for r in self.jobs(set(JobStatus) - TERMINAL)} - {None}

    @abc.abstractmethod
    def release(self, manager_id: str) -> None:
        """Drop every lease held by ``manager_id`` (clean shutdown)."""

    def adopt_expired(
        self,
        manager_id: str,
        *,
        now: datetime,
        lease_seconds: float,
        limit: int | None = None,
        backend_names: Iterable[str] | None = None,
    ) -> list[JobRecord]:
        """Take over jobs whose manager stopped renewing its lease, atomically.

        Returns up to ``limit`` jobs in an :data:`~eoextract.jobs.db.ADOPTABLE` status (``creating`` …
        ``postprocessing``) whose lease has expired (``lease_until <= now``) or that carry
        no lease at all (a database written by a single manager, or leases dropped by
        :meth:`release`), held by another manager or by none; they now carry
        ``claimed_by=manager_id`` and ``lease_until=now+lease_seconds``. The status is not
        changed and no history row is written: the adopting manager reconciles each job
        with its backend. With ``backend_names``, only jobs on those backends are taken.
        Concurrent callers never adopt the same job. Order: primary key.
        """
        return self._adopt(rules.Adoption.of(manager_id, as_utc(now), lease_seconds, limit,
                                             backend_names))

    @abc.abstractmethod
    def _adopt(self, adoption: rules.Adoption) -> list[JobRecord]:
        """Carry out an adoption with the rules of :mod:`~eoextract.jobs.db._rules`."""

    @abc.abstractmethod
    def register_backend(self, name: str, url: str | None) -> None:
        """Remember a backend's name and root URL (never credentials)."""

    @abc.abstractmethod
    def backends(self) -> dict[str, str | None]:
        """Registered backends: name → URL."""

    def cost_totals(self) -> CostTotals:
        """Credits the backends reported for this database's jobs, for budgets and reports."""
        table = self.read()
        costs = table["costs"].astype(float) if "costs" in table else None
        if costs is None or not len(table):
            return CostTotals()
        ended = table["status"].astype(str).isin(["finished", "error", "canceled"])
        per_backend = costs.groupby(table["backend_name"].astype(str)).sum(min_count=1).dropna()
        return CostTotals(spent=float(costs.sum(skipna=True)), jobs_with_costs=int(costs.notna().sum()),
                          ended_without_costs=int((ended & costs.isna()).sum()),
                          by_backend={str(k): float(v) for k, v in per_backend.items()})

    def backend_state(self) -> dict[str, Any]:
        """What managers learned about the backends (e.g. ``{"capacity": {"cdse": 2}}``),
        kept across runs; empty where the database cannot keep it."""
        return dict(getattr(self, "_backend_state", {}))

    def save_backend_state(self, state: Mapping[str, Any]) -> None:
        """Keep what managers learned about the backends (see :meth:`backend_state`)."""
        self._backend_state = dict(state)

    def flush(self) -> None:
        """Write pending changes (file databases batch their saves; SQL commits at once)."""

    def close(self) -> None:
        """Release connections and write pending changes."""
        self.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

