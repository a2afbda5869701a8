"""Following jobs on their backends: one job listing per backend per poll, and what each
raw backend status means for the job.

:func:`poll` asks every backend that is not paused for the status of the jobs this manager
holds there (``GET /jobs``; ``GET /jobs/{id}`` only for jobs the listing lacks);
:func:`follow_status` turns one job's raw status into the change of its status and the
work that follows (download its results, call a hook, start it, cancel it).
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from eoextract._util.utc import parse_utc, utc_now
from eoextract.jobs._backends import BackendSpec
from eoextract.jobs._classify import classify
from eoextract.jobs._outcomes import Failure, FollowUp, TaskResult, Update
from eoextract.jobs._scheduling import BackendHealth
from eoextract.jobs.db._usage_columns import usage_fields
from eoextract.jobs.db import JobDatabase, JobRecord
from eoextract.jobs.db import Transition
from eoextract.jobs.status import ON_BACKEND, JobStatus

_log = logging.getLogger("eoextract.jobs.manager")
S = JobStatus


def poll(db: JobDatabase, backends: Mapping[str, BackendSpec], health: BackendHealth, *, manager_id: str,
         inflight: Container[str], needs_start: Container[str], cancel_after: timedelta | None,
         results_work: bool) -> list[TaskResult]:
    """Poll every backend that is not paused for the jobs this manager holds on it.

    Jobs with a task in flight are left alone. ``cancel_after`` is how long a job may run
    before it is canceled; ``results_work`` says whether finished jobs go through
    ``downloading`` (else straight to ``finished``).
    """
    return [result for results in poll_each(db, backends, health, manager_id=manager_id, inflight=inflight,
                                            needs_start=needs_start, cancel_after=cancel_after,
                                            results_work=results_work)
            for result in results]


def poll_each(db: JobDatabase, backends: Mapping[str, BackendSpec], health: BackendHealth, *,
              manager_id: str, inflight: Container[str], needs_start: Container[str],
              cancel_after: timedelta | None, results_work: bool) -> Iterator[list[TaskResult]]:
    """:func:`poll`, one backend at a time: each backend's results are yielded as soon as it
    answered, so that the places its ended jobs free are taken before the next backend is
    asked (the caller applies them in between, which changes no other backend's jobs;
    ``inflight`` is read afresh per backend)."""
    held: dict[str, list[JobRecord]] = {}
    for rec in db.jobs(ON_BACKEND):  # one query for every backend
        if rec.backend_job_id and rec.fields.get("claimed_by") == manager_id:
            held.setdefault(rec.backend_name or "", []).append(rec)
    for name, spec in backends.items():
        if health.paused(name):
            continue
        records = [r for r in held.get(name, ()) if r.job_key not in inflight]
        if not records:
            continue
        yield _poll_backend(name, spec, records, needs_start=needs_start, cancel_after=cancel_after,
                            results_work=results_work)


def _poll_backend(name: str, spec: BackendSpec, records: list[JobRecord], *, needs_start: Container[str],
                  cancel_after: timedelta | None, results_work: bool) -> list[TaskResult]:
    """The results of polling one backend for ``records``."""
    results: list[TaskResult] = []
    try:
        listed = spec.poll_statuses(r.backend_job_id for r in records)
        results.append(TaskResult(counts=("job listing",), backend=name, backend_ok=True))
    except Exception as exc:  # noqa: BLE001 - no listing: ask for each job instead
        _log.debug("listing the jobs of backend %r failed (%s); asking per job", name,
                   classify(exc).message)
        listed = {}
    for rec in records:
        item = listed.get(rec.backend_job_id)
        counts: tuple[str, ...] = ()
        if item is not None and item.get("status") in ("finished", "error") \
                and "usage" not in item and "costs" not in item:
            item = None  # ended: its description carries the usage and costs listings leave out
        if item is None:
            try:
                item = spec.connection().job(rec.backend_job_id).describe()
                counts = ("job describe",)
            except Exception as exc:  # noqa: BLE001
                info = classify(exc, job_known=True)
                if info.lost:
                    failure = Failure(rec.job_key, info, "run", rec.backend_job_id)
                    results.append(TaskResult(rec.job_key, (failure,), counts=("job lost",)))
                else:
                    results.append(TaskResult(backend=name, backend_error=info))
                continue
        result = follow_status(rec, item, needs_start=rec.job_key in needs_start,
                               cancel_after=cancel_after, results_work=results_work)
        results.append(replace(result, counts=counts + result.counts) if counts else result)
    return results


def follow_status(rec: JobRecord, item: Mapping[str, Any], *, needs_start: bool,
                  cancel_after: timedelta | None, results_work: bool) -> TaskResult:
    """What one job's raw backend status (``item["status"]``) means for the job.

    Args:
        rec: The job as recorded.
        item: The job's metadata from the backend (listing item or description).
        needs_start: The job was created but its start is still to be asked for.
        cancel_after: How long a job may run before it is canceled (None: no limit).
        results_work: Finished jobs go through ``downloading`` (else straight to ``finished``).
    """
    raw = str(item.get("status"))
    key = rec.job_key
    changed_raw = raw != rec.fields.get("backend_status")
    raw_update = (Update(key, {"backend_status": raw}),) if changed_raw else ()
    waiting = None if raw == "created" else False  # any other status: the start happened
    if raw == "created":
        if needs_start:
            return TaskResult(key, then=FollowUp.START, record=rec)
        return TaskResult(key, raw_update)
    if raw == "queued":
        if rec.status is S.CREATED:
            raw_update = (Transition(key, S.QUEUED, expect=rec.status, fields={"backend_status": raw}),)
        return TaskResult(key, raw_update, needs_start=waiting)
    if raw == "running":
        if rec.status in (S.CREATED, S.QUEUED):
            change = Transition(key, S.RUNNING, expect=rec.status,
                                fields={"backend_status": raw, "running_start_time": utc_now()})
            return TaskResult(key, (change,), counts=("job started running",), needs_start=waiting)
        if changed_raw or cancel_after is None:
            return TaskResult(key, raw_update, needs_start=waiting)
        started = parse_utc(rec.fields.get("running_start_time"))
        if started is not None and utc_now() - started > cancel_after:
            return TaskResult(key, counts=("job cancel requested",), needs_start=waiting,
                              then=FollowUp.CANCEL, record=rec)
        return TaskResult(key, needs_start=waiting)
    if raw == "finished":
        fields = {"backend_status": raw, "end_time": utc_now(), **usage_fields(item)}
        if not results_work:
            change = Transition(key, S.FINISHED, expect=rec.status, fields=fields,
                                message="done (results not downloaded)")
            return TaskResult(key, (change,), counts=("job finished",), needs_start=waiting, record=rec)
        change = Transition(key, S.DOWNLOADING, expect=rec.status, fields=fields)
        return TaskResult(key, (change,), counts=("job finished",), needs_start=waiting,
                          then=FollowUp.FINISH, record=rec)
    if raw == "error":
        update = Update(key, {"backend_status": raw, **usage_fields(item)})
        return TaskResult(key, (update,), counts=("job failed",), needs_start=waiting,
                          then=FollowUp.JOB_ERROR, record=rec)
    if raw == "canceled":
        change = Transition(key, S.CANCELED, expect=rec.status, message="canceled on the backend",
                            fields={"backend_status": raw, "end_time": utc_now()})
        return TaskResult(key, (change,), counts=("job canceled",), needs_start=waiting,
                          then=FollowUp.CANCELED, record=rec)
    _log.warning("job %s: unknown backend status %r", key, raw)
    return TaskResult(key, needs_start=waiting)
