"""``JobDatabase.update`` sets the user's own columns (existing or new) beside managed ones."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from eoextract.errors import JobError
from eoextract.jobs.db import create_job_db, get_job_db


@pytest.fixture(params=["jobs.db", "jobs.csv", "jobs.parquet"])
def db_path(request, tmp_path):
    return tmp_path / request.param


def jobs() -> pd.DataFrame:
    return pd.DataFrame({
        "product_id": ["S2A_1", "S2B_2", "S2A_3"],
        "tile": ["31UFS", "31UGS", "32ULB"],
        "n": [1, 2, 3],
        "sensed": pd.to_datetime(["2024-05-01T10:00Z", "2024-05-02T10:00Z", "2024-05-03T10:00Z"]),
    })


def test_user_fields_new_and_existing(db_path):
    db = create_job_db(db_path, jobs())
    before = db.get("1").fields["updated_at"]
    db.update("1", output_path="s3://bucket/out/S2B_2", n="7", sensed="2024-06-01T12:00:00",
              output_dir="/data/out/31UGS")
    db.close()
    again = get_job_db(db_path)
    df = again.read()
    assert df.loc["1", "output_path"] == "s3://bucket/out/S2B_2"
    assert pd.isna(df.loc["0", "output_path"]) and pd.isna(df.loc["2", "output_path"])
    assert df.loc["1", "n"] == 7 and df["n"].tolist() == [1, 7, 3]
    assert df.loc["1", "sensed"] == pd.Timestamp("2024-06-01T12:00:00Z")
    assert df.loc["1", "output_dir"] == "/data/out/31UGS"
    assert df.loc["1", "product_id"] == "S2B_2" and df.loc["0", "product_id"] == "S2A_1"
    rec = again.get("1")
    assert rec.row["output_path"] == "s3://bucket/out/S2B_2" and rec.fields["updated_at"] >= before
    assert rec.status == "not_started"
    # a later value replaces the earlier one; None clears it
    again.update("1", output_path=None, reprocessed=True)
    again.close()
    rec = get_job_db(db_path).get("1")
    assert rec.row["output_path"] is None or pd.isna(rec.row["output_path"])
    assert bool(rec.row["reprocessed"]) is True


def test_what_update_refuses(db_path):
    db = create_job_db(db_path, jobs(), key_column="product_id")
    with pytest.raises(ValueError, match="key does not change"):
        db.update("S2A_1", product_id="other")
    with pytest.raises(ValueError, match="key does not change"):
        db.update("S2A_1", eoextract_status="finished")
    with pytest.raises(ValueError, match="transition"):
        db.update("S2A_1", status="finished")
    with pytest.raises(JobError):
        db.update("nope", output_path="x")
    with pytest.raises(ValueError):
        db.update("S2A_1", n="seven")
    db.close()
    assert sorted(get_job_db(db_path).read().index) == ["S2A_1", "S2A_3", "S2B_2"]
    assert "output_path" not in get_job_db(db_path).read().columns


def test_a_date_column_takes_text(tmp_path):
    df = jobs().assign(day=[dt.date(2024, 5, i) for i in (1, 2, 3)])
    db = create_job_db(tmp_path / "jobs.db", df)
    db.update("0", day="2024-07-01")
    assert get_job_db(tmp_path / "jobs.db").get("0").row["day"] == dt.date(2024, 7, 1)
