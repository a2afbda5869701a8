"""Shared helpers for benchmarks: start the embedded backend in its own process."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests


@contextlib.contextmanager
def backend_process(data_dir: Path | None = None, workers: int = 2, extra: list[str] | None = None) -> Iterator[str]:
    """Run ``eoextract backend serve`` in a child process; yield its URL."""
    cmd = [sys.executable, "-m", "eoextract.cli", "backend", "serve", "--port", "0", "--workers", str(workers)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    cmd += extra or []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError("backend process exited early")
            match = re.search(r"(http://127\.0\.0\.1:\d+/?\S*)", line)
            if match:
                url = match.group(1)
        if url is None:
            raise RuntimeError("backend did not print its URL")
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds() -> float:
    """CPU time of this process (all threads)."""
    return time.process_time()
