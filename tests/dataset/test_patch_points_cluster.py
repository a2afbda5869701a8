"""Patch to point on a Dask cluster (a client, or the scheduler's address)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from eoextract.dataset import patches_to_points
from eoextract.errors import DatasetError
from tests.dataset.patch_catalogue import make_extraction

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as local:
        yield local


@pytest.fixture
def extraction(tmp_path: Path) -> Path:
    make_extraction(tmp_path / "ex", per_zone=2)
    return tmp_path / "ex"


def test_a_client_gives_the_same_table_as_this_process(extraction, tmp_path, cluster):
    here = pd.read_parquet(patches_to_points(extraction, tmp_path / "1.parquet", how="all",
                                             labels=("LABEL",), processes=1).path)
    with distributed.Client(cluster) as client:
        result = patches_to_points(extraction, tmp_path / "2.parquet", how="all",
                                   labels=("LABEL",), client=client)
    pd.testing.assert_frame_equal(here, pd.read_parquet(result.path))
    assert result.patches == 4 and result.rows == 4 * 64 * 3


def test_a_scheduler_address_is_connected_to(extraction, tmp_path, cluster):
    result = patches_to_points(extraction, tmp_path / "a.parquet", how="centre",
                               client=cluster.scheduler_address)
    assert result.rows == 4 * 3 and len(pd.read_parquet(result.path)) == 12


def test_an_unreadable_patch_on_the_cluster_is_named(extraction, tmp_path, cluster):
    next(extraction.rglob("S2_sample-001.nc")).write_bytes(b"not a netcdf file")
    with distributed.Client(cluster) as client, \
            pytest.raises(DatasetError, match=r"S2_sample-001\.nc.*item"):
        patches_to_points(extraction, tmp_path / "u.parquet", client=client)
    assert not (tmp_path / "u.parquet").exists() and not list(tmp_path.glob(".u.parquet*"))
