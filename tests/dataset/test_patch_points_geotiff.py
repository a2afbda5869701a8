"""Patch to point over GeoTIFF patches (one band per variable, dated by their item)."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

from eoextract.dataset import patches_to_points
from eoextract.errors import DatasetError

EPSG, LON, LAT = 32631, 3.5, 50.8


def _tiff_item(folder: Path, i: int, *, epsg: int = EPSG, item_epsg: int = EPSG,
               n: int = 8) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """A 3-band uint16 GeoTIFF patch and its item; returns the item, pixels, x and y."""
    x0, y0 = Transformer.from_crs(4326, epsg, always_xy=True).transform(LON + 0.01 * i, LAT)
    x0, y0 = round(x0 / 10) * 10, round(y0 / 10) * 10
    pixels = np.random.default_rng(i).integers(1, 10000, (3, n, n), dtype=np.uint16)
    path = folder / f"S2_{i}.tif"
    folder.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=3, dtype="uint16",
                       crs=f"EPSG:{epsg}", transform=from_origin(x0, y0, 10, 10),
                       nodata=65535) as dst:
        dst.write(pixels)
        dst.descriptions = ("B02", "B03", "B04")
    lon, lat = Transformer.from_crs(epsg, 4326, always_xy=True).transform(x0 + 5 * n, y0 - 5 * n)
    item = {"type": "Feature", "stac_version": "1.0.0", "id": f"tif-{i}",
            "geometry": shapely.geometry.mapping(shapely.Point(lon, lat)), "bbox": None,
            "properties": {"datetime": "2021-03-05T00:00:00Z", "sample_id": f"s{i}",
                           "proj:epsg": item_epsg},
            "assets": {"data": {"href": str(path), "type": "image/tiff; application=geotiff",
                                "roles": ["data"]}}, "links": []}
    return item, pixels, x0 + 5 + 10 * np.arange(n), y0 - 5 - 10 * np.arange(n)


def test_geotiff_patches_are_sampled_at_their_centre_pixel(tmp_path: Path) -> None:
    made = [_tiff_item(tmp_path / "tif", i) for i in range(3)]
    result = patches_to_points([m[0] for m in made], tmp_path / "points.parquet", how="centre",
                               processes=1)
    table = gpd.read_parquet(result.path).set_index("sample_id")
    assert (result.patches, result.rows, result.skipped) == (3, 3, 0)
    assert list(table.columns[:4]) == ["time", "B02", "B03", "B04"]
    assert (table["time"] == pd.Timestamp("2021-03-05", tz="UTC")).all()
    for i, (_, pixels, x, y) in enumerate(made):
        lon, lat = table.loc[f"s{i}", "geometry"].x, table.loc[f"s{i}", "geometry"].y
        px, py = Transformer.from_crs(4326, EPSG, always_xy=True).transform(lon, lat)
        row, col = int(np.argmin(abs(y - py))), int(np.argmin(abs(x - px)))
        assert [table.loc[f"s{i}", b] for b in ("B02", "B03", "B04")] == list(pixels[:, row, col])


def test_geotiff_mean_over_a_polygon(tmp_path: Path) -> None:
    item, pixels, x, y = _tiff_item(tmp_path / "tif", 0)
    box = shapely.box(x[1] - 3, y[3] - 3, x[2] + 3, y[1] + 3)  # pixel centres rows 1-3, cols 1-2
    to_wgs84 = Transformer.from_crs(EPSG, 4326, always_xy=True)
    geom = shapely.transform(box, lambda c: np.column_stack(to_wgs84.transform(c[:, 0], c[:, 1])))
    samples = gpd.GeoDataFrame({"sample_id": ["s0"]}, geometry=[geom], crs=4326)
    result = patches_to_points([item], tmp_path / "mean.parquet", how="mean", samples=samples,
                               processes=1)
    row = gpd.read_parquet(result.path).iloc[0]
    assert row["B03"] == pytest.approx(pixels[1, 1:4, 1:3].mean())


def test_geotiff_in_another_crs_than_its_item_names_the_file(tmp_path: Path) -> None:
    item, *_ = _tiff_item(tmp_path / "tif", 0, item_epsg=32632)
    with pytest.raises(DatasetError, match=r"S2_0\.tif is in EPSG:32631 but its item 'tif-0' "
                                           r"says EPSG:32632"):
        patches_to_points([item], tmp_path / "bad.parquet", processes=1)
    assert not (tmp_path / "bad.parquet").exists()


def test_sample_outside_its_geotiff_warns_with_file_and_sample(tmp_path: Path) -> None:
    inside, *_ = _tiff_item(tmp_path / "tif", 0)
    outside, *_ = _tiff_item(tmp_path / "tif", 1)
    outside["geometry"] = {"type": "Point", "coordinates": [LON + 1, LAT + 1]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = patches_to_points([inside, outside], tmp_path / "p.parquet", processes=1)
    assert result.skipped == 1 and result.rows == 1
    assert any("sample 's1' lies outside its patch" in str(w.message)
               and "S2_1.tif" in str(w.message) for w in caught)
