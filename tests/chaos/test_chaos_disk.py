"""The output folder's disk fills up during a download, then space comes back.

The output folder lives on a 2 MB tmpfs filled up to a few kilobytes (mounting needs root;
the test is skipped, with the reason, where that is not permitted). The job's download
must fail with a clear error, leave no partial file behind, and be retried; once the filler
file is removed the same run finishes the job and the catalogue validates.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from chaos_callbacks import create_datacube, generate_output_path, job_dataframe, post_job_action
from chaos_checks import TEMP_PREFIXES, output_tree_problems

from eoextract.extract import ExtractionManager
from eoextract.errors import JobDatabaseError
from eoextract.jobs.db import get_job_db
from eoextract.stac import validate_catalog

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture()
def small_disk(tmp_path):
    """A 2 MB tmpfs mounted in the test's folder (skips where mounting is not permitted)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no 'mount' command to create a size-limited filesystem")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                          check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = f"cannot mount a 2 MB tmpfs here (needs root): {proc.stderr.strip() or proc.returncode}"
        print(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Write a filler file so that only about ``leave`` bytes stay free."""
    stat = os.statvfs(folder)
    filler = folder / "filler"
    with open(filler, "wb") as fh:
        fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def test_disk_full_during_download_then_space_returns(local_backend, small_disk, tmp_path):
    out = small_disk / "out"
    df = job_dataframe(1, f"disk{uuid.uuid4().hex[:6]}", per_job=2)
    manager = ExtractionManager(out, generate_output_path, "CHAOS-DISK", "disk full",
                                post_job_action=post_job_action, poll_sleep=0.1, retry_backoff=2.0,
                                max_attempts=3)
    manager.add_backend("local", local_backend.connect, parallel_jobs=1)
    out.mkdir()
    filler = fill(small_disk, leave=8 * 1024)  # a result file is about 27 kB
    db_path = tmp_path / "jobs.db"
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(manager.run_jobs(df, create_datacube, db_path)))
    runner.start()
    try:
        deadline = time.monotonic() + 120
        row = None
        while time.monotonic() < deadline:  # until the first failed download is recorded
            if db_path.exists():
                try:
                    row = get_job_db(db_path).read().loc["0"]
                except (JobDatabaseError, KeyError):  # the file exists, its table or row not yet
                    time.sleep(0.05)
                    continue
                if isinstance(row["error_message"], str) or not runner.is_alive():
                    break
            time.sleep(0.05)
        assert row is not None and isinstance(row["error_message"], str), row
        # a clear error, and nothing half-written left in the output folder
        assert "No space left on device" in row["error_message"], row["error_message"]
        assert str(out) in row["error_message"], row["error_message"]  # says which disk
        assert row["error_class"] == "DiskFull", row["error_class"]
        assert row["status"] in ("downloading", "not_started"), row["status"]
        left = [p.relative_to(out) for p in out.rglob("*")
                if p.is_file() and (p.name.startswith(TEMP_PREFIXES) or p.suffix == ".nc")]
        assert left == []
    finally:
        filler.unlink()  # space comes back
        runner.join(180)
    assert not runner.is_alive()
    assert result["status_counts"] == {"finished": 1}
    history = [(str(c.new), c.message) for c in get_job_db(db_path).history("0")]
    assert history[-1][0] == "finished"
    assert output_tree_problems(out) == []
    report = validate_catalog(manager.create_stac(), check_assets=True)
    assert report.ok and report.n_items == 2, report.messages()[:5]


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, fh, room: int) -> None:
        self._fh, self._room = fh, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name: str):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def test_disk_full_is_retryable_names_the_folder_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """Without mounting anything: ENOSPC while writing a download."""
    import http.server

    import requests

    from eoextract.jobs._download import _transfer as transfer
    from eoextract.jobs._download import RemoteAsset
    from eoextract.jobs._classify import classify

    body = os.urandom(300_000)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    real_fdopen = os.fdopen
    monkeypatch.setattr(transfer.os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k), 100_000))
    asset = RemoteAsset(name="openEO_0.nc", href=f"http://127.0.0.1:{server.server_address[1]}/a")
    try:
        with requests.Session() as session, pytest.raises(OSError) as raised:
            transfer.download_to_temp(session, asset, tmp_path / "tmp", max_resumes=0)
    finally:
        server.shutdown()
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "tmp")
    assert list((tmp_path / "tmp").iterdir()) == []
    info = classify(raised.value)
    assert info.retryable and info.error_class == "DiskFull"
    assert "No space left on device" in info.message and str(tmp_path / "tmp") in info.message
