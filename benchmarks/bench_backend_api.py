"""Embedded backend over HTTP: status polls while jobs run, and a seed-004-sized job end to end.

The backend runs in its own process (``eoextract backend serve --workers 4``); this script is
the client.

1. Polls: ``GET /jobs/{id}`` in a loop on one ``requests.Session`` for ``--seconds``, first
   with the backend idle (baseline), then while 4 real jobs execute in the worker pool.
   Goal: >= 100 polls/s while 4 jobs run.
2. Job: the seed-004-sized job of ``bench_backend_engine.py`` (3 features of 64x64 px,
   13 bands, 20 dates, NetCDF, ``sample_by_feature``) created, started, polled every 0.1 s
   and its 3 assets downloaded, over HTTP. Baseline: plain numpy filling the same cube, in
   the same run. Goal: <= 5 s.

    python benchmarks/bench_backend_api.py [--seconds 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import openeo
import requests
from _common import backend_process
from bench_backend_engine import job_graph, numpy_baseline

BUSY_BBOX = {"west": 5.0, "south": 51.0, "east": 5.05, "north": 51.05}
SMALL_BBOX = {"west": 5.0, "south": 51.0, "east": 5.003, "north": 51.003}


def cube_graph(bbox: dict, end: str, bands: list[str]) -> dict:
    return {
        "load": {"process_id": "load_collection", "arguments": {
            "id": "SENTINEL2_L2A", "spatial_extent": bbox,
            "temporal_extent": ["2021-06-01", end], "bands": bands}},
        "save": {"process_id": "save_result", "arguments": {
            "data": {"from_node": "load"}, "format": "NetCDF"}, "result": True},
    }


def poll_rate(session: requests.Session, url: str, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        resp = session.get(url, timeout=10)
        resp.raise_for_status()
        n += 1
    return n / elapsed


def wait_all(jobs: list, statuses: tuple[str, ...] = ("finished", "error", "canceled")) -> list[str]:
    while True:
        current = [j.status() for j in jobs]
        if all(s in statuses for s in current):
            return current
        time.sleep(0.1)


def run_seed_job(conn: openeo.Connection, target: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    job = conn.create_job(job_graph(), title="seed-004-sized", validate=False)
    job.start()
    (status,) = wait_all([job])
    if status != "finished":
        raise RuntimeError(f"job ended {status}: {[e['message'] for e in job.logs()]}")
    assets = job.get_results().get_assets()
    for asset in assets:
        asset.download(target / asset.key)
    return time.perf_counter() - t0, len(assets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, backend_process(Path(tmp) / "data", workers=4) as url:
        conn = openeo.connect(url).authenticate_basic("eoextract", "eoextract")
        target = conn.create_job(cube_graph(SMALL_BBOX, "2021-06-06", ["B04"]), title="poll-target",
                                 job_options={"eoextract_mode": "instant"}, validate=False)
        target.start()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {conn.auth.bearer}"
        poll_url = f"{url}jobs/{target.job_id}"
        poll_rate(session, poll_url, 0.5)  # warm-up
        idle = poll_rate(session, poll_url, args.seconds)

        # start all 4 worker engines with small jobs, then keep them busy with bigger ones
        warm = [conn.create_job(cube_graph(SMALL_BBOX, "2021-06-06", ["B04"]), validate=False)
                for _ in range(4)]
        for job in warm:
            job.start()
        wait_all(warm)
        busy = [conn.create_job(cube_graph(BUSY_BBOX, "2021-08-01", ["B02", "B03", "B04", "B08"]),
                                title=f"busy-{i}", validate=False) for i in range(4)]
        for job in busy:
            job.start()
        time.sleep(0.5)
        loaded = poll_rate(session, poll_url, args.seconds)
        still_running = sum(j.status() == "running" for j in busy)
        t_busy = time.perf_counter()
        wait_all(busy)
        busy_tail = time.perf_counter() - t_busy

        times = []
        n_assets = 0
        for i in range(args.repeat):
            out = Path(tmp) / f"seed{i}"
            out.mkdir()
            elapsed, n_assets = run_seed_job(conn, out)
            times.append(elapsed)
    numpy_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        numpy_baseline()
        numpy_times.append(time.perf_counter() - t0)

    med = statistics.median
    print(f"status polls, GET /jobs/{{id}} on one session, {args.seconds:.0f} s each:")
    print(f"  idle backend (baseline)      {idle:8.0f} polls/s")
    print(f"  while 4 jobs run             {loaded:8.0f} polls/s "
          f"({still_running}/4 still running at the end; they needed {busy_tail:.1f} s more)")
    print(f"  ratio loaded / idle          {loaded / idle:8.2f}")
    print(f"  goal >= 100 polls/s while 4 jobs run: {'met' if loaded >= 100 else 'NOT met'}")
    print(f"seed-004-sized job over HTTP ({n_assets} assets; create, start, poll 0.1 s, download), "
          f"{args.repeat} runs:")
    print(f"  end to end        median {med(times):6.2f} s   min {min(times):6.2f} s")
    print(f"  numpy baseline    median {med(numpy_times):6.3f} s")
    print(f"  ratio HTTP job / numpy    {med(times) / med(numpy_times):8.1f}x")
    print(f"  goal <= 5 s: {'met' if med(times) <= 5.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
