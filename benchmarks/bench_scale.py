"""A long extraction run: does the manager's cost per job stay flat with the run's length?

eoextract's :class:`~eoextract.extract.ExtractionManager` runs N instant jobs
(``eoextract_mode: instant``) on the embedded backend (in a process of its own, CDSE-style
results), 50 slots: every job's small result file is downloaded, verified, placed, and
described by a STAC item. The same process first runs a small extraction (``--small``,
default 1,000 jobs), then the large one, on the same backend, so the large run also meets
the small run's jobs in the backend's listing. Printed per run: manager CPU per job (CPU of
this process while ``run_jobs`` runs), wall time, jobs/s, and the peak RSS of this process
at its end; then the ratio of CPU per job, large / small (goal ≤ 1.2), and the peak RSS
against its goal (≤ 400 MiB).

    python benchmarks/bench_scale.py --jobs 20000         # 1,000 then 20,000 jobs
    python benchmarks/bench_scale.py --full               # 1,000 then 100,000 jobs
    python benchmarks/bench_scale.py --jobs 10000 --profile /tmp/scale.prof   # cProfile the large run

:func:`measure` runs both extractions and returns their figures (``benchmarks/run_all.py``
calls it in a child process, section ``scale``).
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import backend_process, cpu_seconds  # noqa: E402
from bench_manager import PROCESS_GRAPH, connect, job_options  # noqa: E402

FULL_JOBS = 100_000
SLOTS = 50
POLL_SLEEP = 0.2
CPU_GROWTH_GOAL = 1.2
PEAK_RSS_GOAL_MIB = 400.0


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class RssSampler:
    """The resident set size of this process once a second, in a thread, while active."""

    def __init__(self, every_s: float = 1.0) -> None:
        import psutil

        self._process = psutil.Process()
        self._every_s = every_s
        self._stop = threading.Event()
        self.samples: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._process.memory_info().rss / 2**20)
            self._stop.wait(self._every_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def early_and_late(self) -> tuple[float, float]:
        """Highest RSS in the first and in the last tenth of the run (MiB)."""
        tenth = max(1, len(self.samples) // 10)
        return max(self.samples[:tenth]), max(self.samples[-tenth:])


def start_job(row, connection, **kwargs):
    return connection.create_job(PROCESS_GRAPH, title=str(row["title"]), job_options=job_options(0))


def output_path(root_folder, tmp_path, geometry_index, row):
    return Path(root_folder) / "data" / str(row["title"])[-3:] / f"{row['title']}.nc"


def run_extraction(url: str, n: int, workdir: Path, slots: int = SLOTS, poll_sleep: float = POLL_SLEEP,
                   profile: str | None = None) -> dict:
    """One extraction of ``n`` instant jobs into ``workdir``; the manager's CPU and wall."""
    from eoextract.extract import ExtractionManager

    manager = ExtractionManager(workdir, output_path, "bench-scale", "long extraction", poll_sleep=poll_sleep)
    manager.add_backend("local", connect(url), parallel_jobs=slots)
    prefix = f"s{n}-{time.time_ns()}"
    frame = pd.DataFrame({"title": [f"{prefix}-{i:06d}" for i in range(n)]})
    profiler = cProfile.Profile() if profile else None
    with RssSampler() as rss:
        t0, c0 = time.perf_counter(), cpu_seconds()
        if profiler is not None:
            profiler.enable()
        stats = manager.run_jobs(frame, start_job, workdir / "jobs.db")
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    early, late = rss.early_and_late()
    assert stats["status_counts"] == {"finished": n}, stats["status_counts"]
    from eoextract.extract import ItemStore

    stored = len(ItemStore(workdir).files())
    assert stored == n, f"items stored for {stored} of {n} jobs"
    return {"n": n, "wall": wall, "cpu": cpu, "cpu_ms_per_job": 1000 * cpu / n, "jobs_per_s": n / wall,
            "peak_rss_mib": peak_rss_mib(), "rss_first_tenth_mib": early, "rss_last_tenth_mib": late}


def measure(url: str, jobs: int, small: int = 1000, slots: int = SLOTS, poll_sleep: float = POLL_SLEEP,
            profile: str | None = None) -> dict:
    """A small extraction, then a large one, in this process against ``url``.

    Returns:
        ``small`` and ``large`` (each: ``n``, ``wall``, ``cpu``, ``cpu_ms_per_job``,
        ``jobs_per_s``, ``peak_rss_mib``, ``rss_first_tenth_mib``, ``rss_last_tenth_mib``: the
        highest RSS in the first and last tenth of the run), ``cpu_growth`` (CPU per job, large / small) and
        ``peak_rss_mib`` (of the whole process, at the end).
    """
    logging.basicConfig(level=logging.ERROR)
    # ignore_cleanup_errors: removing 100,000 jobs' files can meet a folder still being emptied
    with tempfile.TemporaryDirectory(prefix="eoextract-bench-scale-", ignore_cleanup_errors=True) as tmp:
        a = run_extraction(url, small, Path(tmp) / "small", slots, poll_sleep)
        b = run_extraction(url, jobs, Path(tmp) / "large", slots, poll_sleep, profile)
    return {"small": a, "large": b, "cpu_growth": b["cpu_ms_per_job"] / a["cpu_ms_per_job"],
            "peak_rss_mib": peak_rss_mib()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs of the large run")
    parser.add_argument("--full", action="store_true", help=f"{FULL_JOBS:,} jobs")
    parser.add_argument("--small", type=int, default=1000, help="jobs of the small run")
    parser.add_argument("--slots", type=int, default=SLOTS)
    parser.add_argument("--poll-sleep", type=float, default=POLL_SLEEP)
    parser.add_argument("--profile", help="write a cProfile of the large run to this file")
    args = parser.parse_args()
    jobs = FULL_JOBS if args.full else args.jobs
    with tempfile.TemporaryDirectory(prefix="eoextract-bench-scale-backend-", ignore_cleanup_errors=True) as tmp, \
            backend_process(Path(tmp), workers=2, extra=["--result-style", "cdse"]) as url:
        res = measure(url, jobs, args.small, args.slots, args.poll_sleep, args.profile)
    for run in (res["small"], res["large"]):
        print(f"extraction N={run['n']:,}: CPU {run['cpu_ms_per_job']:.2f} ms/job, wall {run['wall']:.1f} s, "
              f"{run['jobs_per_s']:.1f} jobs/s, peak RSS {run['peak_rss_mib']:.0f} MiB, RSS "
              f"{run['rss_first_tenth_mib']:.0f} MiB in the first tenth of the run, "
              f"{run['rss_last_tenth_mib']:.0f} MiB in the last")
    growth, rss = res["cpu_growth"], res["peak_rss_mib"]
    print(f"CPU per job N={jobs:,} / N={args.small:,} = {growth:.2f} (goal <= {CPU_GROWTH_GOAL})")
    print(f"peak RSS of the manager's process = {rss:.0f} MiB (goal <= {PEAK_RSS_GOAL_MIB:.0f})")
    ok = growth <= CPU_GROWTH_GOAL and rss <= PEAK_RSS_GOAL_MIB
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
