"""Per-user limits of running and waiting batch jobs (the production profile's job limits).

A user's started job takes a *running place* when one of ``max_running_jobs`` is free, else
a *waiting place* (it stays ``queued``) when one of ``max_queued_jobs`` is free, else the
start is refused with ``400 ConcurrentJobLimit``, the error openeo-geopyspark-driver answers
(``Job was not started because concurrent job limit (2) is reached.``). Limits bite when a
job is started (``POST /jobs/{id}/results``), never when it is created, as in production.
When a running job ends, the user's oldest waiting job takes its place.
"""

from __future__ import annotations

import threading
from collections import deque

from eoextract.backend._api_errors import OpenEOApiError

CONCURRENT_JOB_LIMIT = "ConcurrentJobLimit"
"""openEO error code of a refused start (openeo-geopyspark-driver; not in the openEO API yet)."""


def concurrent_job_limit_error(limit: int, queued: int | None = None) -> OpenEOApiError:
    """The ``400 ConcurrentJobLimit`` answer to a start over the limit."""
    message = f"Job was not started because concurrent job limit ({limit}) is reached."
    if queued:
        message = message[:-1] + f" and {queued} job(s) are already waiting."
    return OpenEOApiError(message, code=CONCURRENT_JOB_LIMIT, status=400)


class JobLimiter:
    """Running and waiting places per user.

    Args:
        max_running: Running places per user (None: no limit, nothing is tracked).
        max_queued: Waiting places per user (None: any number).
    """

    def __init__(self, max_running: int | None, max_queued: int | None):
        self.max_running = max_running
        self.max_queued = max_queued
        self._lock = threading.Lock()
        self._running: dict[str, set[str]] = {}
        self._waiting: dict[str, deque[str]] = {}

    @property
    def enabled(self) -> bool:
        """Whether a running limit is set."""
        return self.max_running is not None

    def admit(self, user: str, job_id: str, *, force: bool = False) -> bool:
        """Give a started job a place.

        Args:
            user: Owner.
            job_id: The job.
            force: Never refuse (jobs found queued after a restart): wait instead.

        Returns:
            True when the job may run now, False when it waits.

        Raises:
            OpenEOApiError: ``400 ConcurrentJobLimit`` when no place is free.
        """
        if self.max_running is None:
            return True
        with self._lock:
            running = self._running.setdefault(user, set())
            waiting = self._waiting.setdefault(user, deque())
            if job_id in running:
                return True
            if job_id in waiting:
                return False
            if len(running) < self.max_running:
                running.add(job_id)
                return True
            if force or self.max_queued is None or len(waiting) < self.max_queued:
                waiting.append(job_id)
                return False
            raise concurrent_job_limit_error(self.max_running, len(waiting))

    def release(self, user: str, job_id: str) -> list[str]:
        """Free the place of a job that ended (or was canceled or deleted).

        Returns:
            The waiting jobs that now have a running place, oldest first.
        """
        if self.max_running is None:
            return []
        with self._lock:
            running = self._running.get(user, set())
            waiting = self._waiting.get(user, deque())
            if job_id in waiting:
                waiting.remove(job_id)
                return []
            running.discard(job_id)
            promoted = []
            while waiting and len(running) < self.max_running:
                next_id = waiting.popleft()
                running.add(next_id)
                promoted.append(next_id)
            return promoted

    def counts(self, user: str) -> tuple[int, int]:
        """``(running places taken, waiting places taken)`` of a user."""
        with self._lock:
            return len(self._running.get(user, ())), len(self._waiting.get(user, ()))
