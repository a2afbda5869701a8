"""Taking over after a crash or from another manager: leases of managers that are gone,
jobs whose lease expired, and jobs left in ``creating`` (looked up on the backend by their
creation tag, so that they are adopted instead of created twice)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping

from eoextract._util.utc import utc_now
from eoextract.jobs._backends import BackendSpec, find_tagged_jobs
from eoextract.jobs._classify import classify
from eoextract.jobs._outcomes import TaskResult
from eoextract.jobs._runstate import _Run
from eoextract.jobs.db import JobDatabase
from eoextract.jobs.db import Transition
from eoextract.jobs.status import JobStatus

_log = logging.getLogger("eoextract.jobs.manager")
S = JobStatus

#: Backend statuses of an adopted job, as manager statuses.
_ADOPTED_STATUS = {"created": S.CREATED, "queued": S.QUEUED, "running": S.RUNNING}


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


def release_dead_managers(db: JobDatabase) -> None:
    """Release the leases of managers of this host whose process has ended (others' leases
    must expire first)."""
    for manager_id in db.lease_holders():
        if _is_dead_local_manager(manager_id):
            _log.info("taking over the jobs of manager %s (its process has ended)", manager_id)
            db.release(manager_id)


def adopt(run: _Run, *, manager_id: str, lease_seconds: float, backend_names: Iterable[str]) -> None:
    """Take over in-flight jobs whose manager stopped renewing its lease, and note what
    each needs next (a lookup by tag, a start, its results handled)."""
    adopted = run.db.adopt_expired(manager_id, now=utc_now(), lease_seconds=lease_seconds,
                                   backend_names=list(backend_names))
    for rec in adopted:
        run.stats["job adopted from another manager"] += 1
        if rec.status is S.CREATING:
            run.unreconciled.setdefault(rec.backend_name or "", set()).add(rec.job_key)
        elif rec.status is S.CREATED:
            run.needs_start.add(rec.job_key)
        elif rec.status in (S.DOWNLOADING, S.POSTPROCESSING):
            run.finish_due[rec.job_key] = 0.0


def reconcile(run: _Run, backends: Mapping[str, BackendSpec]) -> list[TaskResult]:
    """Adopt the backend jobs that an interrupted run created but did not record (found by
    their creation tag); put the others back to ``not_started``."""
    results: list[TaskResult] = []
    for name in list(run.unreconciled):
        keys = run.unreconciled[name]
        spec = backends.get(name)
        if spec is None:
            _log.warning("cannot reconcile %d job(s) of unregistered backend %r", len(keys), name)
            for key in keys:
                change = Transition(key, S.NOT_STARTED, message="backend not registered; requeued",
                                    fields=dict(id=None, backend_name=None))
                results.append(TaskResult(key, (change,)))
            del run.unreconciled[name]
            continue
        if run.health.paused(name):
            continue
        records = {rec.fields.get("create_tag"): rec for rec in map(run.db.get, keys)}
        try:
            # each tag with the time its attempt began: the listing is read back to there only
            found = find_tagged_jobs(spec, {t: rec.fields.get("start_time") for t, rec in records.items() if t})
        except Exception as exc:  # noqa: BLE001 - try again next cycle
            info = classify(exc)
            _log.warning("reconciling jobs on %r failed: %s", name, info.message)
            results.append(TaskResult(backend=name, backend_error=info))
            continue
        for tag, rec in records.items():
            item = found.get(tag) if tag else None
            if item is None:
                change = Transition(rec.job_key, S.NOT_STARTED, expect=S.CREATING,
                                    message="not created on the backend before the interruption; requeued",
                                    fields=dict(id=None, attempt=max(0, rec.attempt - 1)))
                results.append(TaskResult(rec.job_key, (change,)))
                continue
            status = item.get("status") or "created"
            new = _ADOPTED_STATUS.get(status, S.QUEUED)
            change = Transition(rec.job_key, new, expect=S.CREATING,
                                message=f"adopted backend job {item['id']} created before the interruption",
                                fields=dict(id=item["id"], backend_status=status))
            results.append(TaskResult(rec.job_key, (change,), counts=("job adopted",),
                                      needs_start=True if new is S.CREATED else None))
        del run.unreconciled[name]
    return results
