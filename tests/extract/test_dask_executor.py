"""Post-job actions on a Dask cluster of worker processes (``executor=distributed.Client``)."""

from __future__ import annotations

import os

import pytest

distributed = pytest.importorskip("distributed")

from test_extraction_manager import (  # noqa: E402  (same folder, on sys.path under pytest)
    create_datacube,
    job_dataframe,
    make_manager,
    post_job_action,
)

from eoextract.extract import ItemStore  # noqa: E402
from eoextract.jobs.db import get_job_db  # noqa: E402


def action_on_worker(job_items, row, parameters):
    """The seed-like post-job action, recording which process ran it."""
    items = post_job_action(job_items, row, parameters)
    for item in items:
        item.properties["test:pid"] = os.getpid()
        item.properties["test:param"] = parameters["tag"]
    return items


def failing_on_worker(job_items, row, parameters):
    raise RuntimeError(f"worker failure for {row.title}")


@pytest.fixture(scope="module")
def dask_client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
def test_post_job_actions_run_on_dask_workers(local_backend, dask_client, tmp_path):
    manager = make_manager(tmp_path / "out", post_job_action=action_on_worker, executor=dask_client,
                           post_job_params={"tag": "from-manager"})
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    df = job_dataframe()
    stats = manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": len(df)}
    items = list(ItemStore(tmp_path / "out").iter_items())
    assert items
    worker_pids = set(dask_client.run(os.getpid).values())
    assert {i["properties"]["test:pid"] for i in items} <= worker_pids
    assert os.getpid() not in {i["properties"]["test:pid"] for i in items}
    assert {i["properties"]["test:param"] for i in items} == {"from-manager"}
    # files rewritten on the workers are described as they are now
    for item in items:
        assert "auxiliary" in item["assets"]


@pytest.mark.slow
def test_errors_on_dask_workers_come_back_to_the_manager(local_backend, dask_client, tmp_path):
    manager = make_manager(tmp_path / "out", post_job_action=failing_on_worker, executor=dask_client,
                           max_attempts=1)
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    df = job_dataframe()
    stats = manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"error": len(df)}
    db = get_job_db(tmp_path / "jobs.db")
    messages = set(db.read()["error_message"])
    assert all("worker failure" in m for m in messages)
