"""One log line per job event, on the ``eoextract.jobs.events`` logger at INFO.

Every status change the job manager applies is one event: a job being created on a backend,
created, queued (started), running, its results downloading and downloaded, finished, failed
(with its error class), retried after a failure, requeued after an interruption, adopted,
canceled or skipped. Each line names the job key, the backend and the backend job id::

    job 12 on cdse (j-2501...): queued
    job 7 on cdse (j-2501...): error (JobFailed): Processing failed ...

Messages are masked (:func:`~eoextract._util.redact.redact`); records carry ``job_key``,
``backend_job_id``, ``backend_name`` and ``event`` as extra attributes for structured
handlers. Nothing is shown unless logging is configured, e.g. in a notebook::

    import logging
    logging.basicConfig(level=logging.INFO)
"""

from __future__ import annotations

import logging
from typing import Any

from eoextract._util.redact import redact
from eoextract.jobs.db import StatusChange, Transition
from eoextract.jobs.status import TERMINAL, JobStatus

S = JobStatus
logger = logging.getLogger("eoextract.jobs.events")

_PLAIN = {
    S.CREATED: "created",
    S.QUEUED: "queued",
    S.RUNNING: "running",
    S.DOWNLOADING: "downloading results",
    S.POSTPROCESSING: "downloaded; post-processing",
    S.FINISHED: "finished",
    S.CANCELED: "canceled",
    S.SKIPPED: "skipped",
}


def event_name(change: Transition, outcome: StatusChange) -> str:
    """A short name of the event a status change is: ``created``, ``queued``, ``error``,
    ``retried``, ``requeued``, ``adopted``, ...; the new status's name otherwise."""
    new, old = outcome.new, outcome.old
    message = change.message or ""
    if new is S.NOT_STARTED:
        if "error_class" in change.fields or "retried by user" in message:
            return "retried"
        return "requeued" if old is S.CREATING else "reset"
    if old is S.CREATING and message.startswith("adopted"):
        return "adopted"
    if new is S.POSTPROCESSING:
        return "downloaded"
    return new.value


def _text(change: Transition, outcome: StatusChange, event: str) -> str:
    fields = change.fields
    new = outcome.new
    message = " ".join((change.message or "").split())
    if new is S.CREATING:
        attempt = fields.get("attempt")
        return "creating" + (f" (attempt {attempt})" if attempt else "")
    if new in (S.ERROR, S.START_FAILED):
        error_class = fields.get("error_class")
        detail = fields.get("error_message") or message
        return f"{new.value}" + (f" ({error_class})" if error_class else "") + (f": {detail}" if detail else "")
    if event == "retried" and fields.get("error_class"):
        return f"retried after {fields['error_class']}" + (f": {message}" if message else "")
    if event in ("retried", "requeued", "reset", "adopted"):
        return event + (f": {message}" if message else "")
    text = _PLAIN.get(new, new.value)
    if new is S.CANCELED and message:
        text += f": {message}"
    return text


def log_change(change: Transition, outcome: StatusChange, backend_name: str | None = None) -> None:
    """Log one applied status change as one INFO line (see the module docstring).

    Args:
        change: The change as asked for (its fields: error class, attempt, ...).
        outcome: The change as recorded (old status, backend job id).
        backend_name: The job's backend, when known (else taken from ``change``).
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    backend = change.fields.get("backend_name") or backend_name
    job_id = outcome.backend_job_id
    where = f" on {backend}" if backend else ""
    if job_id:
        where += f" ({job_id})"
    event = event_name(change, outcome)
    extra: dict[str, Any] = {"job_key": outcome.job_key, "backend_job_id": job_id,
                             "backend_name": backend, "event": event}
    logger.info("job %s%s: %s", outcome.job_key, where,
                redact(_text(change, outcome, event))[:1000], extra=extra)


class JobEvents:
    """The event lines of one run: remembers the backend of each job that is not done yet
    (a status change names it only when the job is created) so every line can name it.

    A job is forgotten once it reaches a final status, so what is kept is bounded by the
    jobs in flight, not by the length of the run.
    """

    def __init__(self) -> None:
        self._backends: dict[str, str] = {}

    def __len__(self) -> int:
        """Jobs whose backend is remembered."""
        return len(self._backends)

    def log(self, change: Transition, outcome: StatusChange, backend_name: str | None = None) -> None:
        """:func:`log_change`, with the job's backend as last seen in this run."""
        key = change.job_key
        backend = change.fields.get("backend_name") or backend_name or self._backends.get(key)
        if outcome.new in TERMINAL:
            self._backends.pop(key, None)
        elif backend:
            self._backends[key] = backend
        log_change(change, outcome, backend)
