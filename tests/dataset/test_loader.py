"""The lazy patch dataset: right values, no pixel read before compute, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from tests.dataset.patch_catalogue import BANDS, make_extraction, write_patch

from eoextract.dataset import iter_patches, open_patches, split_by_epsg
from eoextract.errors import DatasetError
from eoextract.stac import iter_catalog_items


@pytest.fixture
def extraction(tmp_path) -> Path:
    root = tmp_path / "out"
    make_extraction(root)
    return root


def _data_path(item: dict) -> Path:
    return Path(item["assets"]["openEO"]["href"])


def test_patches_labels_and_coordinates(extraction):
    ds = open_patches(extraction, epsg=[32631], labels=["croptype", "ref_id", "sample_id"])
    assert dict(ds["patches"].sizes) == {"sample": 3, "t": 3, "band": 4, "y": 8, "x": 8}
    assert list(ds["band"].values) == list(BANDS)
    assert ds["patches"].dtype == np.uint16 and ds["patches"].attrs["nodata"] == 65535
    assert list(ds["croptype"].values) == ["wheat", "maize", "barley"]  # item properties
    assert set(ds["ref_id"].values) == {"2021_TEST"}  # attributes of the auxiliary files
    assert set(ds["epsg"].values) == {32631}
    items = {i["id"]: i for i in iter_catalog_items(extraction / "stac")}
    for n, sample in enumerate(ds["sample"].values):
        with xr.open_dataset(_data_path(items[str(sample)]), mask_and_scale=False) as f:
            for b, band in enumerate(BANDS):
                np.testing.assert_array_equal(ds["patches"][n, :, b].values, f[band].values)
            np.testing.assert_array_equal(ds["easting"][n].values, f["x"].values)
            np.testing.assert_array_equal(ds["time"][n].values, f["t"].values)
        assert (ds["LABEL"][n].values == n + 1).all()  # the auxiliary raster, lazily
        assert ds["sample_id"][n].item() == items[str(sample)]["properties"]["sample_id"]


def test_no_pixel_is_read_before_compute(extraction):
    ds = open_patches(extraction, epsg=[32632])
    assert ds["patches"].chunks is not None and ds["LABEL"].chunks is not None
    files = sorted({Path(str(p)) for p in extraction.rglob("S2_*.nc") if "32632" in str(p)})
    # new pixels under the same headers: compute must show them, so nothing was read before
    for k, path in enumerate(files):
        write_patch(path, 32632, 9.5 + 0.01 * k, 50.8, seed=100 + k)
    computed = ds["patches"].values
    for path in files:
        with xr.open_dataset(path, mask_and_scale=False) as f:
            fresh = f["B02"].values
        assert any((computed[n, :, 0] == fresh).all() for n in range(len(files)))
    # and with the files gone, only compute fails
    lazy = open_patches(extraction, epsg=[32632])
    for path in files:
        path.unlink()
    assert dict(lazy["patches"].sizes)["sample"] == 3
    with pytest.raises(OSError):
        lazy["patches"].compute()


def test_shorter_time_series_are_padded_with_nodata(tmp_path):
    root = tmp_path / "out"
    make_extraction(root, per_zone=2, zones=[(32631, 3.5, 50.8)], times={1: 2})
    ds = open_patches(root)
    assert ds.sizes["t"] == 3
    short = int(np.flatnonzero(np.isnat(ds["time"].values[:, -1]))[0])
    assert (ds["patches"][short, 2].values == 65535).all()
    assert (ds["patches"][short, :2].values != 65535).all()


def test_patches_of_different_sizes_or_crs_are_refused_naming_items(tmp_path, extraction):
    with pytest.raises(DatasetError, match="CRS .*EPSG:3263"):
        open_patches(extraction)
    mixed = open_patches(extraction, allow_mixed_crs=True)
    assert sorted(set(mixed["epsg"].values)) == [32631, 32632]
    root = tmp_path / "sizes"
    make_extraction(root, per_zone=2, zones=[(32631, 3.5, 50.8)], sizes={1: 6})
    with pytest.raises(DatasetError, match=r"size .*\(8, 8\).*\(6, 6\)"):
        open_patches(root)


def test_a_file_whose_crs_is_not_its_items(extraction):
    items = list(iter_catalog_items(extraction / "stac"))
    items[0]["properties"]["proj:code"] = "EPSG:32632"
    with pytest.raises(DatasetError, match=f"{_data_path(items[0]).name}.*{items[0]['id']}"):
        open_patches(items[:1])


def test_selection_by_property_and_date_and_from_geoparquet(extraction, tmp_path):
    ds = open_patches(extraction, properties={"croptype": ["wheat", "maize"]}, allow_mixed_crs=True)
    assert sorted(set(ds["collection"].values)) == ["S2-EXTRACTION"]
    assert ds.sizes["sample"] == 4
    with pytest.raises(DatasetError, match="no item"):
        open_patches(extraction, start="2022-01-01")
    split = split_by_epsg(extraction, tmp_path / "split")
    from_parquet = open_patches(split.geoparquet["S2-EXTRACTION-EPSG-32631"], labels=["croptype"])
    from_catalogue = open_patches(extraction, epsg=[32631], labels=["croptype"])
    assert sorted(from_parquet["sample"].values) == sorted(from_catalogue["sample"].values)
    a = from_parquet.sortby("sample")["patches"].values
    np.testing.assert_array_equal(a, from_catalogue.sortby("sample")["patches"].values)


def test_iterator_of_array_label_pairs(extraction):
    ds = open_patches(extraction, epsg=[32631], labels=["croptype"])
    pairs = list(iter_patches(ds, "croptype"))
    assert [label for _, label in pairs] == ["wheat", "maize", "barley"]
    assert all(array.shape == (3, 4, 8, 8) for array, _ in pairs)
    raster = next(iter_patches(ds, "LABEL"))[1]
    assert raster.shape == (8, 8)
    with pytest.raises(DatasetError, match="no label 'nope'"):
        next(iter_patches(ds, "nope"))


def test_labels_from_the_job_database(extraction, tmp_path):
    import pandas as pd

    from eoextract.jobs import create_job_db

    db = tmp_path / "jobs.db"
    create_job_db(db, pd.DataFrame({"region": ["be", "de"], "year": [2021, 2022]}))
    ds = open_patches(extraction, allow_mixed_crs=True, labels=["region", "year", "croptype"],
                      job_db=db)
    by_epsg = dict(zip(ds["epsg"].values.tolist(), ds["region"].values.tolist()))
    assert by_epsg == {32631: "be", 32632: "de"}
    assert sorted(set(ds["year"].values.tolist())) == [2021, 2022]
    assert ds["croptype"].values.tolist().count("wheat") == 2


def test_an_unreadable_patch_is_named(extraction):
    items = list(iter_catalog_items(extraction / "stac"))[:2]
    _data_path(items[1]).write_bytes(b"not a netcdf file")
    with pytest.raises(DatasetError, match=f"cannot read .*{_data_path(items[1]).name}.*{items[1]['id']}"):
        open_patches(items)


def test_reads_from_several_threads_agree(extraction):
    ds = open_patches(extraction, allow_mixed_crs=True)
    expected = ds["patches"].compute(scheduler="synchronous").values
    for _ in range(10):  # netCDF4/HDF5 are not thread-safe: reads are serialised, never torn
        got = ds["patches"].compute(scheduler="threads", num_workers=4).values
        np.testing.assert_array_equal(got, expected)
