"""Samples already extracted, looked up in a catalogue on disk or a stac-geoparquet file."""

from __future__ import annotations

import pandas as pd
import pytest

from publish_fixtures import make_output

from eoextract.errors import StacError
from eoextract.stac import drop_existing, existing_values


@pytest.fixture()
def catalogue(tmp_path):
    make_output(tmp_path / "out", n_jobs=3, items_per_job=2)  # sample ids job-000_000 ... job-002_001
    return tmp_path / "out"


def test_values_of_a_catalogue_on_disk(catalogue):
    found = existing_values(catalogue, "sample_id")
    assert len(found) == 6 and "job-002_001" in found
    assert existing_values(catalogue, "sample_id", among=["job-000_000", "new"]) == {"job-000_000"}
    assert existing_values(catalogue, "no_such_property") == set()


def test_values_of_a_stac_geoparquet_file(catalogue, tmp_path):
    pytest.importorskip("stac_geoparquet")
    from eoextract.stac.publish import export_geoparquet

    path = tmp_path / "items.parquet"
    export_geoparquet(catalogue, path)
    assert existing_values(path, "sample_id") == existing_values(catalogue, "sample_id")
    with pytest.raises(StacError, match="no column 'ref_id'"):
        existing_values(path, "ref_id")


def test_drop_existing_keeps_only_new_samples(catalogue):
    samples = pd.DataFrame({"sample_id": ["job-000_000", "job-001_001", "fresh-1", "fresh-2"],
                            "crop": [1, 2, 3, 4]})
    left = drop_existing(samples, catalogue, "sample_id")
    assert list(left["sample_id"]) == ["fresh-1", "fresh-2"] and list(left["crop"]) == [3, 4]
    with pytest.raises(StacError, match="no column 'id'"):
        drop_existing(samples, catalogue, "sample_id", column="id")


def test_bad_sources(tmp_path):
    with pytest.raises(StacError, match="no catalogue"):
        existing_values(tmp_path / "missing", "sample_id")
    with pytest.raises(StacError, match="among="):
        existing_values("http://127.0.0.1:9/", "sample_id")
