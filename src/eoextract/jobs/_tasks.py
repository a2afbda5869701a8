"""The tasks of a job's life that block on a backend or on user code, run in the worker pool:
create (and start) a job, start a created one, handle a finished job's results, handle a
failed or canceled one, cancel one.

Each task gets plain data (the job's record, its backend) and returns a
:class:`~eoextract.jobs._outcomes.TaskResult` for the run loop to apply; none writes to
the job database or touches the run's state.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from openeo.rest.job import BatchJob

from eoextract._util.checksum import DEFAULT_ALGORITHM
from eoextract._util.retry import ErrorClass
from eoextract._util.utc import utc_now
from eoextract.jobs._backends import BackendSpec, tag_requests
from eoextract.jobs._classify import ErrorInfo, classify, is_backend_full
from eoextract.jobs._hooks import FinishedJob, FinishedJobResult
from eoextract.jobs._outcomes import Failure, FollowUp, ResultsFailure, TaskResult, Update
from eoextract.jobs.db import UPDATABLE_FIELDS, JobRecord
from eoextract.jobs.db import Transition
from eoextract.jobs.status import JobStatus

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.jobs._manager import JobManager

_log = logging.getLogger("eoextract.jobs.manager")
S = JobStatus


@functools.lru_cache(maxsize=64)
def _accepted(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword arguments ``fn`` declares (``None``: any, it takes ``**kw`` or tells none)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return frozenset(params)


def _call_with_accepted(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``fn`` with the keyword arguments it declares (all of them if it takes ``**kw``)."""
    try:
        names = _accepted(fn)
    except TypeError:  # an unhashable callable: looked at each time
        names = _accepted.__wrapped__(fn)
    if names is None:
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in names})


def _failed(key: str, info: ErrorInfo, *, stage: str, backend: str | None = None,
            backend_job_id: str | None = None, counts: tuple[str, ...] = ()) -> TaskResult:
    """A failed step; ``backend`` names a backend whose failure it counts."""
    return TaskResult(key, (Failure(key, info, stage, backend_job_id),), counts=counts, backend=backend,
                      backend_error=info if backend else None, task_done=True)


