"""Job manager overhead: eoextract's JobManager vs openeo's MultiBackendJobManager.

Both run N instant jobs (``eoextract_mode: instant``) on the embedded backend, which runs in
its own process; same ``poll_sleep``, same slots, results not downloaded. Printed: manager
CPU per job (CPU of this process while running the jobs), wall time, jobs/s, and for
eoextract the slot utilisation while jobs were waiting. Ratios are eoextract / openeo.
``--seconds S`` makes every job run S seconds on the backend (instead of finishing at once);
then the share of slot-time spent running jobs, ``N * S / (slots * wall)``, is printed for
both managers.

    python benchmarks/bench_manager.py [--n 2000] [--slots 20] [--poll-sleep 0.2] [--quick] [--rounds 3]

``--rounds R`` runs each manager R times, interleaved (eoextract, openeo, eoextract, ...),
and compares the runs of median CPU time: on a shared machine one run's CPU time varies by
about ±10 %, a median of three by much less.

:func:`measure` runs one manager once and returns its figures (``benchmarks/run_all.py``
calls it in a child process, also in the openeo peer's virtualenv).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import openeo
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import backend_process, cpu_seconds  # noqa: E402


PROCESS_GRAPH = {
    "load": {"process_id": "load_collection", "arguments": {
        "id": "SENTINEL2_L2A", "spatial_extent": {"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
        "temporal_extent": ["2021-06-01", "2021-06-10"], "bands": ["B04"]}},
    "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "netCDF"},
             "result": True},
}


def job_options(seconds: float) -> dict:
    """Options of an instant job, kept running ``seconds`` on the backend when > 0."""
    options: dict = {"eoextract_mode": "instant"}
    if seconds > 0:
        options |= {"eoextract_fault": "slow", "eoextract_fault_delay_s": float(seconds)}
    return options


def start_job(row, connection, **kwargs):
    # A prebuilt graph: the benchmark measures the managers, not the client's graph building.
    seconds = float(row["seconds"]) if "seconds" in row and pd.notna(row["seconds"]) else 0.0
    return connection.create_job(PROCESS_GRAPH, title=str(row["title"]), job_options=job_options(seconds))


def connect(url: str) -> openeo.Connection:
    return openeo.connect(url, auto_validate=False).authenticate_basic("eoextract", "eoextract")


def job_frame(n: int, prefix: str, seconds: float = 0.0) -> pd.DataFrame:
    frame = pd.DataFrame({"title": [f"{prefix}-{i}" for i in range(n)]})
    if seconds:
        frame["seconds"] = float(seconds)
    return frame


def run_eoextract(url: str, n: int, slots: int, poll_sleep: float, workdir: Path, seconds: float = 0.0) -> dict:
    from eoextract.jobs.db import create_job_db, get_job_db
    from eoextract.jobs import JobManager

    manager = JobManager(poll_sleep=poll_sleep, download_results=False)
    manager.add_backend("local", connect(url), parallel_jobs=slots)
    db_path = workdir / f"eo-{n}.db"
    # created before the clock starts, as openeo's CSV database is in run_openeo
    db = create_job_db(db_path, job_frame(n, f"eo{n}-{time.time_ns()}", seconds))
    t0, c0 = time.perf_counter(), cpu_seconds()
    stats = manager.run_jobs(start_job=start_job, job_db=db)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    assert stats["status_counts"] == {"finished": n}, stats["status_counts"]
    return {"wall": wall, "cpu": cpu, "util": slot_utilisation(get_job_db(db_path), slots)}


def slot_utilisation(db, slots: int) -> float:
    """Share of slot-time in use from the first claim until the queue ran empty."""
    intervals, claims = [], []
    for key in db.read().index:
        changes = db.history(key)
        start = next(c.at for c in changes if str(c.new) == "creating")
        end = next(c.at for c in changes if str(c.new) in ("downloading", "finished"))
        intervals.append((start.timestamp(), end.timestamp()))
        claims.append(start.timestamp())
    t_begin, t_queue_empty = min(claims), max(claims)
    if t_queue_empty <= t_begin:
        return 1.0
    busy = sum(max(0.0, min(e, t_queue_empty) - max(s, t_begin)) for s, e in intervals)
    return busy / (slots * (t_queue_empty - t_begin))


def run_openeo(url: str, n: int, slots: int, poll_sleep: float, workdir: Path, seconds: float = 0.0) -> dict:
    from openeo.extra.job_management import CsvJobDatabase, MultiBackendJobManager
    CsvJobDatabase(workdir / "warm-up.csv").initialize_from_df(job_frame(1, "warm")).read()

    manager = MultiBackendJobManager(poll_sleep=poll_sleep, download_results=False)
    manager.add_backend("local", connect(url), parallel_jobs=slots)
    db = CsvJobDatabase(workdir / f"openeo-{n}.csv").initialize_from_df(
        job_frame(n, f"oe{n}-{time.time_ns()}", seconds))
    t0, c0 = time.perf_counter(), cpu_seconds()
    manager.run_jobs(start_job=start_job, job_db=db)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    counts = db.count_by_status()
    assert counts.get("finished") == n, counts
    return {"wall": wall, "cpu": cpu}


def measure(url: str, n: int, slots: int = 20, poll_sleep: float = 0.2, manager: str = "eoextract",
            seconds: float = 0.0) -> dict:
    """Run ``n`` jobs with one manager (``"eoextract"`` or ``"openeo"``) against ``url``.

    Returns:
        ``n``, ``wall`` (s), ``cpu`` (s of this process), ``cpu_ms_per_job``, ``jobs_per_s``,
        ``busy`` (``n * seconds / (slots * wall)``, when ``seconds`` > 0) and, for eoextract,
        ``util`` (slot utilisation from the status history while jobs were waiting).
    """
    logging.basicConfig(level=logging.ERROR)
    runner = run_eoextract if manager == "eoextract" else run_openeo
    with tempfile.TemporaryDirectory() as tmp:
        res = runner(url, n, slots, poll_sleep, Path(tmp), seconds)
    res |= {"n": n, "cpu_ms_per_job": 1000 * res["cpu"] / n, "jobs_per_s": n / res["wall"]}
    if seconds > 0:
        res["busy"] = n * seconds / (slots * res["wall"])
    return res


def median_run(runs: list[dict]) -> dict:
    """The run with the median CPU time (the lower middle one of an even number)."""
    return sorted(runs, key=lambda run: run["cpu"])[(len(runs) - 1) // 2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--poll-sleep", type=float, default=0.2)
    parser.add_argument("--quick", action="store_true", help="N=300, flatness check 100 vs 600")
    parser.add_argument("--skip-openeo", action="store_true")
    parser.add_argument("--seconds", type=float, default=0.0, help="run time of each job on the backend")
    parser.add_argument("--skip-flatness", action="store_true", help="no runs at two sizes")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each manager, interleaved; the medians are compared")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    logging.basicConfig(level=logging.ERROR)
    n = 300 if args.quick else args.n
    small, large = (100, 600) if args.quick else (500, 5000)

    with tempfile.TemporaryDirectory() as tmp, backend_process(workers=2) as url:
        workdir = Path(tmp)
        rounds: list[tuple[dict, dict | None]] = []
        for r in range(args.rounds):  # interleaved: a slow spell of the machine hits both
            ours = run_eoextract(url, n, args.slots, args.poll_sleep, Path(tempfile.mkdtemp(dir=tmp)), args.seconds)
            peer = None if args.skip_openeo else run_openeo(
                url, n, args.slots, args.poll_sleep, Path(tempfile.mkdtemp(dir=tmp)), args.seconds)
            rounds.append((ours, peer))
            if args.rounds > 1:
                print(f"round {r + 1}: eoextract {1000 * ours['cpu'] / n:.2f} ms/job"
                      + (f", openeo {1000 * peer['cpu'] / n:.2f} ms/job, ratio {ours['cpu'] / peer['cpu']:.3f}"
                         if peer else ""), flush=True)
        ours = median_run([o for o, _ in rounds])
        print(f"eoextract  N={n}: CPU {1000 * ours['cpu'] / n:.2f} ms/job, wall {ours['wall']:.1f} s, "
              f"{n / ours['wall']:.1f} jobs/s, slot utilisation {100 * ours['util']:.1f}%")
        ok = ours["util"] >= 0.95
        if args.seconds:
            print(f"eoextract  slot-time running jobs: {n * args.seconds / (args.slots * ours['wall']):.1%}")
        if not args.skip_openeo:
            peer = median_run([p for _, p in rounds if p is not None])
            print(f"openeo     N={n}: CPU {1000 * peer['cpu'] / n:.2f} ms/job, wall {peer['wall']:.1f} s, "
                  f"{n / peer['wall']:.1f} jobs/s")
            cpu_ratio = ours["cpu"] / peer["cpu"]
            if args.seconds:
                print(f"openeo     slot-time running jobs: {n * args.seconds / (args.slots * peer['wall']):.1%}")
            median = " (medians of the rounds)" if args.rounds > 1 else ""
            print(f"ratio CPU/job eoextract/openeo = {cpu_ratio:.3f}{median} (goal <= 0.12)")
            print(f"ratio throughput eoextract/openeo = {peer['wall'] / ours['wall']:.2f}x")
            ok &= cpu_ratio <= 0.12
        if args.skip_flatness:
            print("PASS" if ok else "FAIL")
            return 0 if ok else 1
        a = run_eoextract(url, small, args.slots, args.poll_sleep, workdir)
        b = run_eoextract(url, large, args.slots, args.poll_sleep, workdir)
        flat = (b["cpu"] / large) / (a["cpu"] / small)
        print(f"flatness: CPU/job N={large} / N={small} = {flat:.2f} (goal <= 1.2); "
              f"{1000 * a['cpu'] / small:.2f} vs {1000 * b['cpu'] / large:.2f} ms/job")
        ok &= flat <= 1.2
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
