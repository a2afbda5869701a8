"""Unpinning waiting jobs from backends that are not registered (the manager does it at start)."""

from __future__ import annotations

import pandas as pd
import pytest

from eoextract.jobs.db import create_job_db
from eoextract.jobs.status import JobStatus


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.pg), "csv"])
def location(request, tmp_path):
    if request.param == "pg":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / ("jobs.db" if request.param == "sqlite" else "jobs.csv"))


def test_only_waiting_jobs_of_unknown_backends_are_unpinned(location):
    df = pd.DataFrame({"n": range(6), "backend_name": ["gone", "b", None, "gone", "other", ""]})
    db = create_job_db(location, df)
    db.transition("3", JobStatus.CREATING, backend_name="gone")  # in flight: left alone

    assert db.unpin_unknown_backends(["b"]) == {"0": "gone", "4": "other"}
    assert {r.job_key: r.backend_name for r in db.jobs()} == {
        "0": None, "1": "b", "2": None, "3": "gone", "4": None, "5": None}
    assert [h.new for h in db.history("0")] == [JobStatus.NOT_STARTED]  # no status change
    assert db.unpin_unknown_backends(["b"]) == {}
    assert db.unpin_unknown_backends([]) == {"1": "b"}
    db.close()
