"""openeo's background mode of the job manager: ``start_job_thread``/``stop_job_thread``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eoextract.jobs.db import JobDatabase, open_for_run

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.jobs._runstate import _Run

_log = logging.getLogger("eoextract.jobs.manager")
_UNSET = object()


class JobThread:
    """The run loop of :class:`~eoextract.jobs.JobManager` in a background thread."""

    poll_sleep: float
    _thread: threading.Thread | None
    _run: _Run | None

    def start_job_thread(self, start_job: Callable[..., Any], job_db: str | Path | JobDatabase) -> None:
        """Run the jobs in a background thread; returns at once (see :meth:`stop_job_thread`)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the job thread is already running")
        self._check_ready(start_job)
        db = open_for_run(None, job_db)
        run = self._prepare(db, start_job)
        run.threaded = True

        def target() -> None:
            try:
                self._loop(run)
            except Exception:  # noqa: BLE001 - logged; the thread must not die silently
                _log.exception("job thread stopped on an unexpected error")
            finally:
                self._shutdown(run, wait=False)

        self._thread = threading.Thread(target=target, name="eoextract-job-manager", daemon=True)
        self._thread.start()

    def stop_job_thread(self, timeout_seconds: float | None | object = _UNSET) -> None:
        """Stop the background thread promptly (jobs keep running on the backends)."""
        run, thread = self._run, self._thread
        if run is None or thread is None:
            _log.warning("no job thread to stop")
            return
        run.stop.set()
        run.wake.set()
        timeout = max(5.0, 2 * self.poll_sleep) if timeout_seconds is _UNSET else timeout_seconds
        thread.join(timeout)  # type: ignore[arg-type]
        if thread.is_alive():
            _log.warning("job thread did not stop within %s s", timeout)
        self._thread = None
