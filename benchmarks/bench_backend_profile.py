"""The production profile at scale: seeding a long job history and paging through it.

Usage::

    python benchmarks/bench_backend_profile.py            # 20,000 historical jobs
    python benchmarks/bench_backend_profile.py 100000

Prints the time to start a backend with N historical jobs (against one without), the time
to page through the whole listing with ``limit=1000`` and ``limit=100`` (per page), and one
``GET /jobs?limit=100`` at the end of the history next to one at its start (a page must not
cost more the further back it is).

Goals: seeding 20,000 jobs adds well under a second to the start; a page costs the same
wherever it is in the history.
"""

from __future__ import annotations

import sys
import time

from eoextract.backend import LocalBackend


def _start(count: int) -> tuple[LocalBackend, float]:
    t0 = time.perf_counter()
    backend = LocalBackend(profile="cdse", historical_jobs=count, workers=1).start()
    return backend, time.perf_counter() - t0


def _page_all(connection, limit: int) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    jobs = pages = 0
    href = f"/jobs?limit={limit}"
    while href:
        body = connection.get(href).json()
        jobs += len(body["jobs"])
        pages += 1
        href = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
    return jobs, pages, time.perf_counter() - t0


def _timed(connection, path: str) -> float:
    t0 = time.perf_counter()
    connection.get(path).json()
    return time.perf_counter() - t0


def main(count: int = 20_000) -> None:
    _start(0)[0].stop()  # imports and first start-up out of the way
    empty, t_empty = _start(0)
    empty.stop()
    backend, t_full = _start(count)
    try:
        connection = backend.connect()
        print(f"start: {t_empty:.2f} s without history, {t_full:.2f} s with {count} jobs "
              f"(+{t_full - t_empty:.2f} s)")
        for limit in (1000, 100):
            jobs, pages, seconds = _page_all(connection, limit)
            print(f"limit={limit}: {jobs} jobs in {pages} pages, {seconds:.2f} s "
                  f"({1000 * seconds / pages:.1f} ms per page)")
        t_first = min(_timed(connection, "/jobs?limit=100") for _ in range(20))
        t_last = min(_timed(connection, f"/jobs?limit=100&before={count // 100}") for _ in range(20))
        print(f"one page of 100 (best of 20): {1000 * t_first:.2f} ms at the start, "
              f"{1000 * t_last:.2f} ms near the end (ratio {t_last / t_first:.2f})")
    finally:
        backend.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
