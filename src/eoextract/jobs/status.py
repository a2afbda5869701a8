"""The job status model: manager statuses, allowed transitions and raw backend statuses.

``not_started → creating → created → queued → running → downloading → postprocessing →
finished``; final failures keep openeo's names (``error``, ``start_failed``, ``canceled``,
``skipped``). A retryable failure goes back to ``not_started`` (with ``attempt + 1``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "JobStatus",
    "BackendStatus",
    "ACTIVE",
    "TERMINAL",
    "FAILED",
    "ON_BACKEND",
    "ALLOWED",
    "USER_RETRYABLE",
    "is_allowed",
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
    """Whether ``old → new`` is allowed; ``user_retry`` admits an explicit retry of a final status."""
    old, new = JobStatus(old), JobStatus(new)
    if user_retry and old in USER_RETRYABLE and new is S.NOT_STARTED:
        return True
    return new in ALLOWED[old]


#: How our statuses read in openeo-compatible CSV/Parquet files (openeo knows no
#: ``creating``/``downloading``/``postprocessing``).
OPENEO_STATUS: dict[JobStatus, str] = {
    S.NOT_STARTED: "not_started",
    S.CREATING: "not_started",
    S.CREATED: "created",
    S.QUEUED: "queued",
    S.RUNNING: "running",
    S.DOWNLOADING: "running",
    S.POSTPROCESSING: "running",
    S.FINISHED: "finished",
    S.ERROR: "error",
    S.START_FAILED: "start_failed",
    S.CANCELED: "canceled",
    S.SKIPPED: "skipped",
}
