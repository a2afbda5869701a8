"""The steps of a job's life in the job manager: launch, create, poll, finish, fail.

:class:`JobSteps` is a mixin of :class:`~eoextract.jobs._manager.JobManager`; it holds the
work the run loop schedules, so the manager module keeps the public API and the loop.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd
from openeo.rest.job import BatchJob

from eoextract.errors import InvalidTransition
from eoextract.jobs._backends import BackendSpec, find_tagged_jobs, make_tag, tag_requests
from eoextract.jobs.db.base import JobRecord, Transition
from eoextract.jobs._classify import ErrorInfo, classify
from eoextract.jobs._runstate import _aware, _Batch, _call_with_accepted, _Run, _utcnow
from eoextract.jobs.status import ON_BACKEND, JobStatus

if TYPE_CHECKING:
    from eoextract.jobs._classify import Backoff

__all__ = ["JobSteps"]

_log = logging.getLogger("eoextract.jobs._manager")
S = JobStatus


class JobSteps:
    """Per-job work of the run loop (mixed into :class:`~eoextract.jobs._manager.JobManager`)."""

    backends: dict[str, BackendSpec]
    backoff: Backoff
    max_attempts: int
    manager_id: str
    lease_seconds: float

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
            # max_active: the slot cap holds atomically across all managers of the database
            records = run.db.claim(free, manager_id=self.manager_id, now=_utcnow(),
                                   lease_seconds=self.lease_seconds, backend_name=name,
                                   max_active=spec.parallel_jobs)
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
