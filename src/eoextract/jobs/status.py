"""The job status model: manager statuses, allowed transitions and raw backend statuses.

``not_started → creating → created → queued → running → downloading → postprocessing →
finished``; final failures keep openeo's names (``error``, ``start_failed``, ``canceled``,
``skipped``). A retryable failure goes back to ``not_started`` (with ``attempt + 1``).
"""

from __future__ import annotations

from enum import StrEnum

from eoextract.errors import InvalidTransition

__all__ = [
    "JobStatus",
    "BackendStatus",
    "ACTIVE",
    "TERMINAL",
    "FAILED",
    "ON_BACKEND",
    "ALLOWED",
    "USER_RETRYABLE",
    "STAGE_RETRY",
    "is_allowed",
    "check_transition",
    "OPENEO_STATUS",
]


class JobStatus(StrEnum):
    """Status of a job as the manager sees it (the ``status`` column)."""

    NOT_STARTED = "not_started"
    CREATING = "creating"
    CREATED = "created"
    QUEUED = "queued"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    POSTPROCESSING = "postprocessing"
    FINISHED = "finished"
    ERROR = "error"
    START_FAILED = "start_failed"
    CANCELED = "canceled"
    SKIPPED = "skipped"


class BackendStatus(StrEnum):
    """Raw openEO job status as reported by a backend (the ``backend_status`` column)."""

    CREATED = "created"
    QUEUED = "queued"
    RUNNING = "running"
    CANCELED = "canceled"
    FINISHED = "finished"
    ERROR = "error"


S = JobStatus

#: Statuses that are final unless a user explicitly retries.
TERMINAL: frozenset[JobStatus] = frozenset({S.FINISHED, S.ERROR, S.START_FAILED, S.CANCELED, S.SKIPPED})
#: Final failures.
FAILED: frozenset[JobStatus] = frozenset({S.ERROR, S.START_FAILED, S.CANCELED})
#: Statuses in which a job holds one of its backend's slots.
ACTIVE: frozenset[JobStatus] = frozenset({S.CREATING, S.CREATED, S.QUEUED, S.RUNNING})
#: Statuses in which the job exists (or may exist) on the backend and must be polled.
ON_BACKEND: frozenset[JobStatus] = frozenset({S.CREATED, S.QUEUED, S.RUNNING})
#: Final statuses a user's explicit retry may move back to ``not_started``.
USER_RETRYABLE: frozenset[JobStatus] = frozenset({S.ERROR, S.START_FAILED, S.CANCELED, S.SKIPPED})
#: Where a user's retry of one stage of a job in ``error`` puts it: its results are
#: downloaded again (``downloading``) or only post-processed again (``postprocessing``)
#: from the files already in place, without a new backend job.
STAGE_RETRY: dict[str, JobStatus] = {"download": S.DOWNLOADING, "postprocess": S.POSTPROCESSING}

_RETRY = S.NOT_STARTED  # a retryable failure goes back to the queue

#: Allowed transitions: ``ALLOWED[old]`` holds every status ``old`` may move to.
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    S.NOT_STARTED: frozenset({S.CREATING, S.SKIPPED, S.START_FAILED, S.CANCELED, S.ERROR}),
    S.CREATING: frozenset({S.CREATED, S.QUEUED, S.RUNNING, S.FINISHED, S.DOWNLOADING,
                           S.SKIPPED, S.START_FAILED, S.ERROR, S.CANCELED, _RETRY}),
    S.CREATED: frozenset({S.QUEUED, S.RUNNING, S.DOWNLOADING, S.FINISHED, S.START_FAILED,
                          S.ERROR, S.CANCELED, _RETRY}),
    S.QUEUED: frozenset({S.RUNNING, S.DOWNLOADING, S.FINISHED, S.ERROR, S.CANCELED, _RETRY}),
    S.RUNNING: frozenset({S.DOWNLOADING, S.FINISHED, S.ERROR, S.CANCELED, _RETRY}),
    S.DOWNLOADING: frozenset({S.POSTPROCESSING, S.FINISHED, S.ERROR, S.CANCELED, _RETRY}),
    S.POSTPROCESSING: frozenset({S.FINISHED, S.ERROR, S.CANCELED, _RETRY}),
    S.FINISHED: frozenset(),
    S.ERROR: frozenset(),
    S.START_FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.SKIPPED: frozenset(),
}


def is_allowed(old: JobStatus | str, new: JobStatus | str, *, user_retry: bool = False) -> bool:
    """Whether ``old → new`` is allowed; ``user_retry`` admits an explicit retry of a final
    status (from the start, or of one stage of a job in ``error``: :data:`STAGE_RETRY`)."""
    old, new = JobStatus(old), JobStatus(new)
    if user_retry and old in USER_RETRYABLE and new is S.NOT_STARTED:
        return True
    if user_retry and old is S.ERROR and new in STAGE_RETRY.values():
        return True
    return new in ALLOWED[old]


def check_transition(
    old: JobStatus | str,
    new: JobStatus | str,
    *,
    user_retry: bool = False,
    job_key: str | None = None,
) -> None:
    """Raise unless the status model allows ``old → new`` (see :func:`is_allowed`).

    Every job database checks its status changes here.

    Args:
        old: the job's current status.
        new: the status asked for.
        user_retry: the change is a user's explicit retry of a final status.
        job_key: the job, named in the error.

    Raises:
        InvalidTransition: the change is not allowed.
        ValueError: ``old`` or ``new`` is no job status.
    """
    if not is_allowed(old, new, user_retry=user_retry):
        what = f"job {job_key!r}: " if job_key is not None else ""
        raise InvalidTransition(f"{what}{JobStatus(old).value!r} -> {JobStatus(new).value!r} "
                                f"is not allowed", job_key=job_key)


B = BackendStatus

#: How our statuses read in openeo-compatible CSV/Parquet files (openeo knows no
#: ``creating``/``downloading``/``postprocessing``). openeo's manager writes a job's raw
#: backend status into its ``status`` column once the job exists on the backend, and its
#: own statuses (``not_started``, ``start_failed``, ``skipped``) before.
OPENEO_STATUS: dict[JobStatus, str] = {
    S.NOT_STARTED: S.NOT_STARTED.value,
    S.CREATING: S.NOT_STARTED.value,
    S.CREATED: B.CREATED.value,
    S.QUEUED: B.QUEUED.value,
    S.RUNNING: B.RUNNING.value,
    S.DOWNLOADING: B.RUNNING.value,
    S.POSTPROCESSING: B.RUNNING.value,
    S.FINISHED: B.FINISHED.value,
    S.ERROR: B.ERROR.value,
    S.START_FAILED: S.START_FAILED.value,
    S.CANCELED: B.CANCELED.value,
    S.SKIPPED: S.SKIPPED.value,
}
