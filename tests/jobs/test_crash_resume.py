"""kill -9 between 'backend created the job' and 'row saved', then resume: no duplicate job."""

from __future__ import annotations

import collections
import subprocess
import sys
import uuid
from pathlib import Path

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
