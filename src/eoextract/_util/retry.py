"""The one retry policy: error classes, retryable HTTP statuses, ``Retry-After`` and backoff.

The job manager (backend calls, lost jobs, failed jobs), downloads (resumes) and publishing
(STAC API requests) decide "retry or give up, and after how long" with these.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

#: HTTP statuses worth another try: timeouts, too early, too many requests, server errors.
RETRYABLE_STATUS: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})


class ErrorClass(StrEnum):
    """Classes of failure, as stored in a job's ``error_class`` column.

    A failure raised by user code is stored as ``UserCodeError.<exception type>``
    (see :meth:`user_code`).
    """

    CONNECTION = "ConnectionError"
    RETRYABLE_BACKEND = "RetryableBackendError"
    BACKEND_FULL = "BackendFull"
    FATAL_BACKEND = "FatalBackendError"
    JOB_LOST = "JobLost"
    JOB_FAILED = "JobFailed"
    DOWNLOAD = "DownloadError"
    CHECKSUM = "ChecksumMismatch"
    UNSAFE_PATH = "UnsafeAssetPath"
    DISK_FULL = "DiskFull"
    USER_CODE = "UserCodeError"

    @classmethod
    def user_code(cls, exc_type: type[BaseException] | str) -> str:
        """The class stored for an exception raised by user code."""
        name = exc_type if isinstance(exc_type, str) else exc_type.__name__
        return f"{cls.USER_CODE.value}.{name}"


def is_retryable_status(status: int | None) -> bool:
    """Whether an HTTP answer with this status is worth another try (unknown: yes)."""
    return status is None or status in RETRYABLE_STATUS or status >= 500


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date); None if absent
    or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_after_of(headers: Mapping[str, str] | None) -> float | None:
    """The ``Retry-After`` of a response's headers, in seconds."""
    return parse_retry_after(headers.get("Retry-After")) if headers is not None else None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base * factor**(n-1)`` seconds before the n-th retry, capped at
    ``maximum``; a server's ``Retry-After`` is honoured when it asks for longer (capped at
    ``retry_after_cap``). ``jitter`` (0-1) takes up to that fraction off each delay so that
    many clients do not retry in step.
    """

    base: float = 30.0
    factor: float = 2.0
    maximum: float = 900.0
    retry_after_cap: float | None = None
    jitter: float = 0.0

    def delay(self, n: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``n`` (1-based)."""
        wait = min(self.maximum, self.base * self.factor ** max(0, n - 1))
        if self.jitter:
            wait *= 1.0 - self.jitter * random.random()
        if retry_after is not None:
            cap = self.maximum if self.retry_after_cap is None else self.retry_after_cap
            wait = max(wait, min(retry_after, cap))
        return wait

    @classmethod
    def coerce(cls, value: RetryPolicy | float | Callable[[int], float] | None) -> RetryPolicy:
        """Accept a policy, a base delay in seconds, a function of the retry number, or
        ``None`` (defaults)."""
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, (int, float)):
            return cls(base=float(value))
        if callable(value):
            return _CallablePolicy(fn=value)
        raise TypeError(f"retry_backoff must be a RetryPolicy, a number or a callable, not {value!r}")


@dataclass(frozen=True)
class _CallablePolicy(RetryPolicy):
    fn: Callable[[int], float] = lambda n: 30.0

    def delay(self, n: int, retry_after: float | None = None) -> float:
        wait = float(self.fn(n))
        return max(wait, retry_after) if retry_after is not None else wait
