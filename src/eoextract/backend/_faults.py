"""Fault injection for the embedded backend.

Two kinds of faults make client failure handling reproducible:

* **Job faults**, requested per job through ``job_options`` (always available)::

      {"eoextract_fault": "error" | "slow" | "lost" | "corrupt_asset",
       "eoextract_fault_times": 2,        # only the first 2 jobs with this title
       "eoextract_fault_delay_s": 5.0}    # for "slow" (extra run time) and "lost"

  ``error`` ends the job in ``error`` with a log entry; ``slow`` keeps it running
  ``eoextract_fault_delay_s`` longer; ``lost`` makes the job vanish (404 ``JobNotFound``
  afterwards, gone from the listing); ``corrupt_asset`` serves asset bytes that differ from
  the advertised ``file:checksum`` (same size). Counting is per job title over the lifetime
  of the server process.

* **Request faults**, set through the admin route ``POST /_admin/faults`` (only when the
  server runs with faults enabled, and only with its fault token as a bearer token): the next ``times`` requests whose path matches
  ``path_regex`` (and ``method``, when given) are answered with ``status`` (with
  ``Retry-After`` when ``retry_after`` is given) and/or delayed by ``delay_s`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from eoextract.backend._api_errors import BadRequest


logger = logging.getLogger(__name__)

JOB_FAULT_KINDS = frozenset({"error", "slow", "lost", "corrupt_asset"})
"""Values accepted for the ``eoextract_fault`` job option."""


@dataclass(frozen=True)
class JobFault:
    """A fault requested by a job's options.

    Attributes:
        kind: One of :data:`JOB_FAULT_KINDS`.
        times: Only the first ``times`` jobs with the same title get the fault (None: all).
        delay_s: Extra run time for ``slow``; time before a ``lost`` job vanishes.
    """

    kind: str
    times: int | None = None
    delay_s: float = 0.0

    @classmethod
    def from_job_options(cls, job_options: dict[str, Any] | None) -> JobFault | None:
        """Read the fault options of a job.

        Args:
            job_options: The job's ``job_options`` (may be None).

        Returns:
            The requested fault, or None when the job asks for none.

        Raises:
            BadRequest: On an unknown fault kind or malformed numbers.
        """
        if not job_options or not job_options.get("eoextract_fault"):
            return None
        kind = str(job_options["eoextract_fault"])
        if kind not in JOB_FAULT_KINDS:
            raise BadRequest(
                f"Unknown eoextract_fault {kind!r}; expected one of {sorted(JOB_FAULT_KINDS)}."
            )
        try:
            times_raw = job_options.get("eoextract_fault_times")
            times = None if times_raw is None else int(times_raw)
            delay_s = float(job_options.get("eoextract_fault_delay_s") or 0.0)
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"Invalid fault option: {exc}") from exc
        if delay_s < 0 or (times is not None and times < 0):
            raise BadRequest("eoextract_fault_times and eoextract_fault_delay_s must be >= 0.")
        return cls(kind=kind, times=times, delay_s=delay_s)


class JobFaultCounter:
    """Counts, per job title and fault kind, how many jobs asked for a fault so far."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._lock = threading.Lock()

    def applies(self, fault: JobFault | None, title: str | None) -> bool:
        """Count one more job start and tell whether the fault hits this one.

        Args:
            fault: The job's fault (None: no fault).
            title: The job's title (jobs without a title share one counter).

        Returns:
            True when the fault must be applied to this run of the job.
        """
        if fault is None:
            return False
        with self._lock:
            key = (title or "", fault.kind)
            self._counts[key] += 1
            return fault.times is None or self._counts[key] <= fault.times


def corrupt_chunk(chunk: bytes, chunk_offset: int, file_size: int) -> bytes:
    """Flip the byte in the middle of the file when it falls into this chunk.

    The served file keeps its size but no longer matches its checksum.

    Args:
        chunk: Bytes read from the file.
        chunk_offset: Offset of ``chunk[0]`` in the file.
        file_size: Size of the whole file.

    Returns:
        The chunk, with the middle byte of the file inverted if it lies in it.
    """
    target = file_size // 2
    if chunk_offset <= target < chunk_offset + len(chunk):
        i = target - chunk_offset
        return chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
    return chunk


