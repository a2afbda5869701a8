"""JobRecord as openeo's callbacks see it."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from eoextract.jobs.db import JobRecord
from eoextract.jobs.status import JobStatus


def test_as_series_holds_user_and_managed_columns_as_given():
    start = datetime(2025, 1, 2, tzinfo=UTC)
    rec = JobRecord(pk=1, job_key="k1", status=JobStatus.CREATING,
                    fields={"id": None, "backend_name": "a", "attempt": 2, "start_time": start},
                    row={"title": "t", "n": 3, "x": 1.5})
    row = rec.as_series(backend_name="b")
    assert row.name == "k1" and row.dtype == object
    assert list(row.index) == ["title", "n", "x", "id", "backend_name", "attempt", "start_time", "status"]
    assert row["backend_name"] == "b" and rec.as_series()["backend_name"] == "a"
    assert row["status"] == "creating" and row["id"] is None and row["start_time"] == start
    assert type(row["n"]) is int and row["x"] == 1.5
    pd.testing.assert_series_equal(rec.as_series(), pd.Series({**rec.row, **rec.fields, "status": "creating"},
                                                              name="k1"))


def test_rows_of_the_same_columns_share_one_index_and_stay_independent():
    a = JobRecord(pk=1, job_key="a", status=JobStatus.QUEUED, fields={"id": "j1"}, row={"title": "t1"})
    b = JobRecord(pk=2, job_key="b", status=JobStatus.QUEUED, fields={"id": "j2"}, row={"title": "t2"})
    row_a, row_b = a.as_series(), b.as_series()
    assert row_a.index is row_b.index  # built once per set of columns
    row_a["extra"] = 1  # a user's callback may add to its row ...
    row_b["title"] = "changed"  # ... or change it
    assert "extra" not in row_b.index and list(b.as_series().index) == ["title", "id", "status"]
    assert a.as_series()["title"] == "t1" and b.as_series()["title"] == "t2"
