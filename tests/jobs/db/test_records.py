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
