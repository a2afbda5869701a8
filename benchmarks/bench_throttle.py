"""Backends that allow fewer running jobs than ``parallel_jobs``: eoextract against openeo.

Two embedded backends with the production profile, limited to 2 and 5 running jobs (no
queued places, as CDSE), each registered with ``parallel_jobs=8``. The same jobs (each
running ``--job-s`` seconds) run once with eoextract's manager and once with openeo's
``MultiBackendJobManager``. Printed side by side:

* refused starts (``ConcurrentJobLimit``) after the first refusal of each backend;
* slot use: the share of each backend's limit held by started jobs (from the start that
  took a running place to the job's end), time-weighted while jobs still wait to start
  (from the first start of the run to the last), read back from the backends' own job logs
  after the run (goal ≥ 0.95 for eoextract). Each backend first runs (and deletes) one
  job per worker, so that the workers' slow first job does not count as slot use;
* seconds from a job's end to the next start on its backend while jobs wait (median, 90th
  percentile);
* jobs that failed because of the limits (goal 0 for eoextract);
* wall time.

Usage::

    python benchmarks/bench_throttle.py [--jobs 200] [--job-s 0.5]

:func:`measure` runs one manager and returns its figures (``benchmarks/run_all.py`` calls it
in a child process, section ``throttle``; openeo's manager runs there with the openeo of
eoextract's environment, since the limited backends are eoextract's embedded ones).
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

LIMITS = {"two": 2, "five": 5}
PARALLEL = 8


def _warm_up(backend, limit: int, timeout_s: float = 900.0) -> None:
    """Run one job per worker of a backend and delete it: its workers' first job (process
    start, imports) takes far longer than the next ones and would count as slot use."""
    connection = backend.connect()
    start_job = _start_job(0.0)
    jobs = [start_job({"title": f"warm-up-{i}"}, connection) for i in range(limit)]
    for job in jobs:
        job.start()
    deadline = time.monotonic() + timeout_s
    while any(job.status() not in ("finished", "error") for job in jobs) and time.monotonic() < deadline:
        time.sleep(0.5)
    for job in jobs:
        job.delete()


def _start_job(seconds: float):
    def start_job(row, connection, **kwargs):
        cube = connection.load_collection(
            "SENTINEL2_L2A", spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
            temporal_extent=["2021-06-01", "2021-06-03"], bands=["B04"])
        options = {"eoextract_fault": "slow", "eoextract_fault_delay_s": seconds}
        return cube.create_job(title=row["title"], job_options=options, out_format="NetCDF")

    return start_job


_HOLDS = re.compile(r"^Job queued \(run \d+\)\.$")
_WAITS = "Job waits for a free place"
_GOT = "Job got a free place."
_ENDS = ("Job finished", "Job failed", "Job canceled", "The server restarted")


def _log_time(entry: dict) -> float:
    """Seconds of a backend log entry (its id starts with the nanosecond time)."""
    return int(entry["id"][:20]) / 1e9


def _places(connection) -> list[tuple[float, float]]:
    """``(taken, given back)`` of every running place a backend gave our jobs, from the
    jobs' own logs (backend-side times; a refused start takes none)."""
    places = []
    for job in connection.list_jobs(limit=10_000):
        taken = None
        for entry in connection.job(job["id"]).logs():
            message = entry["message"]
            if _HOLDS.match(message):
                taken = _log_time(entry)
            elif message.startswith(_WAITS):
                taken = None  # queued without a running place: it takes one later
            elif message == _GOT:
                taken = _log_time(entry)
            elif taken is not None and message.startswith(_ENDS):
                places.append((taken, _log_time(entry)))
                taken = None
        if taken is not None:
            places.append((taken, float("inf")))
    return places


def _use(places: list[tuple[float, float]], limit: int, t0: float, t1: float) -> float:
    """Mean share of ``limit`` places in use between ``t0`` and ``t1`` (time-weighted)."""
    if t1 <= t0:
        return float("nan")
    events = sorted([(max(a, t0), 1) for a, b in places if a < t1 and b > t0]
                    + [(min(b, t1), -1) for a, b in places if a < t1 and b > t0])
    held, last, area = 0, t0, 0.0
    for t, step in events:
        area += min(held, limit) * (t - last)
        held, last = held + step, t
    area += min(held, limit) * (t1 - last)
    return area / (limit * (t1 - t0))


def _refill_gaps(places: list[tuple[float, float]], until: float) -> list[float]:
    """Seconds from each place given back before ``until`` to the next place taken on the
    same backend."""
    starts = sorted(a for a, _ in places)
    gaps = []
    for _, end in sorted(places, key=lambda p: p[1]):
        later = [a for a in starts if a >= end]
        if end >= until:
            break
        if later:
            gaps.append(later[0] - end)
            starts.remove(later[0])
    return gaps


def _waiting_window(places: dict[str, list[tuple[float, float]]]) -> tuple[float, float]:
    """While jobs wait: from the first place any backend gave to the last one (once every
    job holds or held a place, nothing waits any more)."""
    taken = [a for p in places.values() for a, _ in p]
    return min(taken), max(taken)


