"""kill -9 between 'backend created the job' and 'row saved', then resume: no duplicate job."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from eoextract.errors import JobDatabaseError
from eoextract.jobs.db import get_job_db

SCRIPT = Path(__file__).with_name("crash_run.py")


@pytest.fixture()
def spawn():
    """Start manager processes; whatever happens, none outlives the test."""
    started: list[subprocess.Popen] = []

    def start(args, **kw):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_crash_after_create_then_resume_adopts_the_job(local_backend, tmp_path):
    prefix = f"crash{uuid.uuid4().hex[:6]}"
    db_path = tmp_path / "jobs.db"
    marker = tmp_path / "crashed"
    args = [sys.executable, str(SCRIPT), local_backend.url, str(db_path), prefix, "5"]
    first = subprocess.run([*args, "2", str(marker)], capture_output=True, text=True, timeout=120)
    assert first.returncode == 9, first.stderr
    assert marker.exists()
    db = get_job_db(db_path)
    assert db.count_by_status(["creating"]).get("creating", 0) >= 1
    db.close()

    second = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "{'finished': 5}" in second.stdout
    adopted = int(second.stdout.split()[-1])
    assert adopted >= 1

    titles = collections.Counter(
        j["title"] for j in local_backend.connect().list_jobs(limit=None)
        if str(j.get("title", "")).startswith(prefix + "-"))
    assert len(titles) == 5
    assert set(titles.values()) == {1}, titles  # no backend job created twice


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume(local_backend, tmp_path, spawn):
    """SIGKILL the manager at seeded random moments; every row ends finished, one backend job each."""
    rng = random.Random(20261123)
    prefix = f"chaos{uuid.uuid4().hex[:6]}"
    db_path = tmp_path / "jobs.db"
    n = 60
    args = [sys.executable, str(SCRIPT), local_backend.url, str(db_path), prefix, str(n)]
    interrupted = 0
    targets = sorted(rng.sample(range(3, n - 3), 4))  # kill once this many jobs finished
    for target in targets:
        proc = spawn(args)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.01, 0.05))
            try:
                with get_job_db(db_path) as db:
                    if db.count_by_status(["finished"]).get("finished", 0) >= target:
                        break
            except JobDatabaseError:  # not created yet by the manager
                continue
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        with get_job_db(db_path) as db:
            interrupted += db.count_by_status(["finished"]).get("finished", 0) < n
    assert interrupted >= 3  # the kills really landed mid-run
    final = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stderr
    assert f"{{'finished': {n}}}" in final.stdout

    titles = collections.Counter(
        j["title"] for j in local_backend.connect().list_jobs(limit=None)
        if str(j.get("title", "")).startswith(prefix + "-"))
    assert len(titles) == n
    assert set(titles.values()) == {1}, titles
    db = get_job_db(db_path)
    for key in db.read().index:
        finished = [c for c in db.history(key) if str(c.new) == "finished"]
        assert len(finished) == 1  # finished exactly once


@pytest.mark.slow
def test_two_managers_share_one_sqlite_db_and_survive_a_kill(local_backend, tmp_path, spawn):
    """Two manager processes on one job DB; one is killed -9; the other adopts its jobs."""
    prefix = f"duo{uuid.uuid4().hex[:6]}"
    db_path = tmp_path / "jobs.db"
    n = 120
    args = [sys.executable, str(SCRIPT), local_backend.url, str(db_path), prefix, str(n)]
    # Slots are per backend and shared by all managers: the first runs backend "a", the
    # second "a" and "b" (the same server), so both have work and the second can adopt.
    # The first starts alone and takes the slots of "a"; its later creations wait until the
    # second has created a backend job, then it dies hard right after the next creation
    # (before recording it), leaving jobs in flight for the second to adopt.
    first_started, second_started = tmp_path / "first-started", tmp_path / "second-started"
    first = spawn(args, env=dict(os.environ, LEASE_SECONDS="3", BACKENDS="a",
                                 TOUCH_AFTER_CREATE=str(first_started), CRASH_WHEN_EXISTS=str(second_started)))
    deadline = time.monotonic() + 60
    while not first_started.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first_started.exists(), first.stderr.read() if first.poll() is not None else "first never started"
    second = spawn(args, env=dict(os.environ, LEASE_SECONDS="3", BACKENDS="a,b",
                                  TOUCH_AFTER_CREATE=str(second_started)))
    assert first.wait(120) == 9, first.stderr.read()
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, err
    assert f"{{'finished': {n}}}" in out

    titles = collections.Counter(
        j["title"] for j in local_backend.connect().list_jobs(limit=None)
        if str(j.get("title", "")).startswith(prefix + "-"))
    assert len(titles) == n
    assert set(titles.values()) == {1}, titles  # no job created twice by the two managers
    db = get_job_db(db_path)
    per_job = [{c.manager_id for c in db.history(key) if c.manager_id} for key in db.read().index]
    assert len(set().union(*per_job)) == 2  # both managers did work
    assert any(len(ids) == 2 for ids in per_job)  # jobs of the killed manager were adopted
