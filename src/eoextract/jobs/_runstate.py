"""State of one run of the job manager, and small helpers of the run loop."""

from __future__ import annotations

import collections
import inspect
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from eoextract.jobs.db.base import JobDatabase, Transition


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _call_with_accepted(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``fn`` with the keyword arguments it declares (all of them if it takes ``**kw``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


@dataclass
class _Batch:
    """Transitions to apply together, each with an optional follow-up task ``(fn, *args)``."""

    items: list[tuple[Transition, tuple | None]] = field(default_factory=list)

    def add(self, change: Transition, then: tuple | None = None) -> None:
        self.items.append((change, then))


@dataclass
class _Run:
    """State of one ``run_jobs`` execution (lives in the run loop's thread)."""

    db: JobDatabase
    start_job: Callable[..., Any]
    stats: collections.defaultdict = field(default_factory=lambda: collections.defaultdict(int))
    lock: threading.RLock = field(default_factory=threading.RLock)
    wake: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    inflight: set[str] = field(default_factory=set)
    needs_start: set[str] = field(default_factory=set)
    unreconciled: dict[str, set[str]] = field(default_factory=dict)
    finish_failures: collections.Counter = field(default_factory=collections.Counter)
    #: jobs whose results are to be (re)processed: key -> monotonic time when due
    finish_due: dict[str, float] = field(default_factory=dict)
    backend_failures: collections.Counter = field(default_factory=collections.Counter)
    backend_paused_until: dict[str, float] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    executor: ThreadPoolExecutor | None = None
    progress: Any = None  # a RunProgress when run_jobs(progress=True)


def _is_dead_local_manager(manager_id: str) -> bool:
    """Whether ``manager_id`` (``host:pid:nonce``) names a process of this host that has ended."""
    parts = str(manager_id).split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
