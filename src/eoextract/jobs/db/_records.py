"""Plain records of jobs and their history, and the columns eoextract manages.

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

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eoextract.errors import InvalidTransition
from eoextract.jobs.status import JobStatus

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


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
    "usage",
    "output_dir",
    "input_published_at",
    "output_published_at",
    "claimed_by",
    "lease_until",
)

#: Fields that :meth:`JobDatabase.transition` and :meth:`JobDatabase.update` may set.
UPDATABLE_FIELDS: frozenset[str] = frozenset(MANAGED_COLUMNS) - {"job_key", "status"}


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

    def as_series(self, **managed: Any) -> pd.Series:
        """The row as openeo's callbacks see it: user columns plus managed columns (with
        the ``managed`` values given instead of the record's)."""
        import pandas as pd

        data = {**self.row, **self.fields, **managed, "status": str(self.status)}
        # built from a list: the status makes the row hold objects, and pandas need not infer it
        return pd.Series(list(data.values()), index=_row_index(tuple(data)), dtype=object, name=self.job_key)


@functools.lru_cache(maxsize=64)
def _row_index(names: tuple[str, ...]) -> pd.Index:
    """The index of :meth:`JobRecord.as_series` rows with these columns, built once (pandas
    indexes are immutable, so rows share it): a job's row is made for every task."""
    import pandas as pd

    return pd.Index(names, dtype=object)


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

    @property
    def summary(self) -> str | None:
        """The first line of :attr:`message` (what happened)."""
        return None if self.message is None else self.message.partition("\n")[0]

    @property
    def traceback(self) -> str | None:
        """The traceback kept with a failure of user code (the rest of :attr:`message`)."""
        rest = (self.message or "").partition("\n")[2]
        return rest or None


#: One job taken by :meth:`JobDatabase.claim_and_transition`: its record as claimed, the
#: change asked for it and what applying that change gave.
Claimed = tuple[JobRecord, Transition, StatusChange | InvalidTransition]
