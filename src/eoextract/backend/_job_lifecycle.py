"""Batch job lifecycle: start, run, cancel, faults, instant jobs, restart recovery.

Statuses follow openEO: ``created → queued → running → finished | error | canceled``.

*Regular jobs* go to the :class:`~eoextract.backend._worker_pool.WorkerPool`.

*Instant jobs* (``job_options={"eoextract_mode": "instant"}``) compute nothing: starting one
copies a tiny valid NetCDF (written once per server) into its results and marks it
``finished`` in the same request. No worker process is involved.

*Job faults* (see :mod:`eoextract.backend._faults`) are decided when a job starts.

*Production profile* (:mod:`eoextract.backend._profile`): per-user running and waiting
places (:mod:`eoextract.backend._job_limits`) are taken when a job starts and given back when
it ends; ended jobs get a modelled ``usage`` and ``costs`` (:mod:`eoextract.backend._usage`).

*Restarts*: on start-up, jobs found ``queued`` are queued again; jobs found ``running`` are
marked ``error`` with a log entry saying the server restarted while they ran (their
partial output is discarded). Finished jobs keep their results.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eoextract.backend._api_errors import JobLocked, JobNotFinished, OpenEOApiError
from eoextract.backend._faults import JobFault, JobFaultCounter
from eoextract.backend._job_limits import JobLimiter
from eoextract.backend._job_store import (
    ACTIVE,
    CANCELED,
    ERROR,
    FINISHED,
    QUEUED,
    RUNNING,
    JobRecord,
    JobStore,
    parse_job_body,
    timestamp,
)
from eoextract.backend._profile import BackendProfile
from eoextract.backend._result_documents import asset_to_dict
from eoextract.backend._scheduler import Scheduler
from eoextract.backend._usage import job_usage
from eoextract.backend._worker_pool import Task, TaskCanceled, TaskFailed, WorkerPool


logger = logging.getLogger(__name__)


def is_instant(job_options: dict[str, Any] | None) -> bool:
    """Whether job options ask for an instant job."""
    return bool(job_options) and job_options.get("eoextract_mode") == "instant"


class InstantResult:
    """The tiny NetCDF shared by instant jobs: written once, then copied per job.

    Args:
        folder: Where the template is written.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._assets: list[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def assets(self) -> list[dict[str, Any]]:
        """Asset dicts of the template (built on first use)."""
        with self._lock:
            if self._assets is None:
                from eoextract.backend._instant_result import write_instant_result

                shutil.rmtree(self.folder, ignore_errors=True)
                self.folder.mkdir(parents=True)
                written = write_instant_result(self.folder)
                self._assets = [asset_to_dict(a, self.folder) for a in written]
            return self._assets

    def copy_to(self, out_dir: Path) -> list[dict[str, Any]]:
        """Copy the template files into ``out_dir`` and return their asset dicts."""
        assets = self.assets()
        out_dir.mkdir(parents=True, exist_ok=True)
        for asset in assets:
            target = out_dir / asset["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.folder / asset["path"], target)
        return [dict(a) for a in assets]


class JobService:
    """Job operations behind the ``/jobs`` routes.

    Args:
        store: Job records.
        pool: Worker pool for regular jobs (created lazily when None and needed).
        pool_factory: Builds the pool on first use.
        resolver_for: Returns the plain-data UDP resolver settings for a user.
        profile: Production-like behaviours (job limits, usage and costs).
        style_for: Result style of a job (``"cdse"`` rewrites EPSG:3035 NetCDFs with a
            bound-CRS WKT when the job finishes, see :mod:`eoextract.backend._cdse_netcdf`).
    """

    def __init__(
        self,
        store: JobStore,
        pool_factory: Callable[[], WorkerPool],
        resolver_for: Callable[[str], dict[str, Any]],
        profile: BackendProfile | None = None,
        style_for: Callable[[JobRecord], str] | None = None,
    ):
        self.style_for = style_for or (lambda record: "current")
        self.store = store
        self.profile = profile or BackendProfile()
        self.limiter = JobLimiter(self.profile.max_running_jobs, self.profile.max_queued_jobs)
        self._waiting_faults: dict[str, JobFault | None] = {}
        self._pool_factory = pool_factory
        self._pool: WorkerPool | None = None
        self._pool_lock = threading.Lock()
        self.resolver_for = resolver_for
        self.faults = JobFaultCounter()
        self.scheduler = Scheduler()
        self.instant = InstantResult(store.root / "instant-template")
        self._closing = False
        self._recover()

    # -- plumbing ----------------------------------------------------------------------
    @property
    def pool(self) -> WorkerPool:
        """The worker pool (started on first use)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = self._pool_factory()
            return self._pool

    def close(self) -> None:
        """Stop the scheduler and the workers.

        Jobs keep the status they had (queued or running) on disk; see the module docstring
        for what happens to them on the next start.
        """
        self._closing = True
        self.scheduler.close()
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()

    def _recover(self) -> None:
        for record in self.store.all():
            if record.status == RUNNING:
                self.store.update(
                    record,
                    status=ERROR,
                    finished=timestamp(),
                    error={"code": "Internal", "message": "The server restarted while the job ran."},
                )
                self.store.add_log(
                    record.id, "error", "The server restarted while this job was running; run it again."
                )
            elif record.status == QUEUED:
                logger.info("re-queueing job %s after restart", record.id)
                if self.limiter.admit(record.user, record.id, force=True):
                    self._enqueue(record, fault=None)
                else:
                    self._waiting_faults[record.id] = None

    def _current(self, job_id: str, run: int) -> JobRecord | None:
        """The job if it still exists and is still in run ``run`` (not canceled/restarted)."""
        if self._closing:
            return None  # shutting down: leave records as they are for the next start
        try:
            record = self.store.get(job_id)
        except OpenEOApiError:
            return None
        if record.run != run or record.status not in ACTIVE:
            return None
        return record

    # -- CRUD --------------------------------------------------------------------------
    def create(self, user: str, body: Any) -> JobRecord:
        """Create a job from a ``POST /jobs`` body."""
        fields_ = parse_job_body(body)
        JobFault.from_job_options(fields_.get("job_options"))  # reject bad fault options early
        return self.store.create(user, fields_)

    def update(self, user: str, job_id: str, body: Any) -> JobRecord:
        """Apply a ``PATCH /jobs/{id}`` body.

        Raises:
            JobLocked: While the job is queued or running.
        """
        record = self.store.get(job_id, user)
        fields_ = parse_job_body(body, partial=True)
        if record.status in ACTIVE:
            raise JobLocked(f"Job {job_id} is {record.status}; it cannot be modified now.")
        if "job_options" in fields_:
            JobFault.from_job_options(fields_["job_options"])
        return self.store.update(record, **fields_)

    def delete(self, user: str, job_id: str) -> None:
        """Delete a job, canceling it first when active."""
        record = self.store.get(job_id, user)
        if record.status in ACTIVE and self._pool is not None:
            self._pool.cancel(job_id)
        self.store.remove(record.id)
        if record.status in ACTIVE:
            self._release(record.user, record.id)

    # -- start / cancel ----------------------------------------------------------------
    def start(self, user: str, job_id: str) -> JobRecord:
        """Start (or restart) a job; a queued or running job is left alone.

        Raises:
            OpenEOApiError: ``400 ConcurrentJobLimit`` when the user has no free running or
                waiting place (production profile); the job is left as it was.
        """
        record = self.store.get(job_id, user)
        with self.store.lock:
            if record.status in ACTIVE:
                return record
            runs_now = self.limiter.admit(user, record.id)
            fault = JobFault.from_job_options(record.job_options)
            if not self.faults.applies(fault, record.title):
                fault = None
            shutil.rmtree(self.store.results_dir(record.id), ignore_errors=True)
            self.store.update(
                record,
                run=record.run + 1,
                status=QUEUED,
                progress=0.0,
                progress_reported=False,
                started=None,
                finished=None,
                error=None,
                assets=[],
                fault=fault.kind if fault else None,
                usage=None,
                costs=None,
            )
        self.store.add_log(record.id, "info", f"Job queued (run {record.run}).")
        if not runs_now:
            self._waiting_faults[record.id] = fault
            self.store.add_log(
                record.id, "info",
                f"Job waits for a free place (concurrent job limit {self.limiter.max_running}).",
            )
            return record
        self._dispatch(record, fault)
        return record

    def _dispatch(self, record: JobRecord, fault: JobFault | None) -> None:
        """Run a queued job that has a running place."""
        if fault is not None and fault.kind == "lost":
            self._lose(record, fault)
        elif is_instant(record.job_options):
            self._start_instant(record, fault)
        else:
            self._enqueue(record, fault)

    def _release(self, user: str, job_id: str) -> None:
        """Give back a job's place; dispatch the waiting jobs that now have one."""
        self._waiting_faults.pop(job_id, None)
        for next_id in self.limiter.release(user, job_id):
            fault = self._waiting_faults.pop(next_id, None)
            # in the scheduler thread: an instant job ends (and releases) inside dispatch
            self.scheduler.call_later(0.0, lambda i=next_id, f=fault: self._dispatch_waiting(i, f))

    def _dispatch_waiting(self, job_id: str, fault: JobFault | None) -> None:
        try:
            record = self.store.get(job_id)
        except OpenEOApiError:
            return
        if record.status == QUEUED and not self._closing:
            self.store.add_log(job_id, "info", "Job got a free place.")
            self._dispatch(record, fault)

    def cancel(self, user: str, job_id: str) -> JobRecord:
        """Cancel a queued or running job (no effect on other statuses)."""
        record = self.store.get(job_id, user)
        with self.store.lock:
            if record.status not in ACTIVE:
                return record
            self.store.update(record, status=CANCELED, finished=timestamp())
        self._release(record.user, record.id)
        if self._pool is not None:
            self._pool.cancel(job_id)
        self.store.add_log(record.id, "info", "Job canceled on request.")
        return record

    def results(self, user: str, job_id: str) -> JobRecord:
        """The job, checked to be finished.

        Raises:
            JobNotFinished: While it is not finished.
            OpenEOApiError: ``JobFailed`` (424) with the job's error when it failed.
        """
        record = self.store.get(job_id, user)
        if record.status == ERROR:
            err = record.error or {}
            raise OpenEOApiError(
                f"The job failed: {err.get('message', 'unknown error')}",
                code="JobFailed",
                status=424,
            )
        if record.status != FINISHED:
            raise JobNotFinished(f"Job {job_id} is {record.status}, not finished.")
        return record

    # -- runs --------------------------------------------------------------------------
    def _mark(self, job_id: str, run: int, changes: dict[str, Any],
              log: tuple[str, str] | None = None, **log_extra: Any) -> None:
        """Apply ``changes`` to a job still in run ``run``, then log ``(level, message)``."""
        with self.store.lock:
            record = self._current(job_id, run)
            if record is None:
                return
            if changes.get("status") not in (None, *ACTIVE) and self.profile.report_usage:
                changes["usage"], changes["costs"] = self.usage_of(record)
            self.store.update(record, **changes)
        if changes.get("status") not in (None, *ACTIVE):
            self._release(record.user, job_id)
        if log is not None:
            self.store.add_log(job_id, *log, **log_extra)

    def usage_of(self, record: JobRecord) -> tuple[dict[str, Any], float]:
        """Modelled ``(usage, costs)`` of a job (see :mod:`eoextract.backend._usage`)."""
        p = self.profile
        return job_usage(
            record.process.get("process_graph", {}), record.job_options,
            credits_base=p.credits_base, credits_per_cpu_hour=p.credits_per_cpu_hour,
            credits_per_megapixel=p.credits_per_megapixel,
        )

    def _mark_running(self, job_id: str, run: int) -> None:
        changes = {"status": RUNNING, "started": timestamp()}
        self._mark(job_id, run, changes, ("info", "Job running."))

    def _mark_finished(self, job_id: str, run: int, assets: list[dict[str, Any]]) -> None:
        record = self._current(job_id, run)
        if record is not None and assets and self.style_for(record) == "cdse":
            from eoextract.backend._cdse_netcdf import apply_cdse_crs

            try:
                assets = apply_cdse_crs(assets, self.store.results_dir(job_id))
            except Exception:  # noqa: BLE001 - the plain CRS stays: still a valid result
                logger.exception("could not write the CDSE bound CRS of job %s", job_id)
        changes = {"status": FINISHED, "progress": 100.0, "finished": timestamp(), "assets": assets}
        self._mark(job_id, run, changes, ("info", f"Job finished with {len(assets)} asset(s)."))

    def _mark_failed(self, job_id: str, run: int, code: str, message: str) -> None:
        error = {"code": code, "message": message}
        changes = {"status": ERROR, "finished": timestamp(), "error": error}
        self._mark(job_id, run, changes, ("error", f"Job failed: {message}"), code=code)

    def _finish_instant(self, job_id: str, run: int) -> None:
        if self._current(job_id, run) is None:
            return
        try:
            assets = self.instant.copy_to(self.store.results_dir(job_id))
        except Exception as exc:  # noqa: BLE001 - becomes the job's error
            logger.exception("instant result failed for %s", job_id)
            self._mark_failed(job_id, run, "Internal", f"{type(exc).__name__}: {exc}")
            return
        self._mark_finished(job_id, run, assets)

    def _start_instant(self, record: JobRecord, fault: JobFault | None) -> None:
        job_id, run = record.id, record.run
        if fault is not None and fault.kind == "error":
            self._mark_running(job_id, run)
            self._mark_failed(job_id, run, "InjectedFault", _fault_message())
        elif fault is not None and fault.kind == "slow":
            self._mark_running(job_id, run)
            self.scheduler.call_later(fault.delay_s, lambda: self._finish_instant(job_id, run))
        else:
            self._mark_running(job_id, run)
            self._finish_instant(job_id, run)

    def _lose(self, record: JobRecord, fault: JobFault) -> None:
        job_id = record.id
        logger.info("job %s will be lost (injected fault)", job_id)
        def vanish() -> None:
            self.store.remove(job_id)
            self._release(record.user, job_id)

        if fault.delay_s:
            self._mark_running(job_id, record.run)
            self.scheduler.call_later(fault.delay_s, vanish)
        else:
            vanish()

    def _enqueue(self, record: JobRecord, fault: JobFault | None) -> None:
        job_id, run = record.id, record.run
        out_dir = self.store.results_dir(job_id)
        task = Task(
            process_graph=record.process["process_graph"],
            out_dir=out_dir,
            resolver=self.resolver_for(record.user),
            job_id=job_id,
            run=run,
            delay_s=fault.delay_s if fault is not None and fault.kind == "slow" else 0.0,
            fail_message=_fault_message() if fault is not None and fault.kind == "error" else None,
            on_start=lambda: self._mark_running(job_id, run),
            on_log=lambda level, message: self._log_if_current(job_id, run, level, message),
            on_progress=lambda pct: self._progress(job_id, run, pct),
        )
        task.future.add_done_callback(lambda fut: self._task_done(job_id, run, fut))
        self.pool.submit(task)

    def _log_if_current(self, job_id: str, run: int, level: str, message: str) -> None:
        if self._current(job_id, run) is not None:
            self.store.add_log(job_id, level, message)

    def _progress(self, job_id: str, run: int, pct: float) -> None:
        record = self._current(job_id, run)
        if record is not None:
            record.progress = max(0.0, min(100.0, pct))
            record.progress_reported = True

    def _task_done(self, job_id: str, run: int, future: Any) -> None:
        error = future.exception()
        if error is None:
            self._mark_finished(job_id, run, future.result())
        elif isinstance(error, TaskCanceled):
            self._mark(job_id, run, {"status": CANCELED, "finished": timestamp()})
        elif isinstance(error, TaskFailed | OpenEOApiError):
            self._mark_failed(job_id, run, error.code, error.message)
        else:  # pragma: no cover - the pool wraps everything
            self._mark_failed(job_id, run, "Internal", f"{type(error).__name__}: {error}")

    # -- synchronous processing --------------------------------------------------------
    def run_sync(self, user: str, process: dict[str, Any], out_dir: Path) -> Task:
        """Queue a synchronous ``POST /result`` execution ahead of batch jobs.

        Returns:
            The task; await ``task.future`` for the asset dicts.
        """
        task = Task(
            process_graph=process["process_graph"],
            out_dir=out_dir,
            resolver=self.resolver_for(user),
            priority=0,
        )
        self.pool.submit(task)
        return task


def _fault_message() -> str:
    return "Simulated processing failure (eoextract_fault=error)."

