"""A WorldCereal ``ExtractionJobManager`` script ported as the migration page shows: openeo's
own ``CsvJobDatabase`` object, ``run_jobs(start_job=, job_db=, status_callback=)``, the
``(root_dir, idx, row, asset_id)`` generator and the two-argument post-job action."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from openeo.extra.job_management import CsvJobDatabase

from eoextract import GFMAPJobManager, split_job_hex
from eoextract.errors import ConfigurationError
from tests.extract.instant_jobs import create_instant_job, instant_jobs, per_job_path


def test_openeo_csv_job_database_object_runs_an_extraction(local_backend, tmp_path):
    manager = GFMAPJobManager(poll_sleep=0.05, output_dir=tmp_path / "out",
                              output_path_generator=per_job_path, collection_id="WC-PORT",
                              post_job_action=lambda items, row: items, retry_backoff=0.05)
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    job_db = CsvJobDatabase(tmp_path / "tracking.csv").initialize_from_df(instant_jobs(2))
    seen: list[pd.DataFrame] = []
    stats = manager.run_jobs(start_job=create_instant_job, job_db=job_db, status_callback=seen.append)
    assert stats["status_counts"] == {"finished": 2}
    assert seen
    assert list(CsvJobDatabase(tmp_path / "tracking.csv").read()["status"]) == ["finished"] * 2
    assert manager.create_stac().is_file()


def test_an_empty_openeo_job_database_and_a_list_of_splits_are_clear_errors(local_backend, tmp_path):
    manager = GFMAPJobManager(tmp_path / "out", per_job_path, "WC-PORT", poll_sleep=0.05)
    manager.add_backend("local", local_backend.connect, parallel_jobs=1)
    empty = CsvJobDatabase(tmp_path / "empty.csv")
    with pytest.raises(ConfigurationError, match="no job database with jobs"):
        manager.run_jobs(start_job=create_instant_job, job_db=empty)
    import geopandas as gpd
    import shapely

    samples = gpd.GeoDataFrame({"sample_id": ["a", "b"]}, geometry=shapely.points([5.0, 5.1], [51.0, 51.0]),
                               crs=4326)
    with pytest.raises(ConfigurationError, match="one GeoDataFrame of samples per job"):
        manager.run_jobs(split_job_hex(samples), create_instant_job, tmp_path / "jobs.db")
    assert not Path(tmp_path / "jobs.db").exists()
