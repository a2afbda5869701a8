"""The job database interface.

A superset of openeo's ``JobDatabaseInterface`` (``exists``, ``persist``, ``count_by_status``,
``get_by_status``, ``get_by_indices``, ``initialize_from_df``, ``read``) plus what the
:class:`~eoextract.jobs.manager.JobManager` needs: claim jobs to work on, change one job's
status (with its history row, in one transaction), update fields, read a job's history,
count active jobs per backend, remember registered backends.

Columns of a job (besides the user's own columns):

========================  ==========================================================
``job_key``               stable unique key (dataframe index or a ``key_column``)
``id``                    the backend's job id (openeo's column name)
``backend_name``          backend that runs (or ran) the job
``status``                manager status (:class:`~eoextract.jobs.status.JobStatus`)
``backend_status``        raw status the backend reported, kept apart
``attempt``               number of the current attempt (0 before the first)
``next_attempt_at``       not to be claimed before this time (retry backoff)
``create_tag``            unique tag put in the job description before creation
``error_class``           short class of the last error (e.g. ``RetryableBackendError``)
``error_message``         its message
``created_at`` …          ``start_time``, ``running_start_time``, ``end_time``, ``updated_at``
``cpu`` …                 usage: ``memory``, ``duration``, ``costs``
``output_dir``            where the job's results went
``input_published_at``    timeliness (seed 002), from an optional user column
``output_published_at``   set when the job's items were published
``claimed_by``            lease: manager id holding the job, until ``lease_until``
========================  ==========================================================
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import pandas as pd

from eoextract.errors import InvalidTransition
from eoextract.jobs.status import ACTIVE, TERMINAL, JobStatus


#: Columns eoextract manages; a user dataframe may carry them only with compatible values
#: (e.g. openeo's own files carry ``id``, ``status``, ``backend_name``, ``start_time``, ...).
MANAGED_COLUMNS: tuple[str, ...] = (
    "job_key",
    "id",
    "backend_name",
    "status",
    "backend_status",
    "attempt",
    "next_attempt_at",
    "create_tag",
    "error_class",
    "error_message",
    "created_at",
    "start_time",
    "running_start_time",
    "end_time",
    "updated_at",
    "cpu",
    "memory",
    "duration",
    "costs",
    "output_dir",
    "input_published_at",
    "output_published_at",
    "claimed_by",
    "lease_until",
)

#: Fields that :meth:`JobDatabase.transition` and :meth:`JobDatabase.update` may set.
UPDATABLE_FIELDS: frozenset[str] = frozenset(MANAGED_COLUMNS) - {"job_key", "status"}

#: Statuses in which one manager looks after a job under its lease (the job is on the
#: backend or its results are being fetched): another manager adopts such a job once the
#: lease has expired (:meth:`JobDatabase.adopt_expired`).
ADOPTABLE: frozenset[JobStatus] = ACTIVE | {JobStatus.DOWNLOADING, JobStatus.POSTPROCESSING}


@dataclass(frozen=True)
class JobRecord:
    """One job as read from the database (plain data, safe to hand to threads).

    Attributes:
        pk: internal integer primary key.
        job_key: the stable unique key of the job.
        status: manager status.
        fields: every managed column but ``job_key``/``status`` (``id``, ``attempt``, ...).
        row: the user's columns (geometry as a shapely geometry where there is one).
    """

    pk: int
    job_key: str
    status: JobStatus
    fields: Mapping[str, Any] = field(default_factory=dict)
    row: Mapping[str, Any] = field(default_factory=dict)

    @property
    def backend_job_id(self) -> str | None:
        """The backend's job id (``id`` column), if the job was created."""
        return self.fields.get("id")

    @property
    def backend_name(self) -> str | None:
        return self.fields.get("backend_name")

    @property
    def attempt(self) -> int:
        return int(self.fields.get("attempt") or 0)

    def as_series(self) -> pd.Series:
        """The row as openeo's callbacks see it: user columns plus managed columns."""
        data = {**self.row, **self.fields, "status": str(self.status)}
        return pd.Series(data, name=self.job_key)


@dataclass(frozen=True)
class Transition:
    """One requested status change, for :meth:`JobDatabase.transition_many`."""

    job_key: str
    new: JobStatus
    message: str | None = None
    expect: JobStatus | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusChange:
    """One row of the ``job_status_changes`` history."""

    job_key: str
    old: JobStatus | None
    new: JobStatus
    at: datetime
    manager_id: str | None = None
    message: str | None = None
    backend_job_id: str | None = None


