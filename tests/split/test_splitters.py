"""Job splitters: every row in exactly one group, groups within size, CRS kept."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, Polygon, box

from eoextract.errors import ConfigurationError
from eoextract.split import centroids_lonlat, s2_tile, split_job_hex, split_job_s2grid

DATA = Path(__file__).parents[1] / "data" / "wc_extraction_dataset.gpkg"


@pytest.fixture(scope="module")
def samples() -> gpd.GeoDataFrame:
    return gpd.read_file(DATA)


def _check_partition(gdf: gpd.GeoDataFrame, parts: list[gpd.GeoDataFrame], max_points: int):
    assert all(0 < len(p) <= max_points for p in parts)
    assert all(p.crs == gdf.crs for p in parts)
    rows = np.concatenate([p["_row"].to_numpy() for p in parts]) if parts else np.array([])
    assert sorted(rows.tolist()) == list(range(len(gdf)))  # nothing dropped or duplicated
    for p in parts:
        original = gdf.set_index("_row").loc[p["_row"]]
        assert list(p.geometry.to_wkb()) == list(original.geometry.to_wkb())


def _with_row(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    gdf = gdf.copy()
    gdf["_row"] = np.arange(len(gdf))
    return gdf


# --------------------------------------------------------------------------- real data


def test_hex_on_real_polygons(samples):
    gdf = _with_row(samples)
    parts = split_job_hex(gdf, max_points=60, grid_resolution=4)
    _check_partition(gdf, parts, 60)
    for p in parts:
        assert p["h3index"].nunique() == 1
        cell = p["h3index"].iloc[0]
        assert h3.get_resolution(cell) >= 4
        assert list(p.columns) == list(gdf.columns)  # h3index replaced, not duplicated
    assert pd.concat(parts).index.sort_values().tolist() == sorted(samples.index.tolist())


def test_hex_resplits_crowded_cells(samples):
    gdf = _with_row(samples)
    parts = split_job_hex(gdf, max_points=25, grid_resolution=2)
    _check_partition(gdf, parts, 25)
    resolutions = {h3.get_resolution(c) for p in parts for c in p["h3index"]}
    assert min(resolutions) >= 2 and max(resolutions) > 2
    coarse = split_job_hex(gdf, max_points=10_000, grid_resolution=2)
    assert len(parts) > len(coarse)


def test_s2grid_on_real_polygons(samples):
    gdf = _with_row(samples)
    parts = split_job_s2grid(gdf, max_points=40)
    _check_partition(gdf, parts, 40)
    for p in parts:
        assert p["tile"].nunique() == 1
        tile, epsg = p["tile"].iloc[0], int(p["epsg"].iloc[0])
        assert len(tile) == 5 and epsg == 32600 + int(tile[:2])
    tiles = {p["tile"].iloc[0] for p in parts}
    assert len(tiles) > 5
    assert {32631, 32632, 32633, 32634, 32635} & {int(p["epsg"].iloc[0]) for p in parts}


def test_projected_input_keeps_crs_and_matches(samples):
    utm = _with_row(samples.to_crs(32631))
    parts = split_job_s2grid(utm, max_points=500)
    _check_partition(utm, parts, 500)
    by_row_utm = {r: p["tile"].iloc[0] for p in parts for r in p["_row"]}
    parts_ll = split_job_s2grid(_with_row(samples), max_points=500)
    by_row_ll = {r: p["tile"].iloc[0] for p in parts_ll for r in p["_row"]}
    same = sum(by_row_utm[r] == by_row_ll[r] for r in by_row_ll)
    assert same >= 0.98 * len(samples)  # centroids differ only by the projection used


def test_s2_tile_examples():
    assert s2_tile(51.0, 4.0) == ("31UES", 32631)
    assert s2_tile(-45.0, 170.0) == ("59GML", 32759)
    assert s2_tile(50.0, -177.0) == ("01UER", 32601)
    assert s2_tile(0.0, 180.0) == s2_tile(0.0, -180.0)
    assert s2_tile(90.0, 0.0)[1] == 32661
    assert s2_tile(-90.0, 0.0)[1] == 32761
    assert s2_tile(51.0, 364.0) == s2_tile(51.0, 4.0)


# --------------------------------------------------------------------------- bad input


def test_requires_crs():
    gdf = gpd.GeoDataFrame({"a": [1]}, geometry=[Point(0, 0)])
    with pytest.raises(ConfigurationError, match="CRS"):
        split_job_hex(gdf)
    with pytest.raises(ConfigurationError, match="CRS"):
        split_job_s2grid(gdf)
    with pytest.raises(ConfigurationError):
        split_job_hex(gdf.set_crs(4326), max_points=0)
    with pytest.raises(ConfigurationError):
        split_job_hex(gdf.set_crs(4326), grid_resolution=16)


def test_empty_and_missing_geometries():
    empty = gpd.GeoDataFrame({"a": []}, geometry=[], crs=4326)
    assert split_job_hex(empty) == [] and split_job_s2grid(empty) == []
    gdf = _with_row(
        gpd.GeoDataFrame(
            {"a": range(5)},
            geometry=[Point(4, 51), None, Polygon(), Point(4.001, 51.001), Point(200, 100)],
            crs=4326,
        )
    )
    for parts in (split_job_hex(gdf, max_points=1), split_job_s2grid(gdf, max_points=2)):
        _check_partition(gdf, parts, 2)
    groups = split_job_s2grid(gdf, max_points=10)
    # no geometry, an empty one, and one outside the valid latitudes: kept, tile None
    assert groups[-1]["tile"].isna().all() and len(groups[-1]) == 3
    assert groups[0]["tile"].iloc[0] == "31UES"


def test_identical_points_beyond_finest_resolution():
    gdf = _with_row(gpd.GeoDataFrame(geometry=[Point(4, 51)] * 23, crs=4326))
    parts = split_job_hex(gdf, max_points=5, grid_resolution=13)
    _check_partition(gdf, parts, 5)
    assert len(parts) == 5


def test_antimeridian_polygon_centroid():
    crossing = Polygon([(179.5, 10), (180, 10), (180, 11), (179.5, 11)]).union(
        Polygon([(-180, 10), (-179.5, 10), (-179.5, 11), (-180, 11)])
    )
    gdf = gpd.GeoDataFrame(geometry=[crossing, box(10, 89.5, 11, 90)], crs=4326)
    lon, lat = centroids_lonlat(gdf)
    assert abs(abs(lon[0]) - 180.0) < 0.01 and abs(lat[0] - 10.5) < 0.01
    assert 89.5 < lat[1] <= 90.0


# --------------------------------------------------------------------------- properties

lats = st.one_of(st.floats(-90, 90), st.sampled_from([-90.0, 90.0, 0.0, 84.0, -80.0, 83.99]))
lons = st.one_of(st.floats(-180, 180), st.sampled_from([-180.0, 180.0, 0.0, 179.9999, -179.9999]))


@st.composite
def geometries(draw):
    lat, lon = draw(lats), draw(lons)
    kind = draw(st.sampled_from(["point", "box", "crossing"]))
    if kind == "point":
        return Point(lon, lat)
    size = draw(st.floats(1e-4, 2.0))
    south, north = max(-90.0, lat - size), min(90.0, lat + size)
    if kind == "box" or north <= south:
        west, east = max(-180.0, lon - size), min(180.0, lon + size)
        if east <= west or north <= south:
            return Point(lon, lat)
        return box(west, south, east, north)
    # a polygon written across the antimeridian (longitudes from ~179 to ~-179)
    return Polygon(
        [(180 - size, south), (-180 + size, south), (-180 + size, north), (180 - size, north)]
    )


frames = st.lists(geometries(), min_size=0, max_size=60).map(
    lambda geoms: _with_row(gpd.GeoDataFrame(geometry=geoms, crs=4326))
)
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(gdf=frames, max_points=st.integers(1, 20), resolution=st.integers(0, 6))
def test_hex_partitions_worldwide(gdf, max_points, resolution):
    parts = split_job_hex(gdf, max_points=max_points, grid_resolution=resolution)
    _check_partition(gdf, parts, max_points)
    for p in parts:
        assert p["h3index"].nunique(dropna=False) == 1


@SETTINGS
@given(gdf=frames, max_points=st.integers(1, 20), crs=st.sampled_from([4326, 3857, 32631]))
def test_s2grid_partitions_worldwide(gdf, max_points, crs):
    if crs != 4326:
        gdf = gdf.to_crs(crs)  # out-of-domain geometries become inf: kept, tile None
    parts = split_job_s2grid(gdf, max_points=max_points)
    _check_partition(gdf, parts, max_points)
    for p in parts:
        assert p["tile"].nunique(dropna=False) == 1
        assert p["epsg"].nunique(dropna=False) == 1
