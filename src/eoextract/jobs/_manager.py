"""The job manager: runs a job database's jobs on several openEO backends.

API-compatible with openeo's ``MultiBackendJobManager`` (``add_backend``, ``run_jobs``,
``start_job_thread``/``stop_job_thread``, ``on_job_done``/``on_job_error``/``on_job_cancel``),
with a real job database, a status history, retries with backoff, crash-safe creation
(tagged descriptions, adoption after a restart) and cheap polling (one job listing per
backend per cycle).

The run loop (one thread) claims due jobs while a backend has free slots
(:mod:`~eoextract.jobs._scheduling`), polls the backends (:mod:`~eoextract.jobs._polling`),
takes over interrupted work (:mod:`~eoextract.jobs._recovery`), and hands blocking work
(creating and starting jobs, results, user callbacks: :mod:`~eoextract.jobs._tasks`) to a
thread pool. Tasks hand back :class:`~eoextract.jobs._outcomes.TaskResult` records; only
the loop writes to the job database, every status change through
:meth:`JobDatabase.transition` with its history row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import openeo
import pandas as pd
from openeo.rest.job import BatchJob

from eoextract._util.checksum import ALGORITHMS, DEFAULT_ALGORITHM
from eoextract._util.utc import utc_now
from eoextract.errors import ConfigurationError, InvalidTransition, JobDatabaseError
from eoextract.jobs._backends import BackendSpec
from eoextract.jobs._budget import Budget
from eoextract.jobs._classify import Backoff, classify
from eoextract.jobs._download._transfer import DEFAULT_MAX_ASSET_BYTES
from eoextract.jobs._job_dirs import JobDirs
from eoextract.jobs._job_thread import JobThread
from eoextract.jobs._quality import JobOutput, QualityCheck, gate
from eoextract.jobs._hooks import FinishedJob, FinishedJobResult
from eoextract.jobs._outcomes import FollowUp, ResultApplier, TaskResult
from eoextract.jobs._polling import poll_each
from eoextract.jobs._recovery import adopt, reconcile, release_dead_managers
from eoextract.jobs._runstate import _Run
from eoextract.jobs._scheduling import (BackendHealth, BackendLoad, claim_launches, default_backend_order,
                                        due_for_results, starts_with_room, stop_on_outage)
from eoextract.jobs._tasks import (call_hook, cancel_job, create_job, download_results, finish_job,
                                   handle_job_error, start_created)
from eoextract.jobs.db import JobDatabase, JobRecord
from eoextract.jobs.db import open_for_run
from eoextract.jobs.db._openeo_db import openeo_arguments
from eoextract.jobs.db import Transition
from eoextract.jobs.status import TERMINAL, JobStatus

_log = logging.getLogger("eoextract.jobs.manager")
S = JobStatus
_OPEN = frozenset(set(JobStatus) - TERMINAL)
#: Expired leases of other managers are looked for at most once per this share of
#: ``lease_seconds`` (a query over the in-flight jobs of every manager).
ADOPTION_INTERVAL_SHARE = 0.1


def _start_job_default(row: pd.Series, connection: openeo.Connection, **kwargs: Any) -> BatchJob | None:
    raise NotImplementedError("No 'start_job' callable given to run_jobs()")


class JobManager(JobDirs, JobThread):
    """Run the jobs of a job database on registered openEO backends.

    Args:
        poll_sleep: seconds between two polls of the backends.
        root_dir: folder for per-job output (``job_<id>/``) when downloading results.
        download_results: download the results of finished jobs (``on_job_done``).
        cancel_running_job_after: cancel jobs running longer than this many seconds.
        max_attempts: attempts per job for retryable failures (backend errors, lost jobs).
        retry_backoff: seconds before the first retry (doubled each time, capped at 15 min),
            a :class:`~eoextract.jobs.RetryPolicy`, or ``callable(n) -> seconds``.
        lease_seconds: how long a claimed job stays reserved for this manager.
        max_workers: threads for blocking work (creating jobs, downloads, callbacks).
        manager_id: identifier recorded in the history (default: host, pid and a nonce).
        max_asset_bytes: the largest result file a download accepts, whatever the backend
            announces (default 16 GiB; ``None``: the announced size and the free disk space only).
        max_backend_outage: seconds the run waits for backends that fail every request,
            while no backend that answers has work; then the run raises the last error
            (as openeo's manager does at once), leaving every job as it is for the next run
            (default 6 h; ``None``: no limit).
        quality_checks: checks of each finished job's files (see :mod:`~eoextract.jobs._quality`).
        checksum_algorithm: hash of downloaded files a backend announces no checksum for
            (multihash name: ``"sha2-256"``, the default, or ``"blake3"``); announced ones are verified.
    """

    def __init__(
        self,
        poll_sleep: float = 60,
        root_dir: str | Path | None = ".",
        *,
        download_results: bool = True,
        cancel_running_job_after: float | None = None,
        max_attempts: int = 3,
        retry_backoff: Backoff | float | Callable[[int], float] | None = None,
        lease_seconds: float = 300.0,
        max_workers: int | None = None,
        manager_id: str | None = None,
        max_asset_bytes: int | None = DEFAULT_MAX_ASSET_BYTES,
        max_backend_outage: float | None = 6 * 3600.0,
        quality_checks: Sequence[QualityCheck] = (),
        checksum_algorithm: str = DEFAULT_ALGORITHM,
    ) -> None:
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        if checksum_algorithm not in ALGORITHMS:
            raise ConfigurationError(f"unknown checksum_algorithm {checksum_algorithm!r}; known: {', '.join(ALGORITHMS)}")
        self.checksum_algorithm = checksum_algorithm
        self.poll_sleep = float(poll_sleep)
        self._root_dir = Path(root_dir or ".").expanduser().absolute()  # resolved once
        self._download_results = download_results
        self.max_asset_bytes = max_asset_bytes
        self.max_backend_outage = max_backend_outage
        self.quality_checks = tuple(quality_checks)
        self._cancel_running_job_after = (
            timedelta(seconds=cancel_running_job_after) if cancel_running_job_after is not None else None
        )
        self.max_attempts = int(max_attempts)
        self.backoff = Backoff.coerce(retry_backoff)
        self.lease_seconds = float(lease_seconds)
        self._max_workers = max_workers
        self._coalesce_s = min(0.05, self.poll_sleep / 4)
        self.manager_id = manager_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.backends: dict[str, BackendSpec] = {}
        self._thread: threading.Thread | None = None
        self._run: _Run | None = None

    # ------------------------------------------------------------------ backends
    def add_backend(
        self,
        name: str,
        connection: openeo.Connection | Callable[[], openeo.Connection],
        parallel_jobs: int = 2,
        queueing_limit: int | None = None,
    ) -> None:
        """Register a backend: a name, a ``Connection`` (or a factory), its slots and the most
        jobs it may hold waiting (created or queued; None: no other limit than its slots)."""
        if isinstance(connection, openeo.Connection):
            con = connection
            factory: Callable[[], openeo.Connection] = lambda: con  # noqa: E731
        elif callable(connection):
            factory = connection
        else:
            raise ConfigurationError(f"connection for backend {name!r} must be a Connection or a callable")
        if parallel_jobs < 1:
            raise ConfigurationError(f"parallel_jobs for backend {name!r} must be at least 1")
        self.backends[name] = BackendSpec(name=name, get_connection=factory, parallel_jobs=int(parallel_jobs),
                                          queueing_limit=queueing_limit)

    def _get_connection(self, backend_name: str, resilient: bool = True) -> openeo.Connection:
        """The connection of a registered backend (openeo's ``connection_provider``)."""
        try:
            return self.backends[backend_name].connection()
        except KeyError:
            raise ConfigurationError(f"unknown backend {backend_name!r}") from None

    # ------------------------------------------------------------------ public run API
    def run_jobs(
        self,
        df: pd.DataFrame | None = None,
        start_job: Callable[..., Any] = _start_job_default,
        job_db: str | Path | JobDatabase | Any | None = None,
        status_callback: Callable[[pd.DataFrame], Any] | None = None,
        *,
        progress: bool = False,
        budget: float | None = None,
        **kwargs: Any,
    ) -> dict:
        """Run every job of the database to a final status and return run statistics.

        Args:
            df: job dataframe; its new rows are added to ``job_db`` (existing keys are kept).
            start_job: creates (and may start) the job of one row; see :class:`~eoextract.jobs.StartJob`.
            job_db: a path (``.db``/``.sqlite``, ``.csv``, ``.parquet``), a database URL, a
                :class:`~eoextract.jobs.db.JobDatabase`, or an openeo ``JobDatabaseInterface``
                (``CsvJobDatabase``, ``ParquetJobDatabase``, ...), kept the way openeo does.
                WorldCereal's ``run_jobs(start_job, job_db, status_callback)`` order works too.
            status_callback: called with the job dataframe after each poll; an exception it
                raises is logged and the run goes on.
            progress: show live progress (slots per backend, counts, rate, ETA) when
                standard output is a terminal.
            budget: credits the run may spend: no new job is created once what was spent
                plus an estimate for the open jobs would pass it (see :mod:`~eoextract.jobs._budget`).

        Returns:
            openeo-style counters (``"start_job call"``, ``"job finished"``, ...) plus
            ``"status_counts"``, ``"attempts"`` and ``"duration_s"``.
        """
        df, start_job, job_db, status_callback = openeo_arguments(df, start_job, job_db, status_callback,
                                                                  kwargs, _start_job_default)
        self._check_ready(start_job)
        db = open_for_run(df, job_db)
        run = self._prepare(db, start_job)
        run.status_callback = status_callback
        run.budget = Budget(float(budget)) if budget is not None else None
        if budget is not None:  # shown by the live status page
            db.save_backend_state({**db.backend_state(), "budget": float(budget)})
        if progress:
            from eoextract.jobs._progress import RunProgress

            run.progress = RunProgress({n: b.parallel_jobs for n, b in self.backends.items()})
        try:
            self._loop(run)
        finally:
            self._shutdown(run, wait=True)
            if run.progress is not None:
                run.progress.close(run.db)
        return run.summary()

    # ------------------------------------------------------------------ hooks (openeo's)
    def on_job_done(self, job: BatchJob, row: pd.Series) -> None:
        """Called (in a worker thread) for a finished job, by :meth:`process_finished_job`.

        By default downloads its results to ``root_dir/job_<id>/`` as openeo does (the assets
        and the results document ``job-results.json``; streamed, verified against the
        backend's size and checksum, placed atomically) and writes the job's metadata to
        ``job_<id>.json``.
        """
        if self._download_results:
            download_results(job, self.ensure_job_dir_exists(job.job_id), str(row.name),
                             self.get_job_metadata_path(job.job_id), max_asset_bytes=self.max_asset_bytes,
                             checksum_algorithm=self.checksum_algorithm)

    def process_finished_job(self, job: FinishedJob) -> FinishedJobResult | None:
        """Handle the results of a job that finished on its backend, before it is ``finished``.

        Called in a worker thread while the job is ``downloading`` (or ``postprocessing``,
        when an interrupted run got that far). What it returns is recorded by the run loop:
        the job becomes ``finished`` with the result's :attr:`~FinishedJobResult.fields`
        (e.g. ``output_dir``) and history message, or runs again on its backend when the
        result says so (:attr:`~FinishedJobResult.run_again`).

        By default it calls :meth:`on_job_done` (openeo's hook, which downloads the
        results) with ``job.batch_job`` and ``job.row``, then the ``quality_checks``.

        Override it to decide what happens to finished jobs (e.g. place the files where
        they belong, describe them, run a post-processing step); call
        ``job.postprocessing()`` once the files are in place, so the job shows
        ``postprocessing`` meanwhile. Return fields instead of writing to the job database:
        the loop records them with the status change, in the same transaction.

        Args:
            job: The finished job: its key, backend, backend job id, row and connection.

        Returns:
            What to record; ``None`` is the same as ``FinishedJobResult()``.

        Raises:
            Exception: Marks this step of this job only: a retryable one (connection, 5xx,
                checksum, full disk) is tried again up to ``max_attempts`` times, any other
                (e.g. raised by user code) ends the job in ``error``.
        """
        self.on_job_done(job.batch_job, job.row)
        files = [p for p in self.get_job_dir(job.backend_job_id).glob("*") if p.is_file()]
        return FinishedJobResult(run_again=gate(self.quality_checks, JobOutput(job.job_key, job.row, files)))

    def order_backends(self, loads: list[BackendLoad]) -> Sequence[str]:
        """Which backends take unpinned jobs first (pinned rows stay on their backend).
        Override for a policy of your own; by default the most good jobs per hour this run
        (throughput × success rate, see :func:`~eoextract.jobs._scheduling.default_backend_order`)."""
        return default_backend_order(loads)

    # ------------------------------------------------------------------ set-up
    def _check_ready(self, start_job: Callable[..., Any]) -> None:
        if not self.backends:
            raise ConfigurationError("no backends registered: call add_backend() first")
        if not callable(start_job):
            raise ConfigurationError("start_job must be callable")

    def _prepare(self, db: JobDatabase, start_job: Callable[..., Any]) -> _Run:
        run = _Run(db=db, start_job=start_job, health=BackendHealth(self.backoff))
        run.health.restore(db, self.backends)
        slots = sum(b.parallel_jobs for b in self.backends.values())
        workers = self._max_workers or min(32, max(4, slots + 2))
        run.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eoextract-task")
        self._run = run
        for name, spec in self.backends.items():
            try:
                db.register_backend(name, spec.connection().root_url)
            except Exception as exc:  # noqa: BLE001 - an unreachable backend is retried later
                _log.warning("backend %r not reachable at start-up: %s", name, classify(exc).message)
                db.register_backend(name, None)
        # Rows pinned to a name that is not a registered backend get whichever runs them.
        for key, name in db.unpin_unknown_backends(self.backends).items():
            _log.warning("job %s names backend %r, which is not registered; it will run on any backend",
                         key, name)
        # Jobs left in flight by an earlier run: a manager of this host that died (its
        # process is gone) gives up its leases at once; others' leases must expire first.
        release_dead_managers(db)
        self._adopt(run)
        return run

    def _adopt(self, run: _Run) -> None:
        adopt(run, manager_id=self.manager_id, lease_seconds=self.lease_seconds, backend_names=self.backends)

    # ------------------------------------------------------------------ the loop
    def _loop(self, run: _Run) -> None:
        clock = run.health.clock
        next_poll = 0.0
        next_lease_renewal = clock.now() + self.lease_seconds / 3
        db_failures = 0
        while not run.stop.is_set():
            run.wake.clear()
            try:
                self._apply(run, run.drain())  # what tasks handed back since the last cycle
                if run.unreconciled:
                    self._apply(run, reconcile(run, self.backends))
                if clock.now() >= next_poll:
                    polled_at = clock.now()  # the next poll is due an interval after this one began
                    self._poll(run)
                    next_poll = polled_at + run.health.poll_interval(self.poll_sleep, bool(run.waiting_start))
                    stop_on_outage(run.db, self.backends, run.health, self.max_backend_outage)
                self._resume_finishing(run)
                self._launch(run)
                if run.progress is not None:
                    run.progress.tick(run.db)
                if clock.now() >= next_lease_renewal:
                    run.db.renew_leases(self.manager_id, now=utc_now(), lease_seconds=self.lease_seconds)
                    next_lease_renewal = clock.now() + self.lease_seconds / 3
                run.stats["run_jobs loop"] += 1
                if self._is_done(run):
                    run.db.flush()
                    self._report_state(run)  # the final counts, after the last downloads
                    break
                db_failures = 0
            except JobDatabaseError as exc:
                db_failures += 1
                delay = self.backoff.delay(db_failures) if db_failures > 1 else 1.0
                _log.error("job database error (retrying in %.0f s): %s", delay, exc)
                clock.sleep(min(delay, 60.0), slice_s=1.0, stop=run.stop.is_set)
                continue
            timeout = max(0.0, next_poll - clock.now())
            if run.inflight or run.finish_due:
                # tasks hand back results in real time: wait for them, not for time.sleep
                if run.wake.wait(timeout):
                    run.stop.wait(min(self._coalesce_s, timeout))  # let the others finish too
            else:
                clock.sleep(timeout, slice_s=1.0 if run.threaded else None, stop=run.stop.is_set)
            run.stats["sleep"] += 1

    def _poll(self, run: _Run) -> None:
        """Poll the backends, take over abandoned jobs, save, tell the status callback."""
        run.stats["track_statuses"] += 1
        run.waiting_start.clear()  # the poll says again which created jobs wait for a start
        for results in poll_each(run.db, self.backends, run.health, manager_id=self.manager_id,
                                 inflight=run.inflight, needs_start=run.needs_start,
                                 cancel_after=self._cancel_running_job_after,
                                 results_work=self._has_results_work()):
            self._apply(run, results)  # a backend's freed places are taken before the next is asked
        now = run.health.clock.now()
        if now >= run.next_adoption:  # jobs of managers that stopped renewing their leases
            self._adopt(run)  # a lease expires lease_seconds after its last renewal: no hurry
            run.next_adoption = now + self.lease_seconds * ADOPTION_INTERVAL_SHARE
        run.health.keep(run.db)
        if run.budget is not None:
            run.budget.refresh(run.db, sum(run.db.active_counts().values()))
        run.db.flush()
        run.stats["job_db persist"] += 1
        self._report_state(run)

    def _report_state(self, run: _Run) -> None:
        """Log the status histogram and run stats; hand the table to the status callback."""
        if _log.isEnabledFor(logging.INFO):  # the histogram is a query over the whole table
            _log.info("Job status histogram: %s. Run stats: %s", run.db.count_by_status(), dict(run.stats))
        if run.status_callback is not None:
            try:
                run.status_callback(run.db.read())
            except Exception:  # noqa: BLE001 - a failing callback never stops the run
                _log.exception("status_callback raised; the run goes on")

    def _is_done(self, run: _Run) -> bool:
        if run.inflight or run.finish_due or run.unapplied:
            return False
        if run.budget is not None and run.budget.reached:  # what is left waits for a new budget
            return not run.db.any_with_status(_OPEN - {S.NOT_STARTED})
        return not run.db.any_with_status(_OPEN)

    def _shutdown(self, run: _Run, *, wait: bool) -> None:
        run.stop.set()
        if run.executor is not None:
            run.executor.shutdown(wait=wait, cancel_futures=not wait)
        try:
            if wait:  # record what the tasks that were still running found out
                self._apply(run, run.drain())
            run.db.release(self.manager_id)
            run.db.flush()
        except Exception:  # noqa: BLE001
            _log.exception("could not release leases / flush the job database")

    def _has_results_work(self) -> bool:
        """Whether finished jobs go through ``downloading`` (results or a custom hook)."""
        cls = type(self)
        return (self._download_results or cls.on_job_done is not JobManager.on_job_done
                or cls.process_finished_job is not JobManager.process_finished_job)

    # ------------------------------------------------------------------ starting work
    def _launch(self, run: _Run) -> None:
        """Claim due jobs while backends have free slots (and the budget room); create each
        in the pool."""
        for batch in claim_launches(run.db, self.backends, run.health, manager_id=self.manager_id,
                                    lease_seconds=self.lease_seconds,
                                    max_new=run.budget.left if run.budget else None,
                                    order=self.order_backends, starting=run.starting):
            launched = 0
            for launch in batch:
                if isinstance(launch.outcome, InvalidTransition):
                    _log.warning("job %s: %s", launch.change.job_key, launch.outcome)
                    continue
                run.events.log(launch.change, launch.outcome, launch.backend.name)
                launched += 1
                self._submit(run, launch.change.job_key, create_job, self, run.start_job, launch.record,
                             launch.backend, launch.tag, launch.start)
            run.stats["job launch"] += launched
            run.stats["job create attempts"] += launched
            if run.budget is not None:
                run.budget.take(launched)

    def _resume_finishing(self, run: _Run) -> None:
        """(Re)submit due jobs left in ``downloading``/``postprocessing`` (retries, restarts)."""
        for key in due_for_results(run.finish_due, run.inflight, run.health.clock.now()):
            rec = run.db.get(key)
            spec = self.backends.get(rec.backend_name or "")
            if rec.status in (S.DOWNLOADING, S.POSTPROCESSING) and spec is not None:
                self._finish(run, rec, spec)

    def _finish(self, run: _Run, rec: JobRecord, spec: BackendSpec) -> None:
        key = rec.job_key

        def report(change: Transition) -> None:
            run.results.put(TaskResult(key, (change,)))
            run.wake.set()

        job = FinishedJob(job_key=key, backend_name=spec.name, backend_job_id=rec.backend_job_id,
                          status=rec.status, row=rec.as_series(), connect=spec.connection, report=report)
        self._submit(run, key, finish_job, self, job)

    def _follow(self, run: _Run, result: TaskResult) -> None:
        """Hand the work that follows a result (:attr:`TaskResult.then`) to the pool."""
        rec = result.record
        spec = self.backends[rec.backend_name]
        if result.then is FollowUp.FINISH:
            self._finish(run, run.db.get(rec.job_key), spec)
        elif result.then is FollowUp.START:
            run.waiting_start[rec.job_key] = rec  # started once the results are applied
        elif result.then is FollowUp.JOB_ERROR:
            self._submit(run, rec.job_key, handle_job_error, self, rec, spec)
        elif result.then is FollowUp.CANCEL:
            self._submit(run, rec.job_key, cancel_job, rec, spec)
        elif result.then is FollowUp.CANCELED:
            self._submit(run, rec.job_key, call_hook, rec, spec, self.on_job_cancel)

    def _submit(self, run: _Run, key: str, task: Callable[..., TaskResult], *args: Any) -> None:
        """Run ``task`` in the pool; the job stays in flight (not polled, not relaunched)
        until the loop applied its result."""
        if run.stop.is_set():
            return  # stopping: the next run takes the job up where it is
        run.inflight.add(key)

        def work() -> None:
            try:
                result = task(*args)
            except Exception:  # noqa: BLE001 - never kill the pool; the job stays as it is
                _log.exception("unexpected error in a task of job %s", key)
                result = TaskResult(key, task_done=True)
            run.results.put(result)
            run.wake.set()

        assert run.executor is not None
        run.executor.submit(work)

    # ------------------------------------------------------------------ applying results
    def _apply(self, run: _Run, results: Iterable[TaskResult]) -> None:
        ResultApplier(run, manager_id=self.manager_id, max_attempts=self.max_attempts, backoff=self.backoff,
                      follow=lambda result: self._follow(run, result)).apply(results)
        for rec, spec in starts_with_room(run.db, self.backends, run.health, run.waiting_start, run.starting):
            self._submit(run, rec.job_key, start_created, rec, spec)


#: openeo's name, for scripts that port with an import change.
MultiBackendJobManager = JobManager
