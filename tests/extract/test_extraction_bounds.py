"""The extraction manager's download bound, end to end on the embedded backend."""

from __future__ import annotations

from eoextract.extract import ItemStore
from eoextract.jobs.db import get_job_db
from test_extraction_manager import create_datacube, job_dataframe, make_manager  # same folder, on sys.path


def test_a_file_beyond_max_asset_bytes_fails_its_job_once_and_leaves_nothing(local_backend, tmp_path):
    df = job_dataframe(2).head(1)
    out = tmp_path / "out"
    manager = make_manager(out, post_job_action=None, max_asset_bytes=1000, max_attempts=3)
    assert manager.max_asset_bytes == 1000
    manager.add_backend("local", local_backend.connect, parallel_jobs=1)
    stats = manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"error": 1}
    row = get_job_db(tmp_path / "jobs.db").read().loc["0"]
    assert row["error_class"] == "AssetRefused"
    assert "max_asset_bytes (1000 bytes)" in row["error_message"]
    assert row["attempt"] == 1  # refused, not retried: the backend would send the same again
    assert [p for p in out.rglob("*") if p.is_file() and p.suffix == ".nc"] == []
    assert not [p for p in out.rglob(".eoextract-dl-*") if p.is_file()]
    assert list(ItemStore(out).iter_items()) == []
