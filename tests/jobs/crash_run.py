"""Run a job manager in a child process; optionally die hard right after a backend job is created.

Usage: python crash_run.py URL DB_PATH PREFIX N [CRASH_ROW MARKER]

Environment: ``TOUCH_AFTER_CREATE=PATH`` creates PATH after this process's first backend job;
``CRASH_WHEN_EXISTS=PATH`` lets the first creation through, holds every later one until PATH
exists, and dies hard right after that creation reached the backend.
"""

from __future__ import annotations

import os
import sys
import time

import openeo
import pandas as pd

from eoextract.jobs import JobManager


def main() -> None:
    url, db_path, prefix, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    crash_row = int(sys.argv[5]) if len(sys.argv) > 5 else None
    marker = sys.argv[6] if len(sys.argv) > 6 else None

    touch_after_create = os.environ.get("TOUCH_AFTER_CREATE")
    crash_when_exists = os.environ.get("CRASH_WHEN_EXISTS")

    def start_job(row, connection, **kw):
        if crash_when_exists and os.path.exists(touch_after_create or ""):
            deadline = time.monotonic() + 120
            while not os.path.exists(crash_when_exists) and time.monotonic() < deadline:
                time.sleep(0.02)
        cube = connection.load_collection(
            "SENTINEL2_L2A",
            spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
            temporal_extent=["2021-06-01", "2021-06-10"], bands=["B04"])
        job = cube.create_job(title=row["title"], job_options={"eoextract_mode": "instant"})
        if touch_after_create and not os.path.exists(touch_after_create):
            open(touch_after_create, "w").close()
        if crash_when_exists and os.path.exists(crash_when_exists):
            os._exit(9)  # as below: created on the backend, never recorded
        if crash_row is not None and row["value"] == crash_row and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)  # the backend created the job; the manager never learned its id
        return job

    df = pd.DataFrame({"title": [f"{prefix}-{i}" for i in range(n)], "value": range(n)})
    manager = JobManager(poll_sleep=0.1, download_results=False, retry_backoff=0.05,
                         lease_seconds=float(os.environ.get("LEASE_SECONDS", "300")))
    for name in os.environ.get("BACKENDS", "local").split(","):
        manager.add_backend(name, lambda: openeo.connect(url).authenticate_basic("eoextract", "eoextract"),
                            parallel_jobs=3)
    stats = manager.run_jobs(df, start_job, job_db=db_path)
    print(stats["status_counts"], stats.get("job adopted", 0))


if __name__ == "__main__":
    main()
