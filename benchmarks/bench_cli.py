"""Wall time of ``eoextract status`` on a 30-job SQLite database, in a fresh process each time.

A command line pays for every module it imports before it prints anything; ``status``
imports only what it uses (no pandas, numpy, geopandas, openeo, pystac: see
``tests/test_cli.py::test_status_imports_only_what_it_uses``). The baseline, from the same
run, is the bare interpreter (``python -c pass``) and ``eoextract --help`` (the command
line's own cost: click, typer, rich), so the figures can be read on a busy machine too.
Modules are run from bytecode caches (written by a first run into a private
``PYTHONPYCACHEPREFIX``), as they are from an installed wheel.

Usage::

    python benchmarks/bench_cli.py [--jobs 30] [--repeat 7]

Prints the median and best wall time and the CPU time of each, and the target
(``status`` ≤ 1.0 s wall). :func:`measure` returns the figures (``benchmarks/run_all.py``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
GOAL_S = 1.0


def make_db(path: Path, jobs: int) -> Path:
    """A job database as a run leaves it: finished, failed and queued jobs, with history."""
    import geopandas as gpd
    from shapely.geometry import box

    from eoextract.jobs.db import create_job_db
    from eoextract.jobs.status import JobStatus as S

    df = gpd.GeoDataFrame({"title": [f"t{i}" for i in range(jobs)]},
                          geometry=[box(5 + i * 0.01, 51, 5.01 + i * 0.01, 51.01) for i in range(jobs)],
                          crs=4326)
    db = create_job_db(path, df)
    db.register_backend("local", "http://127.0.0.1:9")
    for i in range(jobs):
        key = str(i)
        db.transition(key, S.CREATING, backend_name="local", attempt=1)
        db.transition(key, S.QUEUED, id=f"j-{i}")
        if i % 3 == 0:
            db.transition(key, S.RUNNING)
            db.transition(key, S.FINISHED)
        elif i % 3 == 1:
            db.transition(key, S.ERROR, error_class="JobFailed", error_message="boom")
    return path


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(jobs: int = 30, repeat: int = 7) -> dict[str, float]:
    """Median/best wall and median CPU seconds of ``eoextract status`` and of the baselines."""
    with tempfile.TemporaryDirectory() as tmp:
        # bytecode cached as an installed package has it (pip compiles it), in a folder of
        # our own: a run without .pyc files spends most of its time compiling sources
        env = dict(os.environ, PYTHONPATH=str(SRC), PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        db = make_db(Path(tmp) / "jobs.db", jobs)
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "help": [sys.executable, "-m", "eoextract.cli", "--help"],
            "status": [sys.executable, "-m", "eoextract.cli", "status", str(db)],
        }
        for cmd in commands.values():  # writes the bytecode caches, warms the file cache
            _timed(cmd, env)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(repeat):
            for name, cmd in commands.items():  # interleaved: load changes hit all alike
                times[name].append(_timed(cmd, env))
    out: dict[str, float] = {"jobs": jobs, "repeat": repeat, "load": os.getloadavg()[0]}
    for name, runs in times.items():
        out[f"{name}_wall_s"] = statistics.median(w for w, _ in runs)
        out[f"{name}_best_wall_s"] = min(w for w, _ in runs)
        out[f"{name}_cpu_s"] = statistics.median(c for _, c in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    r = measure(args.jobs, args.repeat)
    print(f"load average {r['load']:.1f} on {os.cpu_count()} CPUs; {args.repeat} runs each, median (best)")
    for name, label in (("python", "python -c pass"), ("help", "eoextract --help"),
                        ("status", f"eoextract status, {args.jobs} jobs")):
        print(f"{label:<28} wall {r[f'{name}_wall_s']:.3f} s ({r[f'{name}_best_wall_s']:.3f} s)  "
              f"CPU {r[f'{name}_cpu_s']:.3f} s")
    status = r["status_wall_s"]
    print(f"status / --help: {status / r['help_wall_s']:.2f}x wall, "
          f"{r['status_cpu_s'] / r['help_cpu_s']:.2f}x CPU")
    print(f"eoextract status wall {status:.3f} s [target <= {GOAL_S} s: "
          f"{'ok' if status <= GOAL_S else 'MISSED'}]")


if __name__ == "__main__":
    main()
