"""Backends that allow fewer running jobs than ``parallel_jobs``: eoextract against openeo.

Two embedded backends with the production profile, limited to 2 and 5 running jobs (no
queued places, as CDSE), each registered with ``parallel_jobs=8``. The same jobs (each
running ``--job-s`` seconds) run once with eoextract's manager and once with openeo's
``MultiBackendJobManager``. Printed side by side:

* refused starts (``ConcurrentJobLimit``) after the first refusal of each backend;
* slot use: the started jobs each backend holds (queued or running), sampled every 0.1 s
  while jobs still wait to start, as a fraction of its limit (goal ≥ 0.95 for eoextract);
* jobs that failed because of the limits (goal 0 for eoextract);
* wall time.

Usage::

    python benchmarks/bench_throttle.py [--jobs 200] [--job-s 0.5]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pandas as pd

LIMITS = {"two": 2, "five": 5}
PARALLEL = 8


def _start_job(seconds: float):
    def start_job(row, connection, **kwargs):
        cube = connection.load_collection(
            "SENTINEL2_L2A", spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
            temporal_extent=["2021-06-01", "2021-06-03"], bands=["B04"])
        options = {"eoextract_fault": "slow", "eoextract_fault_delay_s": seconds}
        return cube.create_job(title=row["title"], job_options=options, out_format="NetCDF")

    return start_job


class _SlotSampler:
    """Samples each backend's running jobs (``GET /jobs``) while jobs still wait."""

    def __init__(self, backends: dict, total: int) -> None:
        self.backends = backends
        self.total = total
        self.samples: dict[str, list[float]] = {n: [] for n in backends}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        cons = {n: b.connect() for n, b in self.backends.items()}
        while not self.stop.wait(0.1):
            statuses = {n: [j["status"] for j in c.list_jobs(limit=1000)] for n, c in cons.items()}
            finished = sum(s.count("finished") for s in statuses.values())
            # a started job holds its place from its start (queued) to its end
            running = {n: s.count("running") + s.count("queued") for n, s in statuses.items()}
            started = sum(running.values()) + finished
            if started >= self.total:  # nothing waits any more
                continue
            for name, n in running.items():
                self.samples[name].append(n / LIMITS[name])

    def use(self) -> dict[str, float]:
        return {n: (sum(s) / len(s) if s else float("nan")) for n, s in self.samples.items()}


def _run(which: str, n_jobs: int, job_s: float, work: Path) -> dict:
    from eoextract.backend import BackendProfile, LocalBackend

    prefix = uuid.uuid4().hex[:6]
    df = pd.DataFrame({"title": [f"{which}-{prefix}-{i}" for i in range(n_jobs)]})
    profiles = {n: BackendProfile.named("cdse", max_running_jobs=limit, max_queued_jobs=0)
                for n, limit in LIMITS.items()}
    with LocalBackend(profile=profiles["two"], workers=2) as two, \
            LocalBackend(profile=profiles["five"], workers=5) as five:
        backends = {"two": two, "five": five}
        sampler = _SlotSampler(backends, n_jobs)
        if which == "eoextract":
            from eoextract.jobs import JobManager

            manager = JobManager(poll_sleep=0.2, root_dir=work / which, download_results=False)
        else:
            from openeo.extra.job_management import MultiBackendJobManager

            manager = MultiBackendJobManager(poll_sleep=0.2, root_dir=work / which, download_results=False)
        for name, backend in backends.items():
            manager.add_backend(name, backend.connect(), parallel_jobs=PARALLEL)
        sampler.thread.start()
        t0 = time.monotonic()
        stats = manager.run_jobs(df=df, start_job=_start_job(job_s), job_db=work / f"{which}.csv")
        wall = time.monotonic() - t0
        sampler.stop.set()
        sampler.thread.join()
    table = pd.read_csv(work / f"{which}.csv")
    refused = int(stats.get("job start refused (backend full)", 0))
    if which == "openeo":  # its refused starts end the jobs: count them from the table
        refused = int((table["status"] != "finished").sum())
    failed = int((table["status"] != "finished").sum())
    return {"wall_s": wall, "refused": refused, "failed": failed, "use": sampler.use(),
            "first_refusals": sum(max(0, PARALLEL - limit) for limit in LIMITS.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--job-s", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        results = {w: _run(w, args.jobs, args.job_s, Path(tmp)) for w in ("eoextract", "openeo")}
    print(f"{args.jobs} jobs of {args.job_s} s over backends limited to {LIMITS} running jobs, "
          f"parallel_jobs={PARALLEL} each")
    print(f"{'':28}{'eoextract':>12}{'openeo':>12}")
    ours, theirs = results["eoextract"], results["openeo"]
    print(f"{'refused starts':28}{ours['refused']:>12}{theirs['refused']:>12}")
    print(f"{'  after the first burst':28}{max(0, ours['refused'] - ours['first_refusals']):>12}{'-':>12}")
    for name in LIMITS:
        print(f"{'slot use ' + name:28}{ours['use'][name]:>12.2f}{theirs['use'][name]:>12.2f}")
    print(f"{'jobs failed (limits)':28}{ours['failed']:>12}{theirs['failed']:>12}")
    print(f"{'wall s':28}{ours['wall_s']:>12.1f}{theirs['wall_s']:>12.1f}")
    ok = ours["failed"] == 0 and all(u >= 0.95 for u in ours["use"].values())
    print("goal (0 failed, slot use >= 0.95):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
