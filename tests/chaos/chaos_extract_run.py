"""Run a seed-like extraction in a child process (so a test can kill it with SIGKILL).

Usage: python chaos_extract_run.py URL OUTPUT_DIR JOB_DB PREFIX N_JOBS

Builds the same job dataframe every time (from PREFIX and N_JOBS), so a restarted run
resumes the job database instead of adding jobs; prints the final status counts as JSON.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import openeo

sys.path.insert(0, str(Path(__file__).parent))

from chaos_callbacks import create_datacube, generate_output_path, job_dataframe, post_job_action

from eoextract.extract import ExtractionManager


def main() -> None:
    url, output_dir, job_db, prefix, n_jobs = sys.argv[1:6]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    manager = ExtractionManager(output_dir, generate_output_path, "CHAOS-S2", "chaos test extraction",
                                post_job_action=post_job_action, poll_sleep=0.1, retry_backoff=0.05,
                                n_threads=2)
    manager.add_backend("local", lambda: openeo.connect(url).authenticate_basic("eoextract", "eoextract"),
                        parallel_jobs=3)
    stats = manager.run_jobs(job_dataframe(int(n_jobs), prefix), create_datacube, Path(job_db))
    print(json.dumps(stats["status_counts"]), flush=True)


if __name__ == "__main__":
    main()
