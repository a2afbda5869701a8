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

from eoextract.jobs.db import get_job_db

SCRIPT = Path(__file__).with_name("crash_run.py")


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
def test_kill_9_at_random_moments_then_resume(local_backend, tmp_path):
    """SIGKILL the manager at seeded random moments; every row ends finished, one backend job each."""
    rng = random.Random(20261123)
    prefix = f"chaos{uuid.uuid4().hex[:6]}"
    db_path = tmp_path / "jobs.db"
    n = 60
    args = [sys.executable, str(SCRIPT), local_backend.url, str(db_path), prefix, str(n)]
    interrupted = 0
    for _ in range(4):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(1.5, 3.0))  # imports take ~1 s; then jobs are in flight
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        if db_path.exists():
            with get_job_db(db_path) as db:
                interrupted += db.count_by_status(["finished"]).get("finished", 0) < n
    assert interrupted >= 2  # the kills really landed mid-run
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