@dataclass
class RequestFault:
    """One admin-defined request fault.

    Attributes:
        path_regex: Searched (``re.search``) in the request path.
        method: Only requests with this HTTP method (None: any).
        status: Status to answer with (None: only delay, then serve normally).
        times: How many matching requests are still affected.
        retry_after: Value of the ``Retry-After`` header (seconds), if any.
        delay_s: Seconds to wait before answering.
        id: Identifier of the rule.
    """

    path_regex: str
    method: str | None = None
    status: int | None = 503
    times: int = 1
    retry_after: float | None = None
    delay_s: float | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path_regex)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestFault:
        """Build a rule from the admin route's JSON body.

        Raises:
            BadRequest: When fields are missing or invalid.
        """
        if not isinstance(data, dict) or not isinstance(data.get("path_regex"), str):
            raise BadRequest("A fault needs at least a 'path_regex' string.")
        try:
            status = data.get("status", 503 if data.get("delay_s") is None else None)
            rule = cls(
                path_regex=data["path_regex"],
                method=(str(data["method"]).upper() if data.get("method") else None),
                status=None if status is None else int(status),
                times=int(data.get("times", 1)),
                retry_after=None if data.get("retry_after") is None else float(data["retry_after"]),
                delay_s=None if data.get("delay_s") is None else float(data["delay_s"]),
            )
        except (TypeError, ValueError, re.error) as exc:
            raise BadRequest(f"Invalid fault definition: {exc}") from exc
        if rule.status is not None and not 400 <= rule.status <= 599:
            raise BadRequest("A fault's status must be an HTTP error status (4xx or 5xx).")
        return rule

    def to_dict(self) -> dict[str, Any]:
        """The rule as JSON-ready data."""
        return {
            "id": self.id,
            "path_regex": self.path_regex,
            "method": self.method,
            "status": self.status,
            "times": self.times,
            "retry_after": self.retry_after,
            "delay_s": self.delay_s,
        }

    def matches(self, method: str, path: str) -> bool:
        """Whether a request is affected by this rule (ignoring the remaining count)."""
        return (self.method is None or self.method == method) and bool(self._pattern.search(path))


class RequestFaultInjector:
    """Thread-safe list of request faults, consumed as matching requests arrive."""

    def __init__(self) -> None:
        self._rules: list[RequestFault] = []
        self._lock = threading.Lock()

    def add(self, rule: RequestFault) -> None:
        """Append a rule (rules are tried in the order they were added)."""
        with self._lock:
            self._rules.append(rule)
        logger.info("request fault added: %s", rule.to_dict())

    def clear(self) -> None:
        """Remove all rules."""
        with self._lock:
            self._rules.clear()

    def list(self) -> list[dict[str, Any]]:
        """The active rules as JSON-ready data."""
        with self._lock:
            return [r.to_dict() for r in self._rules]

    def take(self, method: str, path: str) -> RequestFault | None:
        """Find the first rule matching a request and use up one of its ``times``."""
        if not self._rules:
            return None
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and rule.matches(method, path):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None


_FAULT_CODES = {
    429: "TooManyRequests",
    500: "Internal",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


class FaultMiddleware:
    """ASGI middleware applying :class:`RequestFaultInjector` rules (admin routes exempt)."""

    def __init__(self, app: Any, injector: RequestFaultInjector, admin_prefix: str = "/_admin"):
        self.app = app
        self.injector = injector
        self.admin_prefix = admin_prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.admin_prefix):
            await self.app(scope, receive, send)
            return
        rule = self.injector.take(scope["method"], scope["path"])
        if rule is None:
            await self.app(scope, receive, send)
            return
        if rule.delay_s:
            await asyncio.sleep(rule.delay_s)
        if rule.status is None:
            await self.app(scope, receive, send)
            return
        body = orjson.dumps(
            {
                "id": uuid.uuid4().hex,
                "code": _FAULT_CODES.get(rule.status, "InjectedFault"),
                "message": f"Injected fault (HTTP {rule.status}) for {scope['path']}.",
                "links": [],
            }
        )
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if rule.retry_after is not None:
            headers.append((b"retry-after", str(int(round(rule.retry_after))).encode()))
        await send({"type": "http.response.start", "status": rule.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
