"""Error classification (retryable or fatal) and backoff.

This is the one place where errors of ``openeo``, ``requests`` and HTTP are mapped onto
:mod:`eoextract.errors`: connection errors, 5xx and 429 are retryable (429 honours
``Retry-After``); 404 on a known job means the job is lost (retryable); other 4xx are fatal;
an exception raised by user code is fatal for that job only. A full disk (or quota) is
retryable wherever it happens: the job can go on once space is freed.
"""

from __future__ import annotations

import errno
import logging
import threading
import traceback
from dataclasses import dataclass, field, replace

import requests
from openeo.rest import OpenEoApiError, OpenEoApiPlainError, OpenEoClientException

from eoextract._util.redact import redact
from eoextract._util.retry import ErrorClass, RetryPolicy, is_retryable_status, retry_after_of
from eoextract.errors import (
    AssetRefused,
    BackendError,
    ChecksumMismatch,
    DownloadError,
    EoextractError,
    FatalBackendError,
    JobLost,
    QualityCheckFailed,
    RetryableBackendError,
    UnsafeAssetPath,
)

_log = logging.getLogger(__name__)
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_local = threading.local()


@dataclass(frozen=True)
class ErrorInfo:
    """How a failure is handled.

    Attributes:
        error_class: short class stored in the ``error_class`` column.
        message: one-line message stored in ``error_message``, redacted
            (:func:`~eoextract._util.redact.redact`: no signed URL query, token or password).
        retryable: whether trying again later may succeed.
        retry_after: seconds the server asked us to wait (429/503 ``Retry-After``).
        lost: the backend no longer knows the job (404 on a job it had created).
        traceback: the (redacted) traceback of an exception raised by user code, kept in
            the job's history so that the failure can be debugged after the run.
        exception: the exception classified (not stored; re-raised when a backend stays
            unreachable for longer than the run allows).
    """

    error_class: str
    message: str
    retryable: bool
    retry_after: float | None = None
    lost: bool = False
    traceback: str | None = None
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    def history_message(self, prefix: str, detail: str = "") -> str:
        """``prefix: message`` and ``detail``, followed by the traceback (if any) on the next
        lines: a history entry (see :attr:`~eoextract.jobs.db.StatusChange.traceback`)."""
        text = (f"{prefix}: {self.message}" if prefix else self.message) + detail
        return f"{text}\n{self.traceback}" if self.traceback else text


def _record_retry_after(response: requests.Response, *args, **kwargs) -> None:
    if response.status_code in (429, 503):
        _local.retry_after = retry_after_of(response.headers)


def install_retry_after_hook(session: requests.Session) -> None:
    """Remember the ``Retry-After`` of 429/503 answers made on ``session`` (per thread)."""
    hooks = session.hooks.setdefault("response", [])
    if _record_retry_after not in hooks:
        hooks.append(_record_retry_after)


def last_retry_after(*, clear: bool = True) -> float | None:
    """The ``Retry-After`` of the last 429/503 answer seen in this thread, if any."""
    value = getattr(_local, "retry_after", None)
    if clear:
        _local.retry_after = None
    return value


def _one_line(text: object, limit: int = 500) -> str:
    """``text`` on one line, redacted (before it is cut, so no credential is cut in half)."""
    line = redact(" ".join(str(text).split()))
    return line if len(line) <= limit else line[: limit - 1] + "…"


#: openEO error codes that say the backend has no room for the job now (e.g. geopyspark's
#: 400 ``ConcurrentJobLimit`` on a start): the job waits and is started later.
CAPACITY_CODES = frozenset({"ConcurrentJobLimit", "TooManyRequests"})


def is_backend_full(info: ErrorInfo) -> bool:
    """Whether a failed job start means the backend has no room for another job now (its
    job limit, or 429 Too Many Requests on the start)."""
    return info.error_class == ErrorClass.BACKEND_FULL or getattr(info.exception, "http_status_code", None) == 429


def classify(exc: BaseException, *, job_known: bool = False) -> ErrorInfo:
    """Classify an exception raised while talking to a backend or running user code.

    Args:
        exc: the exception.
        job_known: the request was about a job the backend had created (so a 404 means
            the job was lost rather than a wrong URL).
    """
    return replace(_classify(exc, job_known=job_known), exception=exc)


