"""The Sentinel-2 production grid: tiles cover the AOI, never overlap (exactly within a UTM
zone, within a tolerance across zones), keep the AOI's CRS, small edge tiles are merged, the
grid is kept beside the job database and reused."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from eoextract.errors import ConfigurationError
from eoextract.split import Sentinel2Grid, s2_tile, split_area


def _utm_geoms(tiles: gpd.GeoDataFrame, epsg: int) -> np.ndarray:
    return np.asarray(tiles.loc[tiles["epsg"] == epsg].geometry.to_crs(epsg).array)


def _check_grid(tiles: gpd.GeoDataFrame, aoi_ll, grid: Sentinel2Grid) -> None:
    assert tiles.crs.to_epsg() == 4326
    assert tiles["tile_id"].is_unique
    geoms = np.asarray(tiles.geometry.array)
    union = shapely.union_all(geoms)
    # cover: what is left of the AOI is reprojection noise
    assert aoi_ll.difference(union).area <= 1e-6 * aoi_ll.area
    # across zones, overlaps stay within the reprojection tolerance
    assert shapely.area(geoms).sum() - union.area <= 1e-6 * union.area
    for epsg in tiles["epsg"].unique():
        utm = _utm_geoms(tiles, int(epsg))
        # within one zone the tiles are a partition of the plane
        merged = shapely.union_all(utm)
        assert shapely.area(utm).sum() - merged.area <= 1e-6 * merged.area
        part = tiles.loc[tiles["epsg"] == epsg]
        b = part[["west", "south", "east", "north"]].to_numpy()
        assert np.allclose(b / grid.resolution, np.round(b / grid.resolution))
        bounds = np.array([g.bounds for g in utm])
        assert np.all(b[:, :2] <= bounds[:, :2] + 1e-6) and np.all(b[:, 2:] >= bounds[:, 2:] - 1e-6)
        for tile_id, mgrs_tile in zip(part["tile_id"], part["mgrs_tile"]):
            assert tile_id.startswith(mgrs_tile + "_") and int(mgrs_tile[:2]) == int(epsg) % 100
    assert all(shapely.intersects(geoms, aoi_ll))


@st.composite
def _lonlat_boxes(draw):
    """Boxes anywhere in the UTM latitudes, often on zone borders, Norway, the antimeridian."""
    lon = draw(st.one_of(st.floats(-180, 179.9), st.sampled_from([5.7, 2.6, 8.8, 179.5, -0.2])))
    lat = draw(st.one_of(st.floats(-79, 82), st.sampled_from([59.5, 63.7, 0.0, -0.3, 78.0])))
    w = draw(st.floats(0.05, 1.2))
    h = draw(st.floats(0.05, 1.0))
    return lon, lat, w, min(h, 83.9 - lat)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_lonlat_boxes(), st.sampled_from([20_000.0, 30_000.0]))
def test_grid_covers_never_overlaps_keeps_crs(spec, size):
    lon, lat, w, h = spec
    east = lon + w if lon + w <= 180 else lon + w - 360
    aoi = {"west": lon, "south": lat, "east": east, "north": lat + h, "crs": 4326}
    grid = Sentinel2Grid(size)
    tiles = split_area(aoi, tile_grid=grid)
    aoi_ll = shapely.union_all([box(lon, lat, min(lon + w, 180), lat + h),
                                box(-180, lat, lon + w - 360, lat + h)]) if lon + w > 180 \
        else box(lon, lat, lon + w, lat + h)
    _check_grid(tiles, aoi_ll, grid)


def test_zone_border_slivers_are_merged():
    grid = Sentinel2Grid(20_000, min_fraction=0.25)
    tiles = split_area({"west": 5.5, "south": 44.0, "east": 6.5, "north": 52.0, "crs": 4326}, tile_grid=grid)
    assert set(tiles["epsg"]) == {32631, 32632}
    for epsg in (32631, 32632):
        areas = shapely.area(_utm_geoms(tiles, epsg))
        # every tile is at least a quarter of a full one (slivers went to a neighbour) ...
        assert areas.min() >= 0.25 * 20_000**2
    unmerged = split_area({"west": 5.5, "south": 44.0, "east": 6.5, "north": 52.0, "crs": 4326},
                          tile_grid=Sentinel2Grid(20_000, min_fraction=0.0))
    assert len(unmerged) > len(tiles)
    assert min(shapely.area(_utm_geoms(unmerged, e)).min() for e in (32631, 32632)) < 0.25 * 20_000**2
    for epsg in (32631, 32632):  # merged tiles hold the unmerged ones of their zone (and more)
        before = shapely.union_all(_utm_geoms(unmerged, epsg))
        after = shapely.union_all(_utm_geoms(tiles, epsg))
        assert before.difference(after).area <= 1e-9 * before.area < after.area


def test_uneven_tile_size_merges_the_narrow_last_column_of_each_square():
    tiles = split_area(gpd.GeoSeries([box(410_000, 5_610_000, 590_000, 5_690_000)], crs=32631),
                       tile_grid=Sentinel2Grid(30_000, min_fraction=0.4))
    assert tiles.crs.to_epsg() == 32631  # a projected AOI keeps its CRS too
    widths = tiles["east"] - tiles["west"]
    assert set(widths) == {30_000.0, 40_000.0}  # 100 km = 30 + 30 + 40 (the 10 km rest merged)
    assert (tiles["west"] % 100_000).isin([0.0, 30_000.0, 60_000.0]).all()


def test_tile_ids_name_the_sentinel2_tile():
    tiles = split_area({"west": 4.35, "south": 50.84, "east": 4.36, "north": 50.85, "crs": 4326},
                       tile_grid=Sentinel2Grid(10_000))
    assert len(tiles) == 1
    tile, epsg = s2_tile(50.845, 4.355)
    assert tiles["mgrs_tile"].iloc[0] == tile and tiles["epsg"].iloc[0] == epsg == 32631
    assert tiles["tile_id"].iloc[0].startswith(tile + "_") and len(tiles["tile_id"].iloc[0]) == 10


def test_norway_exception_comes_from_mgrs():
    tiles = split_area({"west": 3.5, "south": 60.0, "east": 4.5, "north": 60.3, "crs": 4326},
                       tile_grid=Sentinel2Grid(20_000))
    assert set(tiles["epsg"]) == {32632}  # zone 32V reaches west to 3°E


def test_antimeridian_area_in_both_zones():
    tiles = split_area({"west": 179.6, "south": -17.0, "east": -179.6, "north": -16.6, "crs": 4326},
                       tile_grid=Sentinel2Grid(20_000))
    assert set(tiles["epsg"]) == {32760, 32701}
    assert tiles.total_bounds[0] == -180.0 and tiles.total_bounds[2] == 180.0


# --------------------------------------------------------------------------- persistence


def test_grid_is_kept_beside_the_job_database_and_reused(tmp_path):
    aoi = {"west": 4.0, "south": 50.5, "east": 4.6, "north": 50.9, "crs": 4326}
    grid = Sentinel2Grid.beside(tmp_path / "jobs.csv", 20_000)
    assert grid.path == tmp_path / "jobs.grid.parquet"
    first = split_area(aoi, tile_grid=grid)
    assert grid.path.exists() and b"eoextract:grid" in pq.read_schema(grid.path).metadata
    mtime = grid.path.stat().st_mtime_ns

    resumed = Sentinel2Grid.beside(tmp_path / "jobs.csv", 20_000)
    resumed._compute = None  # a resumed run must not compute the grid again
    again = split_area(aoi, tile_grid=resumed)
    assert grid.path.stat().st_mtime_ns == mtime
    assert again.crs == first.crs
    assert again.drop(columns="geometry").equals(first.drop(columns="geometry"))
    assert all(a.equals_exact(b, 1e-9) for a, b in zip(again.geometry, first.geometry))

    with pytest.raises(ConfigurationError, match="another area of interest"):
        split_area({**aoi, "east": 4.7}, tile_grid=Sentinel2Grid.beside(tmp_path / "jobs.csv", 20_000))
    with pytest.raises(ConfigurationError, match="other settings"):
        split_area(aoi, tile_grid=Sentinel2Grid.beside(tmp_path / "jobs.csv", 10_000))


def test_beside_sqlite_url_and_refuses_other_urls(tmp_path):
    assert Sentinel2Grid.beside(f"sqlite:///{tmp_path}/run.db").path == tmp_path / "run.grid.parquet"
    with pytest.raises(ConfigurationError, match="not a file"):
        Sentinel2Grid.beside("postgresql://db/jobs")


# --------------------------------------------------------------------------- bad input


def test_aoi_without_crs_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="no CRS.*Sentinel-2 grid"):
        split_area(Polygon([(4, 50), (5, 50), (5, 51)]), tile_grid=Sentinel2Grid())
    with pytest.raises(ConfigurationError, match="no CRS"):
        split_area(gpd.GeoSeries([box(4, 50, 5, 51)]), tile_grid=Sentinel2Grid())
    # with crs= the same polygon works
    assert len(split_area(Polygon([(4, 50), (5, 50), (5, 51)]), tile_grid=Sentinel2Grid(), crs=4326)) > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"tile_size": 150_000}, "100000"),
    ({"tile_size": 20_005}, "whole number of pixels"),
    ({"min_fraction": 1.5}, "min_fraction"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        Sentinel2Grid(**kwargs)


def test_polar_areas_are_refused():
    with pytest.raises(ConfigurationError, match="80°S to 84°N"):
        split_area({"west": 0, "south": 84.5, "east": 10, "north": 85, "crs": 4326}, tile_grid=Sentinel2Grid())