class JobDatabase(abc.ABC):
    """Storage of jobs and their status history.

    Implementations: :class:`~eoextract.jobs.db.SqlJobDatabase` (SQLite, PostgreSQL) and
    :class:`~eoextract.jobs.db.FileJobDatabase` (openeo-compatible CSV / Parquet).
    """

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

    @abc.abstractmethod
    def get_by_indices(self, indices: Iterable[Any]) -> pd.DataFrame:
        """Jobs with the given ``job_key`` values, as a dataframe."""

    @abc.abstractmethod
    def initialize_from_df(
        self,
        df: pd.DataFrame,
        *,
        on_exists: Literal["error", "skip", "append"] = "error",
        key_column: str | None = None,
    ) -> JobDatabase:
        """Fill a new database from a job dataframe and return ``self``.

        ``on_exists``: ``"error"`` raises when the database exists, ``"skip"`` leaves it
        as it is, ``"append"`` adds the rows whose key is not in it yet.
        """

    # -- what the manager needs ----------------------------------------------------------
    @abc.abstractmethod
    def jobs(
        self,
        statuses: Iterable[JobStatus | str] | None = None,
        *,
        backend_name: str | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[JobRecord]:
        """Jobs as records, filtered by status, backend and/or keys."""

    @abc.abstractmethod
    def get(self, job_key: str) -> JobRecord:
        """One job by key; raises :class:`~eoextract.errors.JobError` when unknown."""

    @abc.abstractmethod
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

    @abc.abstractmethod
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
        not in :data:`UPDATABLE_FIELDS`. ``updated_at`` is set by the database. Moving to
        ``not_started`` or a final status drops the lease (``claimed_by``/``lease_until``)
        unless those fields are given.
        """

    def transition_many(
        self, changes: Sequence[Transition], *, manager_id: str | None = None
    ) -> list[StatusChange | InvalidTransition]:
        """Apply several transitions; each is checked on its own (a refused one is returned
        as its :class:`InvalidTransition`, the others still apply).

        SQL databases apply them in one transaction, which is much cheaper than one each.
        """
        results: list[StatusChange | InvalidTransition] = []
        for change in changes:
            try:
                results.append(self.transition(change.job_key, change.new, message=change.message,
                                               manager_id=manager_id, expect=change.expect,
                                               **dict(change.fields)))
            except InvalidTransition as exc:
                results.append(exc)
        return results

    @abc.abstractmethod
    def update(self, job_key: str, **fields: Any) -> None:
        """Set managed fields (never ``status``) of one job."""

    @abc.abstractmethod
    def history(self, job_key: str) -> list[StatusChange]:
        """The status changes of one job, oldest first."""

    @abc.abstractmethod
    def active_counts(self) -> dict[str, int]:
        """Number of jobs per backend in an active status (holding a slot)."""

    @abc.abstractmethod
    def renew_leases(self, manager_id: str, *, now: datetime, lease_seconds: float) -> int:
        """Extend the leases held by ``manager_id``; returns how many were renewed."""

    def lease_holders(self) -> set[str]:
        """Managers holding a lease on some job that is not in a final status."""
        return {r.fields.get("claimed_by") for r in self.jobs(set(JobStatus) - TERMINAL)} - {None}

    @abc.abstractmethod
    def release(self, manager_id: str) -> None:
        """Drop every lease held by ``manager_id`` (clean shutdown)."""

    @abc.abstractmethod
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

        Returns up to ``limit`` jobs in an :data:`ADOPTABLE` status (``creating`` …
        ``postprocessing``) whose lease has expired (``lease_until <= now``) or that carry
        no lease at all (a database written by a single manager, or leases dropped by
        :meth:`release`), held by another manager or by none; they now carry
        ``claimed_by=manager_id`` and ``lease_until=now+lease_seconds``. The status is not
        changed and no history row is written: the adopting manager reconciles each job
        with its backend. With ``backend_names``, only jobs on those backends are taken.
        Concurrent callers never adopt the same job. Order: primary key.
        """

    @abc.abstractmethod
    def register_backend(self, name: str, url: str | None) -> None:
        """Remember a backend's name and root URL (never credentials)."""

    @abc.abstractmethod
    def backends(self) -> dict[str, str | None]:
        """Registered backends: name → URL."""

    def flush(self) -> None:
        """Write pending changes (file databases batch their saves; SQL commits at once)."""

    def close(self) -> None:
        """Release connections and write pending changes."""
        self.flush()

    def __enter__(self) -> JobDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