def _classify(exc: BaseException, *, job_known: bool) -> ErrorInfo:
    if isinstance(exc, QualityCheckFailed):
        return ErrorInfo(f"QualityCheck.{exc.check}", _one_line(exc), exc.retry)
    if isinstance(exc, RetryableBackendError):
        return ErrorInfo(type(exc).__name__, _one_line(exc), True, exc.retry_after,
                         lost=isinstance(exc, JobLost))
    if isinstance(exc, FatalBackendError):
        return ErrorInfo(type(exc).__name__, _one_line(exc), False)
    if isinstance(exc, UnsafeAssetPath):
        return ErrorInfo(ErrorClass.UNSAFE_PATH, _one_line(exc), False)
    if isinstance(exc, AssetRefused):  # the same server would send the same again
        return ErrorInfo(type(exc).__name__, _one_line(exc), False)
    if isinstance(exc, (ChecksumMismatch, DownloadError)):
        return ErrorInfo(type(exc).__name__, _one_line(exc), True)
    if isinstance(exc, OpenEoApiError):
        status = exc.http_status_code
        message = _one_line(f"[{status}] {exc.code}: {exc.message}")
        if status == 404 and (job_known or exc.code == "JobNotFound"):
            return ErrorInfo(ErrorClass.JOB_LOST, message, True, lost=True)
        if exc.code in CAPACITY_CODES:
            return ErrorInfo(ErrorClass.BACKEND_FULL, message, True, last_retry_after())
        if status is not None and is_retryable_status(status):
            return ErrorInfo(ErrorClass.RETRYABLE_BACKEND, message, True, last_retry_after())
        return ErrorInfo(ErrorClass.FATAL_BACKEND, message, False)
    if isinstance(exc, OpenEoApiPlainError):  # an error answer without openEO JSON
        status = getattr(exc, "http_status_code", None)
        message = _one_line(f"[{status}] {exc}")
        if status == 404 and job_known:
            return ErrorInfo(ErrorClass.JOB_LOST, message, True, lost=True)
        if is_retryable_status(status):
            return ErrorInfo(ErrorClass.RETRYABLE_BACKEND, message, True, last_retry_after())
        return ErrorInfo(ErrorClass.FATAL_BACKEND, message, False)
    if isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return ErrorInfo(ErrorClass.CONNECTION, _one_line(f"{type(exc).__name__}: {exc}"), True)
    if isinstance(exc, requests.RequestException):
        return ErrorInfo(ErrorClass.RETRYABLE_BACKEND, _one_line(f"{type(exc).__name__}: {exc}"), True)
    if isinstance(exc, OpenEoClientException):
        return ErrorInfo(ErrorClass.FATAL_BACKEND, _one_line(f"{type(exc).__name__}: {exc}"), False)
    if isinstance(exc, EoextractError):
        return ErrorInfo(type(exc).__name__, _one_line(exc), False)
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return ErrorInfo(ErrorClass.DISK_FULL, _one_line(f"disk full: {exc}"), True)
    # Anything else was raised by user code (or a bug): fatal for this job only.
    return ErrorInfo(ErrorClass.user_code(type(exc)), _one_line(f"{type(exc).__name__}: {exc}"),
                     False, traceback=format_traceback(exc))


def format_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` as text, secrets redacted (kept in a job's history)."""
    return redact("".join(traceback.format_exception(exc)).rstrip())


def to_backend_error(exc: BaseException, *, backend_name: str | None = None,
                     job_key: str | None = None, job_known: bool = False) -> BackendError:
    """Translate a foreign exception to the most specific :class:`BackendError`."""
    info = classify(exc, job_known=job_known)
    status = getattr(exc, "http_status_code", None)
    code = getattr(exc, "code", None)
    kw = dict(backend_name=backend_name, status_code=status, code=code, job_key=job_key)
    if info.lost:
        return JobLost(info.message, **kw)
    if info.retryable:
        return RetryableBackendError(info.message, retry_after=info.retry_after, **kw)
    return FatalBackendError(info.message, **kw)


#: The manager's backoff between a job's attempts (30 s doubling up to 15 min).
Backoff = RetryPolicy