def create_job(manager: JobManager, start_job: Callable[..., Any], rec: JobRecord, spec: BackendSpec,
               tag: str, start: bool = True) -> TaskResult:
    """Call the user's ``start_job`` with creation tagging, then start the job it made
    (``start``), or keep it created, ready to start once its backend has a free place."""
    key = rec.job_key
    row = rec.as_series(backend_name=spec.name)
    counts = ("start_job call",)
    with tag_requests(tag) as ctx:
        try:
            connection = spec.connection()
            job = _call_with_accepted(start_job, row=row, connection=connection,
                                      connection_provider=manager._get_connection, provider=spec.name)
        except Exception as exc:  # noqa: BLE001 - user code or backend; marks this job only
            info = _logged(classify(exc), rec.job_key, "start_job")
            _log.warning("job %s: start_job failed: %s", key, info.message)
            return _failed(key, info, stage="start", backend=spec.name, counts=counts,
                           backend_job_id=ctx.created[-1] if ctx.created else None)
        if job is None:
            change = Transition(key, S.SKIPPED, message="start_job returned None",
                                fields=dict(claimed_by=None, lease_until=None))
            return TaskResult(key, (change,), counts=(*counts, "start_job skipped"), task_done=True)
        if not isinstance(job, BatchJob):
            info = ErrorInfo(ErrorClass.user_code(TypeError),
                             f"start_job returned {type(job).__name__}, expected BatchJob or None", False)
            return _failed(key, info, stage="start", counts=counts)
        job_id = job.job_id
        seen = None
        if job_id not in ctx.started and job_id not in ctx.created:
            # a job made elsewhere (openeo's scripts may return an existing BatchJob):
            # start it only when its backend says it waits for that, as openeo does
            try:
                seen = job.status()
                if seen != "created":
                    ctx.started.add(job_id)
            except Exception as exc:  # noqa: BLE001 - asked again at the next poll
                _log.debug("job %s: status of backend job %s unknown: %s", key, job_id, classify(exc).message)
                ctx.started.add(job_id)
        if job_id not in ctx.started and not start:
            ready = replace(rec, status=S.CREATED, fields={**rec.fields, "id": job_id, "backend_name": spec.name})
            change = Transition(key, S.CREATED, message=f"backend job {job_id}, ready to start",
                                expect=S.CREATING, fields=dict(id=job_id, backend_status="created"))
            return TaskResult(key, (change,), counts=counts, backend=spec.name, backend_ok=True,
                              needs_start=True, then=FollowUp.START, record=ready, task_done=True)
        if job_id not in ctx.started:
            try:
                spec.refresh_token()
                job.start()
                counts += ("job start", "job_queued_for_start")
            except Exception as exc:  # noqa: BLE001
                info = classify(exc, job_known=True)
                (_log.info if is_backend_full(info) else _log.warning)(
                    "job %s: starting backend job %s failed: %s", key, job_id, info.message)
                if info.retryable and not info.lost:
                    # Keep the created job and start it later instead of creating another.
                    change = Transition(key, S.CREATED, message=f"created; start failed: {info.message}",
                                        fields=dict(id=job_id, backend_status="created"))
                    return TaskResult(key, (change,), counts=counts, backend=spec.name, backend_error=info,
                                      needs_start=True, task_done=True)
                return _failed(key, info, stage="start", backend=spec.name, backend_job_id=job_id,
                               counts=counts)
    change = Transition(key, S.QUEUED, message=f"backend job {job_id}", expect=S.CREATING,
                        fields=dict(id=job_id))
    if seen == "running":  # an existing job, already running
        change = Transition(key, S.RUNNING, message=f"backend job {job_id}", expect=S.CREATING,
                            fields=dict(id=job_id, backend_status=seen, running_start_time=utc_now()))
        counts += ("job started running",)
    return TaskResult(key, (change,), counts=counts, backend=spec.name, backend_ok=True, task_done=True)


def start_created(rec: JobRecord, spec: BackendSpec) -> TaskResult:
    """Start a job that was created but not started (an earlier start failed)."""
    key = rec.job_key
    try:
        spec.refresh_token()
        spec.connection().job(rec.backend_job_id).start()
    except Exception as exc:  # noqa: BLE001
        info = classify(exc, job_known=True)
        if not info.retryable or info.lost:
            return _failed(key, info, stage="start", backend=spec.name, backend_job_id=rec.backend_job_id)
        # still waiting for its start: tried again at the next poll
        return TaskResult(key, backend=spec.name, backend_error=info, task_done=True)
    change = Transition(key, S.QUEUED, message="started", expect=S.CREATED)
    return TaskResult(key, (change,), counts=("job start",), backend=spec.name, backend_ok=True,
                      needs_start=False, task_done=True)


def _logged(info: ErrorInfo, job_key: str, what: str) -> ErrorInfo:
    """``info``, its traceback logged at DEBUG when user code raised it."""
    if info.traceback:
        _log.debug("job %s: %s raised:\n%s", job_key, what, info.traceback)
    return info


def finish_job(manager: JobManager, job: FinishedJob) -> TaskResult:
    """Handle a finished job's results (:meth:`JobManager.process_finished_job`), then
    ``finished``; a failure is for the loop to weigh (retry later, run again, error)."""
    key = job.job_key
    try:
        spec = manager.backends.get(job.backend_name)
        if spec is not None:
            spec.refresh_token()
        outcome = manager.process_finished_job(job) or FinishedJobResult()
        if not isinstance(outcome, FinishedJobResult):
            raise TypeError(f"process_finished_job returned {type(outcome).__name__}, "
                            "expected FinishedJobResult or None")
        unknown = set(outcome.fields) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"process_finished_job returned fields that are no managed columns: "
                             f"{sorted(unknown)}")
    except Exception as exc:  # noqa: BLE001 - this job only
        info = _logged(classify(exc), key, "handling its results")
        failure = ResultsFailure(key, info, False, job.backend_job_id)
        return TaskResult(key, (failure,), task_done=True)
    if outcome.run_again is not None:
        failure = ResultsFailure(key, classify(outcome.run_again), True, job.backend_job_id)
        return TaskResult(key, (failure,), task_done=True)
    change = Transition(key, S.FINISHED, message=outcome.message,
                        fields={**outcome.fields, "claimed_by": None, "lease_until": None})
    return TaskResult(key, (change,), task_done=True, results_done=True)


