"""Backend faults mixed at random through a seed-like extraction.

Job faults, drawn per job from a seeded generator: the job fails on the backend once or
for good, is lost (404) once, serves a corrupt asset once, or runs slowly. Request faults,
injected by a seeded thread while the run goes on (about one request in ten): 5xx on job
creation, listing, results and asset downloads, 429 with ``Retry-After``, and requests
that hang past the client's timeout.

The run must end on its own with every job in a final status, every failure classified in
the job database (``error_class`` and ``error_message``), no job beyond ``max_attempts``,
the finished jobs' files verified and a valid catalogue.
"""

from __future__ import annotations

import json
import random
import threading
import uuid

import openeo
import pandas as pd
import pytest
from chaos_callbacks import (
    create_datacube,
    generate_output_path,
    job_dataframe,
    post_job_action,
    scaled,
)
from chaos_checks import backend_titles, output_tree_problems

from eoextract.backend import LocalBackend
from eoextract.extract import ExtractionManager
from eoextract.jobs.db import get_job_db
from eoextract.jobs.status import TERMINAL, JobStatus
from eoextract.stac import validate_catalog

pytestmark = [pytest.mark.slow, pytest.mark.timeout(scaled(300, 3600))]

MAX_ATTEMPTS = 3
CLIENT_TIMEOUT = 3.0
#: (weight, job options) of the job faults
JOB_FAULTS = [
    (60, {}),
    (8, {"eoextract_fault": "error", "eoextract_fault_times": 1}),
    (5, {"eoextract_fault": "error"}),  # fails every time: ends in error
    (8, {"eoextract_fault": "lost", "eoextract_fault_times": 1, "eoextract_fault_delay_s": 0.3}),
    (9, {"eoextract_fault": "corrupt_asset", "eoextract_fault_times": 1}),
    (10, {"eoextract_fault": "slow", "eoextract_fault_delay_s": 1.5}),
]
#: request faults the injector draws from (LocalBackend.inject_fault arguments)
REQUEST_FAULTS = [
    {"path_regex": r"^/jobs$", "method": "POST", "status": 503},
    {"path_regex": r"^/jobs$", "method": "GET", "status": 500},
    {"path_regex": r"^/jobs/[^/]+$", "method": "GET", "status": 502},
    {"path_regex": r"/results$", "method": "GET", "status": 503},
    {"path_regex": r"/results$", "method": "POST", "status": 500},
    {"path_regex": r"/results/assets/", "status": 503},
    {"path_regex": r"/results/assets/", "status": 500, "times": 2},
    {"path_regex": r"^/jobs", "status": 429, "retry_after": 1},
    {"path_regex": r"^/jobs$", "method": "GET", "status": None, "delay_s": CLIENT_TIMEOUT + 2},
    {"path_regex": r"/results$", "method": "GET", "status": None, "delay_s": CLIENT_TIMEOUT + 2},
    {"path_regex": r"/results/assets/", "status": None, "delay_s": 2.0},
]


@pytest.fixture()
def faulty_backend(tmp_path_factory):
    with LocalBackend(data_dir=tmp_path_factory.mktemp("faulty-backend"), faults=True) as backend:
        yield backend


def inject_while(backend: LocalBackend, stop: threading.Event, rng: random.Random, log: list[dict]) -> None:
    """Add a random request fault every 0.1-0.4 s until ``stop`` is set, unless two are still
    waiting for a matching request (faults must not pile up while the manager backs off)."""
    while not stop.wait(rng.uniform(0.1, 0.4)):
        if len(backend.list_faults()) >= 2:
            continue
        rule = dict(rng.choice(REQUEST_FAULTS))
        backend.inject_fault(**rule)
        log.append(rule)


def test_mixed_faults_end_classified_and_bounded(faulty_backend, tmp_path):
    rng = random.Random(20261125)
    n_jobs = scaled(16, 200)
    prefix = f"faults{uuid.uuid4().hex[:6]}"
    weights, options = zip(*JOB_FAULTS)
    # every kind at least once, the rest drawn by weight, in a seeded random order
    chosen = list(range(1, len(options))) + rng.choices(range(len(options)), weights=weights,
                                                        k=n_jobs - len(options) + 1)
    rng.shuffle(chosen)
    df = job_dataframe(n_jobs, prefix, per_job=1)
    df["job_options"] = [json.dumps(options[c]) for c in chosen]
    doomed = {str(i) for i, c in enumerate(chosen) if options[c] == {"eoextract_fault": "error"}}

    manager = ExtractionManager(tmp_path / "out", generate_output_path, "CHAOS-FAULTS", "faults",
                                post_job_action=post_job_action, poll_sleep=0.1, retry_backoff=0.05,
                                max_attempts=MAX_ATTEMPTS, n_threads=2)
    url = faulty_backend.url
    manager.add_backend("local", lambda: openeo.connect(url, default_timeout=CLIENT_TIMEOUT)
                        .authenticate_basic("eoextract", "eoextract"), parallel_jobs=4)
    stop, injected = threading.Event(), []
    injector = threading.Thread(target=inject_while, args=(faulty_backend, stop, random.Random(7), injected),
                                daemon=True)
    injector.start()
    try:
        stats = manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    finally:
        stop.set()
        injector.join(10)
        faulty_backend.clear_faults()
    assert len(injected) >= 5

    jobs = get_job_db(tmp_path / "jobs.db").read()
    assert set(stats["status_counts"]) <= {str(s) for s in TERMINAL}, stats["status_counts"]
    assert (jobs["attempt"] <= MAX_ATTEMPTS).all(), jobs["attempt"].to_dict()
    db = get_job_db(tmp_path / "jobs.db")
    for key, row in jobs.iterrows():
        history = db.history(key)
        retried = [c for c in history if c.new is JobStatus.NOT_STARTED and c.old is not None]
        if row["status"] != "finished":
            # every failure is classified
            assert isinstance(row["error_class"], str) and row["error_class"], (key, row.to_dict())
            assert isinstance(row["error_message"], str) and row["error_message"], (key, row.to_dict())
        else:  # a job that finished in the end keeps its earlier errors in the history only
            assert pd.isna(row["error_class"]) and pd.isna(row["error_message"]), (key, row.to_dict())
        # the history says why each attempt was retried
        assert all(c.message for c in retried), [(c.new, c.message) for c in history]
        if key in doomed:
            # every attempt fails: the last one on the backend (error), or already when the job
            # was created, if an injected request fault hit that call (start_failed)
            assert row["status"] in ("error", "start_failed"), (key, row.to_dict())
            assert row["attempt"] == MAX_ATTEMPTS, (key, row.to_dict())
    finished = set(jobs.index[jobs["status"] == "finished"])
    assert len(finished) >= (n_jobs - len(doomed)) * 3 // 4, stats["status_counts"]
    # a backend job per attempt at most (a create that timed out may have happened anyway)
    titles = backend_titles(faulty_backend.connect(), prefix + "-")
    assert max(titles.values()) <= 2 * MAX_ATTEMPTS, titles

    assert output_tree_problems(tmp_path / "out") == []
    report = validate_catalog(manager.create_stac(), check_assets=True)
    assert report.ok and report.n_items == len(finished), report.messages()[:5]
    print(f"{len(injected)} request faults injected; {stats['status_counts']}; "
          f"error classes {jobs['error_class'].value_counts().to_dict()}")
    for key, row in jobs[jobs["status"] != "finished"].iterrows():
        print(f"  job {key} ({df.loc[int(key), 'job_options']}): {row['status']}, attempt {row['attempt']}, "
              f"{row['error_class']}: {row['error_message']}")
