"""What a step of a job found out, as plain records the run loop applies.

Tasks in the worker pool (creating, starting, finishing a job, ...) and the loop's own
polling and recovery never write to the job database; they return a :class:`TaskResult`
whose effects (status changes, field updates, failures) the loop applies in order, in as
few transactions as it can (:class:`ResultApplier`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from eoextract._util.retry import RetryPolicy
from eoextract.errors import InvalidTransition, JobDatabaseError
from eoextract._util.utc import parse_utc
from eoextract.jobs._classify import ErrorInfo, is_backend_full
from eoextract.jobs._scheduling import after_failure, started_on
from eoextract.jobs.db import JobRecord
from eoextract.jobs.db import Transition
from eoextract.jobs.status import JobStatus

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.jobs._runstate import _Run

_log = logging.getLogger("eoextract.jobs.manager")
S = JobStatus

#: The step of a job that failed: creating/starting it, running it, handling its results.
Stage = Literal["start", "run", "results"]


class FollowUp(StrEnum):
    """Work the loop hands to the worker pool once a result is applied."""

    #: Start a job that was created but not started.
    START = "start"
    #: Handle a finished job's results (:meth:`JobManager.process_finished_job`).
    FINISH = "finish"
    #: A job ended in ``error`` on its backend: ``on_job_error``, then retry or fail.
    JOB_ERROR = "job error"
    #: Ask the backend to cancel a job that ran too long.
    CANCEL = "cancel"
    #: A job was canceled on its backend: ``on_job_cancel``.
    CANCELED = "canceled"


@dataclass(frozen=True)
class Update:
    """Managed fields of one job to set, without a status change."""

    job_key: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class Failure:
    """A failed step: the job is retried later (retryable, attempts left) or gets its final
    status (``start_failed`` for the start stage, else ``error``)."""

    job_key: str
    info: ErrorInfo
    stage: Stage
    backend_job_id: str | None = None


@dataclass(frozen=True)
class ResultsFailure:
    """Handling a finished job's results failed: processed again later (retryable, attempts
    left), the job run again on its backend (``run_again``), or ``error``."""

    job_key: str
    info: ErrorInfo
    run_again: bool = False
    backend_job_id: str | None = None


Effect = Transition | Update | Failure | ResultsFailure


@dataclass(frozen=True)
class TaskResult:
    """What one task or check found out about one job (or one backend).

    Attributes:
        job_key: The job (None for a result about a backend only).
        effects: Changes to apply in order; at most one of them a :class:`Transition`.
        counts: Run statistics to count up by one.
        backend: The backend the result is about.
        backend_error: A retryable failure of ``backend`` (repeated ones pause it).
        backend_ok: ``backend`` answered: its failure count starts over.
        needs_start: The job was created but not started (True), or no longer waits
            for a start (False).
        then: Work to hand to the pool once the result's transition applied (right away
            when it has none), on :attr:`record`.
        record: The job as read before the change.
        task_done: The result ends a task of the job (the job is no longer in flight).
        results_done: The job's results were handled: earlier failures are forgotten.
    """

    job_key: str | None = None
    effects: tuple[Effect, ...] = ()
    counts: tuple[str, ...] = ()
    backend: str | None = None
    backend_error: ErrorInfo | None = None
    backend_ok: bool = False
    needs_start: bool | None = None
    then: FollowUp | None = None
    record: JobRecord | None = field(default=None, repr=False)
    task_done: bool = False
    results_done: bool = False


class ResultApplier:
    """Applies results to the job database and to the run's state, for the run loop.

    Args:
        run: The run's state (its database, statistics, jobs in flight, ...).
        manager_id: Recorded with every status change.
        max_attempts: Attempts per job for retryable failures.
        backoff: Delay before a job's next attempt, or before its results are handled again.
        follow: Hands the work that follows a result (:attr:`TaskResult.then`) to the pool.
    """

    def __init__(self, run: _Run, *, manager_id: str, max_attempts: int, backoff: RetryPolicy,
                 follow: Callable[[TaskResult], None]) -> None:
        self.run = run
        self.manager_id = manager_id
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.follow = follow

    def apply(self, results: Iterable[TaskResult]) -> None:
        """Apply results in order; status changes are batched into as few transactions as
        the other effects allow. Results not applied when the database fails are kept for
        the next cycle."""
        run = self.run
        results = list(results)
        if not results:
            return
        settled = [False] * len(results)
        pending: list[int] = []  # results whose transition waits in the batch

        def flush() -> None:
            if not pending:
                return
            changes = [next(e for e in results[i].effects if isinstance(e, Transition)) for i in pending]
            outcomes = run.db.transition_many(changes, manager_id=self.manager_id)
            for i, change, outcome in zip(pending, changes, outcomes):
                applied = not isinstance(outcome, InvalidTransition)
                if not applied:
                    _log.warning("job %s: %s", change.job_key, outcome)
                else:
                    record = results[i].record
                    run.events.log(change, outcome, record.backend_name if record is not None else None)
                self._settle(results[i], applied)
                settled[i] = True
            pending.clear()

        try:
            for i, result in enumerate(results):
                has_transition = False
                for effect in result.effects:
                    if isinstance(effect, Transition):
                        has_transition = True
                        continue
                    flush()
                    if isinstance(effect, Update):
                        run.db.update(effect.job_key, **effect.fields)
                    elif isinstance(effect, Failure):
                        self._fail(effect)
                    elif isinstance(effect, ResultsFailure):
                        self._results_failed(effect)
                if has_transition:
                    pending.append(i)
                else:
                    self._settle(result, True)
                    settled[i] = True
            flush()
        except JobDatabaseError:
            run.unapplied = [r for r, done in zip(results, settled) if not done] + run.unapplied
            raise

    def _settle(self, result: TaskResult, applied: bool) -> None:
        """The run's own bookkeeping of an applied result, and the work that follows it."""
        run = self.run
        for name in result.counts:
            run.stats[name] += 1
        if result.backend is not None:
            if result.backend_error is not None and is_backend_full(result.backend_error):
                racing = [k for k, b in run.starting.items() if b == result.backend and k != result.job_key]
                run.health.full(result.backend, started_on(run.db, result.backend), racing)
                run.stats["job start refused (backend full)"] += 1
            elif result.backend_error is not None:
                if run.health.failed(result.backend, result.backend_error):
                    run.stats["backend paused"] += 1
            elif result.backend_ok:
                run.health.ok(result.backend)
                if "job start" in result.counts and result.backend in run.health.capacity:
                    run.health.started(result.backend, started_on(run.db, result.backend), result.job_key)
        key = result.job_key
        run.starting.pop(key, None)
        if result.record is not None and result.record.backend_name:
            if "job finished" in result.counts or "job failed" in result.counts:
                run.health.job_ended(result.record.backend_name, "job finished" in result.counts,
                                     parse_utc(result.record.fields.get("running_start_time")))
        if result.needs_start is not None:
            (run.needs_start.add if result.needs_start else run.needs_start.discard)(key)
        if result.results_done:
            run.finish_failures.pop(key, None)
        if result.task_done:
            run.inflight.discard(key)
        if result.then is not None and applied:
            self.follow(result)

    def _transition(self, change: Transition, backend_name: str | None = None) -> bool:
        run = self.run
        try:
            outcome = run.db.transition(change.job_key, change.new, message=change.message,
                                        manager_id=self.manager_id, expect=change.expect, **dict(change.fields))
        except InvalidTransition as exc:
            _log.warning("job %s: %s", change.job_key, exc)
            return False
        run.events.log(change, outcome, backend_name)
        return True

    def _fail(self, failure: Failure) -> None:
        """Retry a failed job later (retryable and attempts left) or give it its final status."""
        run = self.run
        current = run.db.get(failure.job_key)
        change, count = after_failure(current, failure.info, stage=failure.stage,
                                      backend_job_id=failure.backend_job_id, max_attempts=self.max_attempts,
                                      backoff=self.backoff)
        self._transition(change, current.backend_name)
        run.stats[count] += 1
        run.needs_start.discard(failure.job_key)

    def _results_failed(self, failure: ResultsFailure) -> None:
        """Handle the results again later, run the job again, or give up with ``error``."""
        run = self.run
        key, info = failure.job_key, failure.info
        n = run.finish_failures[key] + 1
        _log.warning("job %s: handling the finished job failed (%d): %s", key, n, info.message)
        if failure.run_again:
            self._fail(Failure(key, info, "results", failure.backend_job_id))
            run.finish_failures.pop(key, None)
        elif info.retryable and n < self.max_attempts:
            run.db.update(key, error_class=info.error_class, error_message=info.message)
            run.finish_failures[key] = n
            run.finish_due[key] = run.health.clock.now() + self.backoff.delay(n, info.retry_after)
        else:
            self._transition(Transition(key, S.ERROR, message=info.history_message("results"), fields=dict(
                error_class=info.error_class, error_message=info.message, claimed_by=None, lease_until=None)))
            run.finish_failures.pop(key, None)  # ended: nothing of it is kept