def handle_job_error(manager: JobManager, rec: JobRecord, spec: BackendSpec) -> TaskResult:
    """A job ended in ``error`` on its backend: ``on_job_error``, then retry or ``error``."""
    message = "job failed on the backend"
    try:
        logs = spec.connection().job(rec.backend_job_id).logs(level="error")
        if len(logs) > 0:
            first = logs[0]
            message = str(first.get("message", first) if isinstance(first, dict) else first)
    except Exception:  # noqa: BLE001 - logs are best effort
        pass
    hook = call_hook(rec, spec, manager.on_job_error)
    info = ErrorInfo(ErrorClass.JOB_FAILED, " ".join(message.split())[:500], True)
    return TaskResult(rec.job_key, (*hook.effects, Failure(rec.job_key, info, "run", rec.backend_job_id)),
                      task_done=True)


def call_hook(rec: JobRecord, spec: BackendSpec, hook: Callable[[BatchJob, pd.Series], None]) -> TaskResult:
    """Call one of openeo's hooks (``on_job_error``, ``on_job_cancel``); an exception it
    raises is recorded on the job and never stops the run."""
    try:
        hook(spec.connection().job(rec.backend_job_id), rec.as_series())
    except Exception as exc:  # noqa: BLE001 - a failing callback never stops the run
        info = _logged(classify(exc), rec.job_key, getattr(hook, "__name__", "hook"))
        _log.warning("job %s: %s raised: %s", rec.job_key, getattr(hook, "__name__", "hook"), info.message)
        fields = dict(error_class=info.error_class, error_message=info.message)
        return TaskResult(rec.job_key, (Update(rec.job_key, fields),), task_done=True)
    return TaskResult(rec.job_key, task_done=True)


def cancel_job(rec: JobRecord, spec: BackendSpec) -> TaskResult:
    """Ask the backend to cancel a job (its status follows at a later poll)."""
    try:
        spec.connection().job(rec.backend_job_id).stop()
    except Exception as exc:  # noqa: BLE001
        _log.warning("job %s: cancel failed: %s", rec.job_key, classify(exc).message)
    return TaskResult(rec.job_key, task_done=True)


def download_results(job: BatchJob, job_dir: Path, job_key: str, metadata_path: Path, *,
                     max_asset_bytes: int | None = None, checksum_algorithm: str = DEFAULT_ALGORITHM) -> None:
    """openeo's output layout for a finished job: its assets and the results document
    (``job-results.json``) in ``job_dir``, its metadata in ``metadata_path``.

    Downloads are verified and atomic; the record that lets a rerun skip verified files
    (``job_dir/.eoextract``) is removed once every file is in place.
    """
    import shutil

    from eoextract._util.files import atomic_write
    from eoextract.jobs._download import STATE_DIR, download_job_assets, fetch_job_assets

    assets, session, headers = fetch_job_assets(job.connection, job.job_id)
    download_job_assets(session, assets, job_dir, lambda asset, tmp: asset.relative_path,
                        job_key=job_key, headers=headers, max_asset_bytes=max_asset_bytes,
                        checksum_algorithm=checksum_algorithm)
    document = job.connection.get(f"/jobs/{job.job_id}/results", expected_status=200).json()
    atomic_write(job_dir / "job-results.json", json.dumps(document))
    atomic_write(metadata_path, json.dumps(job.describe(), indent=2))
    shutil.rmtree(job_dir / STATE_DIR, ignore_errors=True)
