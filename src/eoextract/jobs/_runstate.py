"""State of one run of the job manager: what the run loop keeps between its cycles.

Only the loop's thread reads or changes it. Tasks running in the worker pool get plain
data and hand back :class:`~eoextract.jobs._outcomes.TaskResult` records through
:attr:`_Run.results`; the loop applies them.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eoextract.jobs._budget import Budget
from eoextract.jobs._events import JobEvents
from eoextract.jobs._scheduling import BackendHealth
from eoextract.jobs.db import JobDatabase, JobRecord

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.jobs._outcomes import TaskResult


@dataclass
class _Run:
    """State of one ``run_jobs`` execution."""

    db: JobDatabase
    start_job: Callable[..., Any]
    health: BackendHealth
    stats: collections.defaultdict = field(default_factory=lambda: collections.defaultdict(int))
    #: Set by a task that handed back a result, or to stop: the loop wakes up.
    wake: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    #: Results of tasks (and progress reports of running tasks), in the order they came.
    results: queue.SimpleQueue[TaskResult] = field(default_factory=queue.SimpleQueue)
    #: Results handed back but not applied yet (the job database failed): applied first.
    unapplied: list[TaskResult] = field(default_factory=list)
    #: Jobs with a task in the worker pool: not polled, not launched, not resumed meanwhile.
    inflight: set[str] = field(default_factory=set)
    #: Jobs created on their backend whose start is still to be asked for.
    needs_start: set[str] = field(default_factory=set)
    #: Jobs whose start is in flight: key → backend (they hold places on a backend at its
    #: learned limit; those in flight at a refusal may raise the limit learned from it).
    starting: dict[str, str] = field(default_factory=dict)
    #: Created jobs whose start is due (from the last poll), until a place is free: key → record.
    waiting_start: dict[str, JobRecord] = field(default_factory=dict)
    budget: Budget | None = None
    #: Jobs left in ``creating`` by an interrupted run, per backend name: to look up by tag.
    unreconciled: dict[str, set[str]] = field(default_factory=dict)
    #: Failed attempts at handling each finished job's results.
    finish_failures: collections.Counter = field(default_factory=collections.Counter)
    #: Jobs whose results are to be (re)processed: key -> monotonic time when due.
    finish_due: dict[str, float] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    #: When (:meth:`RunClock.now`) to look again for jobs of managers whose lease expired.
    next_adoption: float = 0.0
    executor: ThreadPoolExecutor | None = None
    progress: Any = None  # a RunProgress when run_jobs(progress=True)
    #: One log line per status change (:mod:`~eoextract.jobs._events`).
    events: JobEvents = field(default_factory=JobEvents)
    #: Called with the job dataframe after each poll (WorldCereal's ``status_callback``).
    status_callback: Callable[[Any], Any] | None = None
    #: Run by :meth:`JobManager.start_job_thread` (sleeps in slices so a stop is prompt).
    threaded: bool = False

    def drain(self) -> list[TaskResult]:
        """The results handed back since the last call, oldest first."""
        results, self.unapplied = self.unapplied, []
        while True:
            try:
                results.append(self.results.get_nowait())
            except queue.Empty:
                return results

    def summary(self) -> dict[str, Any]:
        """The run statistics ``run_jobs`` returns: counters, status counts, attempts, duration
        (and, with a budget, the credits spent and whether the budget was reached)."""
        summary: dict[str, Any] = dict(self.stats)
        costs = self.db.cost_totals()
        if costs.jobs_with_costs or self.budget is not None:
            summary["credits_spent"] = costs.spent
            summary["credits_by_backend"] = dict(costs.by_backend)
        if self.budget is not None:
            summary["budget_reached"] = self.budget.reached
        summary["status_counts"] = {str(k): int(v) for k, v in self.db.count_by_status().items()}
        summary["attempts"] = int(self.stats.get("job create attempts", 0))
        summary["duration_s"] = round(time.monotonic() - self.started_at, 3)
        return summary