def slot_use(places: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """Per backend, the time-weighted share of its limit in use while jobs wait."""
    t0, t1 = _waiting_window(places)
    return {n: _use(p, LIMITS[n], t0, t1) for n, p in places.items()}


def refill_gaps(places: dict[str, list[tuple[float, float]]]) -> list[float]:
    """Seconds from a job's end to the next start on its backend, while jobs wait."""
    _, t1 = _waiting_window(places)
    return sorted(g for p in places.values() for g in _refill_gaps(p, t1))


def _run(which: str, n_jobs: int, job_s: float, work: Path) -> dict:
    from eoextract.backend import BackendProfile, LocalBackend

    prefix = uuid.uuid4().hex[:6]
    df = pd.DataFrame({"title": [f"{which}-{prefix}-{i}" for i in range(n_jobs)]})
    profiles = {n: BackendProfile.named("cdse", max_running_jobs=limit, max_queued_jobs=0)
                for n, limit in LIMITS.items()}
    with LocalBackend(profile=profiles["two"], workers=2) as two, \
            LocalBackend(profile=profiles["five"], workers=5) as five:
        backends = {"two": two, "five": five}
        for name, backend in backends.items():
            _warm_up(backend, LIMITS[name])
        if which == "eoextract":
            from eoextract.jobs import JobManager

            manager = JobManager(poll_sleep=0.2, root_dir=work / which, download_results=False)
        else:
            from openeo.extra.job_management import MultiBackendJobManager

            manager = MultiBackendJobManager(poll_sleep=0.2, root_dir=work / which, download_results=False)
        for name, backend in backends.items():
            manager.add_backend(name, backend.connect(), parallel_jobs=PARALLEL)
        t0 = time.monotonic()
        stats = manager.run_jobs(df=df, start_job=_start_job(job_s), job_db=work / f"{which}.csv")
        wall = time.monotonic() - t0
        places = {n: _places(b.connect()) for n, b in backends.items()}
    table = pd.read_csv(work / f"{which}.csv")
    refused = int(stats.get("job start refused (backend full)", 0))
    if which == "openeo":  # its refused starts end the jobs: count them from the table
        refused = int((table["status"] != "finished").sum())
    failed = int((table["status"] != "finished").sum())
    gaps = refill_gaps(places)
    return {"wall_s": wall, "refused": refused, "failed": failed, "use": slot_use(places),
            "gap_median_s": statistics.median(gaps) if gaps else float("nan"),
            "gap_p90_s": gaps[int(0.9 * (len(gaps) - 1))] if gaps else float("nan"),
            "first_refusals": sum(max(0, PARALLEL - limit) for limit in LIMITS.values())}


def measure(which: str = "eoextract", jobs: int = 60, job_s: float = 0.5) -> dict:
    """Figures of one manager (``"eoextract"`` or ``"openeo"``) on the two limited backends."""
    logging.getLogger("openeo.extra.job_management").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp:
        return _run(which, jobs, job_s, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--job-s", type=float, default=0.5)
    parser.add_argument("--only-eoextract", action="store_true", help="skip openeo's manager")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("openeo.extra.job_management").setLevel(logging.CRITICAL)  # one line per refusal
    managers = ("eoextract",) if args.only_eoextract else ("eoextract", "openeo")
    with tempfile.TemporaryDirectory() as tmp:
        results = {w: _run(w, args.jobs, args.job_s, Path(tmp)) for w in managers}
    results.setdefault("openeo", {"wall_s": float("nan"), "refused": -1, "failed": -1, "gap_median_s": float("nan"),
                                  "gap_p90_s": float("nan"), "use": {n: float("nan") for n in LIMITS}})
    print(f"{args.jobs} jobs of {args.job_s} s over backends limited to {LIMITS} running jobs, "
          f"parallel_jobs={PARALLEL} each")
    print(f"{'':28}{'eoextract':>12}{'openeo':>12}")
    ours, theirs = results["eoextract"], results["openeo"]
    print(f"{'refused starts':28}{ours['refused']:>12}{theirs['refused']:>12}")
    print(f"{'  after the first burst':28}{max(0, ours['refused'] - ours['first_refusals']):>12}{'-':>12}")
    for name in LIMITS:
        print(f"{'slot use ' + name:28}{ours['use'][name]:>12.2f}{theirs['use'][name]:>12.2f}")
    for key, label in (("gap_median_s", "end to next start, median s"), ("gap_p90_s", "  90th percentile s")):
        print(f"{label:28}{ours[key]:>12.3f}{theirs[key]:>12.3f}")
    print(f"{'jobs failed (limits)':28}{ours['failed']:>12}{theirs['failed']:>12}")
    print(f"{'wall s':28}{ours['wall_s']:>12.1f}{theirs['wall_s']:>12.1f}")
    ok = ours["failed"] == 0 and all(u >= 0.95 for u in ours["use"].values())
    print("goal (0 failed, slot use >= 0.95):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
