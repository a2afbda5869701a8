"""The job manager: runs a job database's jobs on several openEO backends.

API-compatible with openeo's ``MultiBackendJobManager`` (``add_backend``, ``run_jobs``,
``start_job_thread``/``stop_job_thread``, ``on_job_done``/``on_job_error``/``on_job_cancel``),
with a real job database, a status history, retries with backoff, crash-safe creation
(tagged descriptions, adoption after a restart) and cheap polling (one job listing per
backend per cycle).

The run loop (one thread) claims due jobs while a backend has free slots, polls the
backends, and hands blocking work (creating and starting jobs, downloads, user callbacks)
to a thread pool. Every status change goes through :meth:`JobDatabase.transition`, under
one lock, with its history row.
"""

from __future__ import annotations

import collections
import inspect
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import openeo
import pandas as pd
from openeo.rest.job import BatchJob

from eoextract.errors import ConfigurationError, InvalidTransition, JobDatabaseError
from eoextract.jobs.backends import BackendSpec, find_tagged_jobs, make_tag, tag_requests
from eoextract.jobs.db.base import ADOPTABLE, JobDatabase, JobRecord, Transition
from eoextract.jobs.retry import Backoff, ErrorInfo, classify
from eoextract.jobs.status import ACTIVE, ON_BACKEND, TERMINAL, JobStatus

__all__ = ["JobManager", "MultiBackendJobManager", "StartJob"]

_log = logging.getLogger(__name__)
S = JobStatus
_UNSET = object()
_OPEN = frozenset(set(JobStatus) - TERMINAL)


class StartJob(Protocol):
    """``start_job(row, connection, connection_provider=..., provider=...) -> BatchJob | None``.

    Parameters the function does not declare are not passed. Returning ``None`` marks the
    row ``skipped``; a job that was only created is started by the manager.
    """

    def __call__(self, *, row: pd.Series, connection: openeo.Connection, **kwargs: Any) -> BatchJob | None: ...


def _start_job_default(row: pd.Series, connection: openeo.Connection, **kwargs: Any) -> BatchJob | None:
    raise NotImplementedError("No 'start_job' callable given to run_jobs()")


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


