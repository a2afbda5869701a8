"""SIGKILL the extraction manager at seeded random moments of a seed-like extraction.

Each kill lands somewhere in creating, polling, downloading, placing, post-processing or
storing items; the manager is then started again on the same job database and output
folder. After the last restart runs to the end: every job finished exactly once, no backend
job was created twice, every file in the output tree is complete and described by an item
with its checksum, no temporary file is left in the data tree (interrupted runs may leave
some in the ``.eoextract`` state folder; the next run removes stale ones), and the
catalogue validates.

Small by default (12 jobs, 4 kills); ``EOEXTRACT_CHAOS_SCALE=full`` runs 200 jobs, 20 kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from chaos_callbacks import scaled
from chaos_checks import backend_titles, leftover_temp_files, output_tree_problems

from eoextract.extract import build_catalogue
from eoextract.extract import ItemStore
from eoextract.jobs.db import get_job_db
from eoextract.stac import validate_catalog

pytestmark = [pytest.mark.slow, pytest.mark.timeout(scaled(300, 3600))]

SCRIPT = Path(__file__).with_name("chaos_extract_run.py")


def history_rows(db_path: Path) -> int:
    """Rows of the status history so far (read-only; 0 before the database exists)."""
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM job_status_changes").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_extraction_manager_at_random_moments(local_backend, tmp_path):
    rng = random.Random(20261124)
    n_jobs, kills = scaled(12, 200), scaled(4, 20)
    # a run writes at least six history rows per job (not_started, creating, queued,
    # downloading, postprocessing, finished): the kill moment is drawn on that progress
    # clock, not on the wall clock, so it lands mid-run however fast the manager is
    expected_rows = 6 * n_jobs
    prefix = f"kill{uuid.uuid4().hex[:6]}"
    out, db_path = tmp_path / "out", tmp_path / "jobs.db"
    args = [sys.executable, str(SCRIPT), local_backend.url, str(out), str(db_path), prefix, str(n_jobs)]
    landed = []
    for _ in range(kills):
        before = history_rows(db_path)
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        # let this run get through a random part (at most half) of the work still to do
        kill_after = before + rng.randint(1, max(1, (expected_rows - before) // 2))
        while proc.poll() is None and history_rows(db_path) < kill_after and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (0, -signal.SIGKILL), err[-2000:]
        with get_job_db(db_path) as db:
            finished = db.count_by_status(["finished"]).get("finished", 0)
        landed.append(proc.returncode == -signal.SIGKILL and finished < n_jobs)
    assert sum(landed) >= kills * 3 // 4, landed  # the kills really interrupted the run

    final = subprocess.run(args, check=False, capture_output=True, text=True, timeout=scaled(300, 1800))
    assert final.returncode == 0, final.stderr[-3000:]
    assert json.loads(final.stdout.strip().splitlines()[-1]) == {"finished": n_jobs}

    # every job finished exactly once, and ran as one backend job
    db = get_job_db(db_path)
    for key in db.read().index:
        assert [str(c.new) for c in db.history(key)].count("finished") == 1, db.history(key)
    titles = backend_titles(local_backend.connect(), prefix + "-")
    assert len(titles) == n_jobs
    assert set(titles.values()) == {1}, {t: c for t, c in titles.items() if c > 1}

    # complete, verified files only; items for every sample; a valid catalogue
    assert output_tree_problems(out) == []
    n_samples = sum(len(json.loads(g)["features"]) for g in db.read()["geometry"])
    assert len(list(ItemStore(out).iter_items())) == n_samples
    report = validate_catalog(build_catalogue(out), check_assets=True)
    assert report.ok and report.n_items == n_samples, report.messages()[:5]
    # interrupted runs may leave temporary files, but only in the .eoextract state folder
    left = leftover_temp_files(out)
    print(f"{sum(landed)} of {kills} kills landed mid-run; {len(left)} temporary file(s) left in "
          f"{sorted({str(p.parent.relative_to(out)) for p in left})}")


def test_a_new_run_removes_stale_temporary_files(local_backend, tmp_path):
    """Runs killed mid-way leave temporary files; the next run removes the old ones."""
    from chaos_callbacks import create_datacube, generate_output_path, job_dataframe

    from eoextract.extract import ExtractionManager
    from eoextract.extract._extraction import STALE_TEMP_SECONDS
    from eoextract.jobs._download import STATE_DIR, TEMP_PREFIX

    out = tmp_path / "out"
    stale, fresh = [], []
    for folder, prefix in (("tmp", TEMP_PREFIX), ("downloads", TEMP_PREFIX), ("items", ".tmp-")):
        (out / STATE_DIR / folder).mkdir(parents=True)
        old = out / STATE_DIR / folder / f"{prefix}old.nc"
        old.write_bytes(b"partial")
        os.utime(old, (time.time() - STALE_TEMP_SECONDS - 60,) * 2)
        new = out / STATE_DIR / folder / f"{prefix}new.nc"
        new.write_bytes(b"in progress elsewhere")
        stale.append(old)
        fresh.append(new)
    manager = ExtractionManager(out, generate_output_path, "CHAOS-TMP", poll_sleep=0.1)
    manager.add_backend("local", local_backend.connect, parallel_jobs=1)
    stats = manager.run_jobs(job_dataframe(1, f"tmp{uuid.uuid4().hex[:6]}", per_job=1), create_datacube,
                             tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 1}
    assert not any(p.exists() for p in stale) and all(p.exists() for p in fresh)
