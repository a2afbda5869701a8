"""Several processes on one job database (SQLite file, PostgreSQL with ``pg``): claims,
slot caps and lease adoption never hand one job to two managers."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pandas as pd
from eoextract.jobs.db import SqlJobDatabase, create_job_db
from eoextract.jobs.db import Transition
from eoextract.jobs.status import JobStatus

S = JobStatus
PROCESSES = 4
_start = None  # a barrier the forked workers wait on, so that they really run at once


def _now() -> datetime:
    return datetime.now(UTC)


def _run(target, location, *extra) -> list:
    """Run ``target(location, manager_id, *extra, queue)`` in PROCESSES forked processes."""
    global _start
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    _start = ctx.Barrier(PROCESSES)
    procs = [ctx.Process(target=target, args=(location, f"m{i}", *extra, queue))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _guarded(fn):
    """Send the worker's exception to the parent instead of dying silently."""
    def worker(*args):
        queue = args[-1]
        try:
            _start.wait(timeout=60)
            queue.put(fn(*args[:-1]))
        except BaseException as exc:  # noqa: BLE001
            queue.put(RuntimeError(f"{type(exc).__name__}: {exc}"))
    worker.__name__ = fn.__name__
    return worker


@_guarded
def _claim_loop(location, manager_id):
    db = SqlJobDatabase(location)
    got, refused = [], 0
    while batch := db.claim(10, manager_id=manager_id, now=_now(), lease_seconds=600):
        results = db.transition_many(
            [Transition(r.job_key, S.CREATING, expect=S.NOT_STARTED) for r in batch],
            manager_id=manager_id)
        for rec, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                refused += 1
            else:
                got.append(rec.job_key)
        # a manager does other work between two claims; without any pause, SQLite's busy
        # handler lets one process take every write lock in a row
        time.sleep(0.002)
    db.close()
    return got, refused


def test_processes_claiming_concurrently_never_get_the_same_job(sql_location):
    n = 1000
    create_job_db(sql_location, pd.DataFrame({"x": range(n)})).close()
    results = _run(_claim_loop, sql_location)
    keys = [k for got, _ in results for k in got]
    assert sum(refused for _, refused in results) == 0
    assert len(keys) == len(set(keys)) == n
    assert sum(1 for got, _ in results if got) >= 2, "the processes ran at the same time"
    db = SqlJobDatabase(sql_location)
    assert db.count_by_status() == {"creating": n}
    creators = Counter(h.manager_id for k in ("0", "500", "999") for h in db.history(k)[1:])
    assert sum(creators.values()) == 3
    db.close()


@_guarded
def _capped_loop(location, manager_id, cap):
    db = SqlJobDatabase(location)
    held: list[list[str]] = []
    done, most = 0, 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        batch = db.claim(2, manager_id=manager_id, now=_now(), lease_seconds=600,
                         backend_name="b", max_active=cap)
        if batch:
            db.transition_many([Transition(r.job_key, S.CREATING, expect=S.NOT_STARTED,
                                           fields={"backend_name": "b"}) for r in batch],
                               manager_id=manager_id)
            held.append([r.job_key for r in batch])
            most = max(most, db.active_counts().get("b", 0))
        if held and (len(held) > 1 or not batch):
            keys = held.pop(0)
            db.transition_many([Transition(k, S.FINISHED) for k in keys], manager_id=manager_id)
            done += len(keys)
        if not batch and not held:
            if not db.count_by_status([S.NOT_STARTED.value]):
                break
            time.sleep(0.005)
    db.close()
    return done, most


def test_slot_cap_holds_across_processes(sql_location):
    n, cap = 120, 5
    db = create_job_db(sql_location, pd.DataFrame({"x": range(n)}))
    db.register_backend("b", None)
    db.close()
    results = _run(_capped_loop, sql_location, cap)
    assert sum(done for done, _ in results) == n
    assert max(most for _, most in results) <= cap
    db = SqlJobDatabase(sql_location)
    assert db.count_by_status() == {"finished": n}
    db.close()


@_guarded
def _adopt_loop(location, manager_id):
    db = SqlJobDatabase(location)
    got = []
    while batch := db.adopt_expired(manager_id, now=_now(), lease_seconds=600, limit=7):
        got += [r.job_key for r in batch]
    db.close()
    return manager_id, got


def test_processes_adopting_a_dead_managers_jobs_split_them(sql_location):
    n = 300
    db = create_job_db(sql_location, pd.DataFrame({"x": range(n)}))
    expired = _now() - timedelta(seconds=1)
    claimed = db.claim(n, manager_id="dead", now=expired - timedelta(seconds=10), lease_seconds=10)
    db.transition_many([Transition(r.job_key, S.CREATING, fields={"backend_name": "b"})
                        for r in claimed], manager_id="dead")
    db.transition_many([Transition(r.job_key, S.RUNNING) for r in claimed], manager_id="dead")
    db.close()
    results = _run(_adopt_loop, sql_location)
    keys = [k for _, got in results for k in got]
    assert len(keys) == len(set(keys)) == n
    db = SqlJobDatabase(sql_location)
    owners = Counter(r.fields["claimed_by"] for r in db.jobs([S.RUNNING]))
    assert owners == {manager: len(got) for manager, got in results if got}
    db.close()