class JobManager:
    """Run the jobs of a job database on registered openEO backends.

    Args:
        poll_sleep: seconds between two polls of the backends.
        root_dir: folder for per-job output (``job_<id>/``) when downloading results.
        download_results: download the results of finished jobs (``on_job_done``).
        cancel_running_job_after: cancel jobs running longer than this many seconds.
        max_attempts: attempts per job for retryable failures (backend errors, lost jobs).
        retry_backoff: seconds before the first retry (doubled each time, capped at 15 min),
            a :class:`~eoextract.jobs.retry.Backoff`, or ``callable(n) -> seconds``.
        lease_seconds: how long a claimed job stays reserved for this manager.
        max_workers: threads for blocking work (creating jobs, downloads, callbacks).
        manager_id: identifier recorded in the history (default: host, pid and a nonce).
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
    ) -> None:
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        self.poll_sleep = float(poll_sleep)
        self._root_dir = Path(root_dir or ".")
        self._download_results = download_results
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
    ) -> None:
        """Register a backend with a name, a ``Connection`` (or a factory) and its slots."""
        if isinstance(connection, openeo.Connection):
            con = connection
            factory: Callable[[], openeo.Connection] = lambda: con  # noqa: E731
        elif callable(connection):
            factory = connection
        else:
            raise ConfigurationError(f"connection for backend {name!r} must be a Connection or a callable")
        if parallel_jobs < 1:
            raise ConfigurationError(f"parallel_jobs for backend {name!r} must be at least 1")
        self.backends[name] = BackendSpec(name=name, get_connection=factory, parallel_jobs=int(parallel_jobs))

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
        job_db: str | Path | JobDatabase | None = None,
        *,
        progress: bool = False,
        **kwargs: Any,
    ) -> dict:
        """Run every job of the database to a final status and return run statistics.

        Args:
            df: job dataframe; its new rows are added to ``job_db`` (existing keys are kept).
            start_job: creates (and may start) the job of one row; see :class:`StartJob`.
            job_db: a path (``.db``/``.sqlite``, ``.csv``, ``.parquet``), a database URL, or
                a :class:`~eoextract.jobs.db.base.JobDatabase`.
            progress: show live progress (slots per backend, counts, rate, ETA) when
                standard output is a terminal (:class:`~eoextract.jobs.progress.RunProgress`).

        Returns:
            openeo-style counters (``"start_job call"``, ``"job finished"``, ...) plus
            ``"status_counts"``, ``"attempts"`` and ``"duration_s"``.
        """
        if "output_file" in kwargs:
            if job_db is not None:
                raise ConfigurationError("give only one of 'output_file' and 'job_db'")
            import warnings

            warnings.warn("'output_file' is deprecated, use 'job_db'", DeprecationWarning, stacklevel=2)
            job_db = kwargs.pop("output_file")
        if kwargs:
            raise TypeError(f"unexpected keyword arguments: {sorted(kwargs)}")
        self._check_ready(start_job)
        db = self._open_db(df, job_db)
        run = self._prepare(db, start_job)
        if progress:
            from eoextract.jobs.progress import RunProgress

            run.progress = RunProgress({n: b.parallel_jobs for n, b in self.backends.items()})
        try:
            self._loop(run)
        finally:
            self._shutdown(run, wait=True)
            if run.progress is not None:
                run.progress.close(run.db)
        return self._summary(run)

    def start_job_thread(self, start_job: Callable[..., Any], job_db: str | Path | JobDatabase) -> None:
        """Run the jobs in a background thread; returns at once (see :meth:`stop_job_thread`)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the job thread is already running")
        self._check_ready(start_job)
        db = self._open_db(None, job_db)
        run = self._prepare(db, start_job)

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

    # ------------------------------------------------------------------ hooks (openeo's)
    def on_job_done(self, job: BatchJob, row: pd.Series) -> None:
        """Called (in a worker thread) for a finished job.

        By default downloads its results to ``root_dir/job_<id>/`` (streamed, verified
        against the backend's size and checksum, placed atomically; a rerun skips files
        already verified) and writes the job's metadata to ``job_<id>.json``.
        """
        if not self._download_results:
            return
        from eoextract.jobs.download import download_job_assets, fetch_job_assets

        job_dir = self.ensure_job_dir_exists(job.job_id)
        assets, session, headers = fetch_job_assets(job.connection, job.job_id)
        download_job_assets(session, assets, self._root_dir,
                            lambda asset, tmp: job_dir / asset.relative_path,
                            job_key=str(row.name), headers=headers)
        metadata = job.describe()
        self.get_job_metadata_path(job.job_id).write_text(json.dumps(metadata, indent=2))

    def on_job_error(self, job: BatchJob, row: pd.Series) -> None:
        """Called for a job that ended in ``error``; writes its error logs by default."""
        logs = job.logs(level="error")
        if len(logs) > 0:
            self.ensure_job_dir_exists(job.job_id)
            self.get_error_log_path(job.job_id).write_text(json.dumps(list(logs), indent=2, default=str))

    def on_job_cancel(self, job: BatchJob, row: pd.Series) -> None:
        """Called for a job that was canceled; does nothing by default."""

    def get_job_dir(self, job_id: str) -> Path:
        """Folder for a job's results, metadata and error logs."""
        return self._root_dir / f"job_{job_id}"

    def get_error_log_path(self, job_id: str) -> Path:
        return self.get_job_dir(job_id) / f"job_{job_id}_errors.json"

    def get_job_metadata_path(self, job_id: str) -> Path:
        return self.get_job_dir(job_id) / f"job_{job_id}.json"

    def ensure_job_dir_exists(self, job_id: str) -> Path:
        job_dir = self.get_job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        return job_dir

    # ------------------------------------------------------------------ set-up
    def _open_db(self, df: pd.DataFrame | None, job_db: str | Path | JobDatabase | None) -> JobDatabase:
        from eoextract.jobs.db import create_job_db, get_job_db

        if job_db is None:
            raise ConfigurationError("run_jobs needs a job_db: a path such as 'jobs.db' or a JobDatabase")
        if isinstance(job_db, JobDatabase):
            if df is not None:
                job_db.initialize_from_df(df, on_exists="append")
            return job_db
        if not isinstance(job_db, (str, Path)):
            raise ConfigurationError(f"unsupported job_db {job_db!r}")
        if df is not None:
            return create_job_db(job_db, df, on_exists="append")
        return get_job_db(job_db)

    def _check_ready(self, start_job: Callable[..., Any]) -> None:
        if not self.backends:
            raise ConfigurationError("no backends registered: call add_backend() first")
        if not callable(start_job):
            raise ConfigurationError("start_job must be callable")

    def _prepare(self, db: JobDatabase, start_job: Callable[..., Any]) -> _Run:
        run = _Run(db=db, start_job=start_job)
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
        for rec in db.jobs([S.NOT_STARTED]):
            if rec.backend_name and rec.backend_name not in self.backends:
                _log.warning("job %s names backend %r, which is not registered; it will run on any backend",
                             rec.job_key, rec.backend_name)
                db.update(rec.job_key, backend_name=None)
        # Jobs left in flight by an earlier run: a manager of this host that died (its
        # process is gone) gives up its leases at once; others' leases must expire first.
        for manager_id in {r.fields.get("claimed_by") for r in db.jobs(ADOPTABLE)} - {None}:
            if _is_dead_local_manager(manager_id):
                _log.info("taking over the jobs of manager %s (its process has ended)", manager_id)
                db.release(manager_id)
        self._adopt(run)
        return run

    def _adopt(self, run: _Run) -> None:
        """Take over in-flight jobs whose manager stopped renewing its lease."""
        with run.lock:
            adopted = run.db.adopt_expired(self.manager_id, now=_utcnow(), lease_seconds=self.lease_seconds,
                                           backend_names=list(self.backends))
            for rec in adopted:
                run.stats["job adopted from another manager"] += 1
                if rec.status is S.CREATING:
                    run.unreconciled.setdefault(rec.backend_name or "", set()).add(rec.job_key)
                elif rec.status is S.CREATED:
                    run.needs_start.add(rec.job_key)
                elif rec.status in (S.DOWNLOADING, S.POSTPROCESSING):
                    run.finish_due[rec.job_key] = 0.0

    # ------------------------------------------------------------------ the loop
    def _loop(self, run: _Run) -> None:
        next_poll = 0.0
        next_lease_renewal = time.monotonic() + self.lease_seconds / 3
        db_failures = 0
        while not run.stop.is_set():
            run.wake.clear()
            try:
                if run.unreconciled:
                    with run.lock:
                        self._reconcile(run)
                if time.monotonic() >= next_poll:
                    self._poll(run)  # takes the lock only around database access
                    next_poll = time.monotonic() + self.poll_sleep
                with run.lock:
                    self._resume_finishing(run)
                    self._launch(run)
                    if run.progress is not None:
                        run.progress.tick(run.db)
                    if time.monotonic() >= next_lease_renewal:
                        run.db.renew_leases(self.manager_id, now=_utcnow(), lease_seconds=self.lease_seconds)
                        self._adopt(run)
                        next_lease_renewal = time.monotonic() + self.lease_seconds / 3
                    run.stats["run_jobs loop"] += 1
                    if self._is_done(run):
                        break
                db_failures = 0
            except JobDatabaseError as exc:
                db_failures += 1
                delay = self.backoff.delay(db_failures) if db_failures > 1 else 1.0
                _log.error("job database error (retrying in %.0f s): %s", delay, exc)
                run.stop.wait(min(delay, 60.0))
                continue
            timeout = max(0.0, next_poll - time.monotonic())
            if run.wake.wait(timeout):
                # a task finished: give the others a moment, then handle them in one cycle
                run.stop.wait(min(self._coalesce_s, timeout))
            run.stats["sleep"] += 1

    def _is_done(self, run: _Run) -> bool:
        if run.inflight or run.finish_due:
            return False
        counts = run.db.count_by_status([str(s) for s in _OPEN])
        return sum(counts.values()) == 0

    def _shutdown(self, run: _Run, *, wait: bool) -> None:
        run.stop.set()
        if run.executor is not None:
            run.executor.shutdown(wait=wait, cancel_futures=not wait)
        try:
            with run.lock:
                run.db.release(self.manager_id)
                run.db.flush()
        except Exception:  # noqa: BLE001
            _log.exception("could not release leases / flush the job database")

    def _summary(self, run: _Run) -> dict:
        counts = run.db.count_by_status()
        summary: dict[str, Any] = dict(run.stats)
        summary["status_counts"] = {str(k): int(v) for k, v in counts.items()}
        summary["attempts"] = int(run.stats.get("job create attempts", 0))
        summary["duration_s"] = round(time.monotonic() - run.started_at, 3)
        return summary

    def _submit(self, run: _Run, key: str, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` in the pool; the job stays in flight (not polled, not relaunched) meanwhile."""
        with run.lock:
            run.inflight.add(key)

        def task() -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - the job is marked by fn; never kill the pool
                _log.exception("unexpected error in a task of job %s", key)
            finally:
                with run.lock:
                    run.inflight.discard(key)
                run.wake.set()

        assert run.executor is not None
        run.executor.submit(task)

    # ------------------------------------------------------------------ transitions
    def _transition(self, run: _Run, key: str, new: JobStatus, *, message: str | None = None,
                    expect: JobStatus | None = None, **fields: Any) -> bool:
        with run.lock:
            try:
                run.db.transition(key, new, message=message, manager_id=self.manager_id,
                                  expect=expect, **fields)
                return True
            except InvalidTransition as exc:
                _log.warning("job %s: %s", key, exc)
                return False

    def _fail(self, run: _Run, rec: JobRecord, info: ErrorInfo, *, stage: str,
              backend_job_id: str | None = None) -> None:
        """Retry a failed job later (retryable and attempts left) or give it its final status."""
        with run.lock:
            current = run.db.get(rec.job_key)
            attempt = current.attempt
            msg = f"{stage}: {info.message}"
            if backend_job_id:
                msg += f" (backend job {backend_job_id})"
            if info.retryable and attempt < self.max_attempts:
                delay = self.backoff.delay(max(1, attempt), info.retry_after)
                run.stats[f"{stage} retry"] += 1
                self._transition(
                    run, rec.job_key, S.NOT_STARTED, message=msg + f"; retry in {delay:.0f} s",
                    error_class=info.error_class, error_message=info.message, id=None,
                    next_attempt_at=_utcnow() + timedelta(seconds=delay), claimed_by=None, lease_until=None,
                )
            else:
                final = S.START_FAILED if stage == "start" else S.ERROR
                run.stats[f"{stage} error"] += 1
                self._transition(run, rec.job_key, final, message=msg, error_class=info.error_class,
                                 error_message=info.message, end_time=_utcnow(),
                                 claimed_by=None, lease_until=None)
            run.needs_start.discard(rec.job_key)

    def _backend_failed(self, run: _Run, name: str, info: ErrorInfo) -> None:
        """Back a backend off after repeated retryable failures, so it is not hammered."""
        if not info.retryable or info.lost:
            return
        run.backend_failures[name] += 1
        n = run.backend_failures[name]
        if n >= 3:
            delay = self.backoff.delay(n - 2, info.retry_after)
            run.backend_paused_until[name] = time.monotonic() + delay
            run.stats["backend paused"] += 1
            _log.warning("backend %r failed %d times in a row; pausing it for %.0f s", name, n, delay)
        elif info.retry_after:
            run.backend_paused_until[name] = time.monotonic() + info.retry_after

    def _backend_ok(self, run: _Run, name: str) -> None:
        run.backend_failures.pop(name, None)

    def _backend_paused(self, run: _Run, name: str) -> bool:
        return run.backend_paused_until.get(name, 0.0) > time.monotonic()

    # ------------------------------------------------------------------ launching
    def _launch(self, run: _Run) -> None:
        active = run.db.active_counts()
        for name, spec in self.backends.items():
            if self._backend_paused(run, name):
                continue
            free = spec.parallel_jobs - active.get(name, 0)
            if free <= 0:
                continue
            records = run.db.claim(free, manager_id=self.manager_id, now=_utcnow(),
                                   lease_seconds=self.lease_seconds, backend_name=name)
            batch = _Batch()
            for rec in records:
                attempt = rec.attempt + 1
                tag = make_tag(rec.job_key, attempt, uuid.uuid4().hex[:10])
                batch.add(
                    Transition(rec.job_key, S.CREATING, expect=S.NOT_STARTED,
                               message=f"attempt {attempt} on {name}",
                               fields=dict(backend_name=name, attempt=attempt, create_tag=tag, id=None,
                                           backend_status=None, next_attempt_at=None, start_time=_utcnow())),
                    then=(self._create_job, run, rec, spec, tag))
            launched = self._apply_batch(run, batch)
            run.stats["job launch"] += launched
            run.stats["job create attempts"] += launched

    def _apply_batch(self, run: _Run, batch: _Batch) -> int:
        """Apply a batch of transitions in one go; submit each applied one's follow-up task."""
        if not batch.items:
            return 0
        with run.lock:
            results = run.db.transition_many([t for t, _ in batch.items], manager_id=self.manager_id)
        applied = 0
        for (change, then), result in zip(batch.items, results):
            if isinstance(result, InvalidTransition):
                _log.warning("job %s: %s", change.job_key, result)
                continue
            applied += 1
            if then is not None:
                fn, *args = then
                self._submit(run, change.job_key, fn, *args)
        return applied

    def _create_job(self, run: _Run, rec: JobRecord, spec: BackendSpec, tag: str) -> None:
        """Worker: call the user's ``start_job`` with tagging, then start the job."""
        row = rec.as_series()
        row["backend_name"] = spec.name
        with tag_requests(tag) as ctx:
            try:
                connection = spec.connection()
                run.stats["start_job call"] += 1
                job = _call_with_accepted(run.start_job, row=row, connection=connection,
                                          connection_provider=self._get_connection, provider=spec.name)
            except Exception as exc:  # noqa: BLE001 - user code or backend; marks this job only
                info = classify(exc)
                _log.warning("job %s: start_job failed: %s", rec.job_key, info.message)
                self._backend_failed(run, spec.name, info)
                self._fail(run, rec, info, stage="start",
                           backend_job_id=ctx.created[-1] if ctx.created else None)
                return
            if job is None:
                run.stats["start_job skipped"] += 1
                self._transition(run, rec.job_key, S.SKIPPED, message="start_job returned None",
                                 claimed_by=None, lease_until=None)
                return
            if not isinstance(job, BatchJob):
                info = ErrorInfo("UserCodeError.TypeError",
                                 f"start_job returned {type(job).__name__}, expected BatchJob or None", False)
                self._fail(run, rec, info, stage="start")
                return
            job_id = job.job_id
            if job_id not in ctx.started:
                try:
                    job.start()
                    run.stats["job start"] += 1
                except Exception as exc:  # noqa: BLE001
                    info = classify(exc, job_known=True)
                    _log.warning("job %s: starting backend job %s failed: %s", rec.job_key, job_id, info.message)
                    self._backend_failed(run, spec.name, info)
                    if info.retryable and not info.lost:
                        # Keep the created job and start it later instead of creating another.
                        self._transition(run, rec.job_key, S.CREATED, message=f"created; start failed: {info.message}",
                                         id=job_id, backend_status="created")
                        with run.lock:
                            run.needs_start.add(rec.job_key)
                    else:
                        self._fail(run, rec, info, stage="start", backend_job_id=job_id)
                    return
        self._backend_ok(run, spec.name)
        self._transition(run, rec.job_key, S.QUEUED, message=f"backend job {job_id}", id=job_id,
                         expect=S.CREATING)

    def _start_created(self, run: _Run, rec: JobRecord) -> None:
        """Worker: start a job that was created but not started (earlier start failed)."""
        spec = self.backends[rec.backend_name]
        try:
            spec.connection().job(rec.backend_job_id).start()
        except Exception as exc:  # noqa: BLE001
            info = classify(exc, job_known=True)
            self._backend_failed(run, spec.name, info)
            if not info.retryable or info.lost:
                self._fail(run, rec, info, stage="start", backend_job_id=rec.backend_job_id)
            return
        with run.lock:
            run.needs_start.discard(rec.job_key)
        self._transition(run, rec.job_key, S.QUEUED, message="started", expect=S.CREATED)

    # ------------------------------------------------------------------ reconciliation
    def _reconcile(self, run: _Run) -> None:
        """Adopt jobs that a crashed run created but did not record; requeue the others."""
        for name in list(run.unreconciled):
            keys = run.unreconciled[name]
            spec = self.backends.get(name)
            if spec is None or self._backend_paused(run, name):
                if spec is None:
                    _log.warning("cannot reconcile %d job(s) of unregistered backend %r", len(keys), name)
                    for key in keys:
                        self._transition(run, key, S.NOT_STARTED, message="backend not registered; requeued",
                                         id=None, backend_name=None)
                    del run.unreconciled[name]
                continue
            records = {run.db.get(k).fields.get("create_tag"): run.db.get(k) for k in keys}
            try:
                found = find_tagged_jobs(spec, [t for t in records if t])
            except Exception as exc:  # noqa: BLE001 - try again next cycle
                info = classify(exc)
                _log.warning("reconciling jobs on %r failed: %s", name, info.message)
                self._backend_failed(run, name, info)
                continue
            for tag, rec in records.items():
                item = found.get(tag) if tag else None
                if item is None:
                    self._transition(run, rec.job_key, S.NOT_STARTED, expect=S.CREATING,
                                     message="not created on the backend before the interruption; requeued",
                                     id=None, attempt=max(0, rec.attempt - 1))
                    continue
                status = item.get("status") or "created"
                new = {"created": S.CREATED, "queued": S.QUEUED, "running": S.RUNNING}.get(status, S.QUEUED)
                run.stats["job adopted"] += 1
                self._transition(run, rec.job_key, new, expect=S.CREATING, id=item["id"],
                                 backend_status=status,
                                 message=f"adopted backend job {item['id']} created before the interruption")
                if new is S.CREATED:
                    run.needs_start.add(rec.job_key)
            del run.unreconciled[name]

    # ------------------------------------------------------------------ polling
    def _poll(self, run: _Run) -> None:
        run.stats["track_statuses"] += 1
        for name, spec in self.backends.items():
            if self._backend_paused(run, name):
                continue
            with run.lock:
                records = [r for r in run.db.jobs(ON_BACKEND, backend_name=name)
                           if r.job_key not in run.inflight and r.backend_job_id
                           and r.fields.get("claimed_by") == self.manager_id]
            if not records:
                continue
            try:
                listed = spec.poll_statuses(r.backend_job_id for r in records)
                run.stats["job listing"] += 1
            except Exception as exc:  # noqa: BLE001
                info = classify(exc)
                _log.warning("polling backend %r failed: %s", name, info.message)
                self._backend_failed(run, name, info)
                continue
            self._backend_ok(run, name)
            batch = _Batch()
            for rec in records:
                item = listed.get(rec.backend_job_id)
                if item is None:
                    try:
                        item = spec.connection().job(rec.backend_job_id).describe()
                        run.stats["job describe"] += 1
                    except Exception as exc:  # noqa: BLE001
                        info = classify(exc, job_known=True)
                        if info.lost:
                            run.stats["job lost"] += 1
                            self._fail(run, rec, info, stage="run", backend_job_id=rec.backend_job_id)
                        else:
                            self._backend_failed(run, name, info)
                        continue
                with run.lock:
                    if rec.job_key not in run.inflight:
                        self._on_backend_status(run, rec, spec, item, batch)
            self._apply_batch(run, batch)

    def _usage_fields(self, item: dict) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        usage = item.get("usage") or {}
        for key, column in (("cpu", "cpu"), ("memory", "memory"), ("duration", "duration")):
            value = usage.get(key)
            if isinstance(value, dict):
                fields[column] = f"{value.get('value', '')} {value.get('unit', '')}".strip()
        if item.get("costs") is not None:
            fields["costs"] = item["costs"]
        return fields

    def _on_backend_status(self, run: _Run, rec: JobRecord, spec: BackendSpec, item: dict,
                           batch: _Batch) -> None:
        """Follow one job's raw backend status (status changes are added to ``batch``)."""
        raw = str(item.get("status"))
        key = rec.job_key
        changed_raw = raw != rec.fields.get("backend_status")
        if raw != "created":
            run.needs_start.discard(key)
        if raw == "created":
            if key in run.needs_start:
                self._submit(run, key, self._start_created, run, rec)
            elif changed_raw:
                run.db.update(key, backend_status=raw)
        elif raw == "queued":
            if rec.status is S.CREATED:
                batch.add(Transition(key, S.QUEUED, expect=rec.status, fields={"backend_status": raw}))
            elif changed_raw:
                run.db.update(key, backend_status=raw)
        elif raw == "running":
            if rec.status in (S.CREATED, S.QUEUED):
                run.stats["job started running"] += 1
                batch.add(Transition(key, S.RUNNING, expect=rec.status,
                                     fields={"backend_status": raw, "running_start_time": _utcnow()}))
            elif changed_raw:
                run.db.update(key, backend_status=raw)
            elif self._cancel_running_job_after is not None:
                started = rec.fields.get("running_start_time")
                if started is not None and _utcnow() - _aware(started) > self._cancel_running_job_after:
                    run.stats["job cancel requested"] += 1
                    self._submit(run, key, self._cancel_job, run, rec, spec)
        elif raw == "finished":
            run.stats["job finished"] += 1
            fields = {"backend_status": raw, "end_time": _utcnow(), **self._usage_fields(item)}
            if not self._has_results_work():
                batch.add(Transition(key, S.FINISHED, expect=rec.status, fields=fields,
                                     message="done (results not downloaded)"))
            else:
                batch.add(Transition(key, S.DOWNLOADING, expect=rec.status, fields=fields),
                          then=(self._finish_job, run, key, spec))
        elif raw == "error":
            run.stats["job failed"] += 1
            run.db.update(key, backend_status=raw, **self._usage_fields(item))
            self._submit(run, key, self._handle_job_error, run, rec, spec)
        elif raw == "canceled":
            run.stats["job canceled"] += 1
            batch.add(Transition(key, S.CANCELED, expect=rec.status, message="canceled on the backend",
                                 fields={"backend_status": raw, "end_time": _utcnow()}),
                      then=(self._call_hook, run, rec, spec, self.on_job_cancel))
        else:
            _log.warning("job %s: unknown backend status %r", key, raw)

    # ------------------------------------------------------------------ finishing
    def _job_handle(self, spec: BackendSpec, rec: JobRecord) -> BatchJob:
        return spec.connection().job(rec.backend_job_id)

    def _finish_job(self, run: _Run, key: str, spec: BackendSpec) -> None:
        """Worker: results of a finished job (``on_job_done``), then ``finished``."""
        with run.lock:
            rec = run.db.get(key)
        try:
            self._process_finished_job(run, rec, spec)
        except Exception as exc:  # noqa: BLE001 - this job only
            info = classify(exc)
            with run.lock:
                run.finish_failures[rec.job_key] += 1
                n = run.finish_failures[rec.job_key]
            _log.warning("job %s: handling the finished job failed (%d): %s", rec.job_key, n, info.message)
            if self._rerun_job_after(exc):
                with run.lock:
                    run.finish_failures.pop(rec.job_key, None)
                self._fail(run, rec, info, stage="results", backend_job_id=rec.backend_job_id)
            elif info.retryable and n < self.max_attempts:
                with run.lock:
                    run.finish_due[rec.job_key] = time.monotonic() + self.backoff.delay(n, info.retry_after)
                    run.db.update(rec.job_key, error_class=info.error_class, error_message=info.message)
            else:
                self._transition(run, rec.job_key, S.ERROR, message=f"results: {info.message}",
                                 error_class=info.error_class, error_message=info.message,
                                 claimed_by=None, lease_until=None)
            return
        with run.lock:
            run.finish_failures.pop(rec.job_key, None)
        self._transition(run, rec.job_key, S.FINISHED, message="done", claimed_by=None, lease_until=None)

    def _has_results_work(self) -> bool:
        """Whether finished jobs go through ``downloading`` (results or a custom ``on_job_done``)."""
        cls = type(self)
        return (self._download_results or cls.on_job_done is not JobManager.on_job_done
                or cls._process_finished_job is not JobManager._process_finished_job)

    def _process_finished_job(self, run: _Run, rec: JobRecord, spec: BackendSpec) -> None:
        """Everything between ``downloading`` and ``finished``; subclasses extend this."""
        self.on_job_done(self._job_handle(spec, rec), rec.as_series())

    def _rerun_job_after(self, exc: Exception) -> bool:
        """Whether a failure while handling a finished job calls for running the job again
        (e.g. its results are corrupt on the backend); never by default."""
        return False

    def _resume_finishing(self, run: _Run) -> None:
        """(Re)submit due jobs left in ``downloading``/``postprocessing`` (retries, restarts)."""
        if not run.finish_due:
            return
        now = time.monotonic()
        for key, due in list(run.finish_due.items()):
            if key in run.inflight or due > now:
                continue
            del run.finish_due[key]
            rec = run.db.get(key)
            spec = self.backends.get(rec.backend_name or "")
            if rec.status not in (S.DOWNLOADING, S.POSTPROCESSING) or spec is None:
                continue
            self._submit(run, key, self._finish_job, run, key, spec)

    def _handle_job_error(self, run: _Run, rec: JobRecord, spec: BackendSpec) -> None:
        """Worker: a job ended in ``error`` on the backend: hook, then retry or ``error``."""
        message = "job failed on the backend"
        job = self._job_handle(spec, rec)
        try:
            logs = job.logs(level="error")
            if len(logs) > 0:
                first = logs[0]
                message = str(first.get("message", first) if isinstance(first, dict) else first)
        except Exception:  # noqa: BLE001 - logs are best effort
            pass
        self._call_hook(run, rec, spec, self.on_job_error)
        self._fail(run, rec, ErrorInfo("JobFailed", " ".join(message.split())[:500], True),
                   stage="run", backend_job_id=rec.backend_job_id)

    def _call_hook(self, run: _Run, rec: JobRecord, spec: BackendSpec,
                   hook: Callable[[BatchJob, pd.Series], None]) -> None:
        try:
            hook(self._job_handle(spec, rec), rec.as_series())
        except Exception as exc:  # noqa: BLE001 - a failing callback never stops the run
            info = classify(exc)
            _log.warning("job %s: %s raised: %s", rec.job_key, getattr(hook, "__name__", "hook"), info.message)
            with run.lock:
                run.db.update(rec.job_key, error_class=info.error_class, error_message=info.message)

    def _cancel_job(self, run: _Run, rec: JobRecord, spec: BackendSpec) -> None:
        try:
            self._job_handle(spec, rec).stop()
        except Exception as exc:  # noqa: BLE001
            _log.warning("job %s: cancel failed: %s", rec.job_key, classify(exc).message)


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


#: openeo's name, for scripts that port with an import change.
MultiBackendJobManager = JobManager
