"""What user code meets in the job manager: the ``start_job`` callable and the finished-job
hook's input and output (:meth:`~eoextract.jobs.JobManager.process_finished_job`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import openeo
import pandas as pd
from openeo.rest.job import BatchJob

from eoextract.jobs.db import Transition
from eoextract.jobs.status import JobStatus


class StartJob(Protocol):
    """``start_job(row, connection, connection_provider=..., provider=...) -> BatchJob | None``.

    Parameters the function does not declare are not passed. Returning ``None`` marks the
    row ``skipped``; a job that was only created is started by the manager.
    """

    def __call__(self, *, row: pd.Series, connection: openeo.Connection, **kwargs: Any) -> BatchJob | None: ...


@dataclass(frozen=True)
class FinishedJob:
    """A job that finished on its backend, handed to
    :meth:`~eoextract.jobs.JobManager.process_finished_job` (in a worker thread).

    Attributes:
        job_key: The job's key in the job database.
        backend_name: The backend that ran it.
        backend_job_id: The backend's id of the job.
        status: ``downloading``, or ``postprocessing`` when an earlier run got that far.
        row: The job as openeo's callbacks see it (user columns and managed columns).
        connect: Returns the backend's connection (see :attr:`connection`).
        report: Receives the status changes the job asks for while it runs (see
            :meth:`postprocessing`); the manager passes them to its run loop, a test may
            pass ``list.append``.
    """

    job_key: str
    backend_name: str
    backend_job_id: str
    status: JobStatus
    row: pd.Series = field(repr=False, compare=False)
    connect: Callable[[], openeo.Connection] = field(repr=False, compare=False)
    report: Callable[[Transition], None] = field(repr=False, compare=False)

    @property
    def connection(self) -> openeo.Connection:
        """The (authenticated) connection to the job's backend."""
        return self.connect()

    @property
    def batch_job(self) -> BatchJob:
        """The job on its backend, as openeo's callbacks get it."""
        return self.connection.job(self.backend_job_id)

    def postprocessing(self, message: str | None = None) -> None:
        """Say that the results are in place and are being post-processed: the job moves
        from ``downloading`` to ``postprocessing`` (recorded by the run loop, with
        ``message`` in the history). Does nothing when it is past ``downloading``."""
        if self.status is JobStatus.DOWNLOADING:
            self.report(Transition(self.job_key, JobStatus.POSTPROCESSING, message=message,
                                   expect=JobStatus.DOWNLOADING))


@dataclass(frozen=True)
class FinishedJobResult:
    """What the job manager records once :meth:`~eoextract.jobs.JobManager.process_finished_job`
    returns.

    Attributes:
        fields: Managed columns to set along with ``finished`` (e.g. ``output_dir``; see
            :data:`eoextract.jobs.db.UPDATABLE_FIELDS`).
        message: The history message of the change to ``finished``.
        run_again: An error showing the job's results cannot be used (e.g. a
            :class:`~eoextract.errors.ChecksumMismatch` after repeated downloads): instead
            of finishing, the job runs again on its backend as a new attempt (while
            attempts are left; then it ends in ``error``), with this error recorded.
    """

    fields: Mapping[str, Any] = field(default_factory=dict)
    message: str = "done"
    run_again: BaseException | None = None
