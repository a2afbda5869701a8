"""split_area: openeo's behaviour where it has one; tiles cover the AOI, never overlap, keep
the CRS; pixel-aligned tiles; the antimeridian; clear errors."""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

import eoextract
from eoextract.errors import ConfigurationError
from eoextract.split import split_area


def _check_partition(tiles: gpd.GeoDataFrame, aoi, rel: float = 1e-9) -> None:
    """The tiles cover ``aoi`` (a geometry in the tiles' CRS) and do not overlap."""
    geoms = np.asarray(tiles.geometry.array)  # plain shapely: areas in the CRS's own unit
    union = shapely.union_all(geoms)
    assert aoi.difference(union).area <= rel * aoi.area
    assert shapely.area(geoms).sum() - union.area <= rel * union.area
    if rel < 1e-6:  # same CRS: no tile only touches the AOI
        assert all(shapely.area(shapely.intersection(geoms, aoi)) > 0)


# --------------------------------------------------------------------------- openeo's behaviour


@pytest.mark.parametrize("aoi, projection, size", [
    ({"west": 0.0, "south": 0.0, "east": 10.0, "north": 5.0, "crs": 4326}, "EPSG:4326", 3.0),
    ({"west": 600_000, "south": 5_600_000, "east": 652_000, "north": 5_631_000, "crs": "EPSG:32631"},
     "EPSG:32631", 20_000),
    (box(1000, 2000, 9000, 5000), "EPSG:3857", 2000),
])
def test_same_tiles_as_openeo(aoi, projection, size):
    from openeo.extra.job_management import split_area as openeo_split_area

    ours = split_area(aoi, projection=projection, tile_size=size)
    theirs = openeo_split_area(aoi, projection=projection, tile_size=size)
    assert ours.crs == theirs.crs
    assert sorted(g.wkt for g in ours.geometry.normalize()) == sorted(g.wkt for g in theirs.geometry.normalize())


def test_top_level_name_and_openeo_keywords():
    assert eoextract.split_area is split_area
    tiles = eoextract.split_area({"west": 0, "south": 0, "east": 4, "north": 4, "crs": 4326},
                                 tile_grid=gpd.GeoDataFrame(geometry=[box(0, 0, 2, 2), box(10, 10, 12, 12)],
                                                            crs=4326))
    assert len(tiles) == 1 and tiles.crs.to_epsg() == 4326


def test_predefined_grid_reprojects_the_aoi():
    grid = gpd.GeoDataFrame({"name": ["a", "b", "c"]},
                            geometry=[box(0, 0, 1, 1), box(1, 0, 2, 1), box(5, 5, 6, 6)], crs=4326)
    aoi = gpd.GeoSeries([box(0.5, 0.5, 1.5, 0.9)], crs=4326).to_crs(3857)
    tiles = split_area(aoi, tile_grid=grid)
    assert list(tiles["name"]) == ["a", "b"] and tiles.crs == grid.crs


# --------------------------------------------------------------------------- properties

_sizes = st.sampled_from([1_000.0, 2_500.0, 7_000.0, 20_000.0])


@st.composite
def _polygons(draw):
    """Polygons in UTM 31N around Belgium: boxes, triangles, MultiPolygons."""
    x = draw(st.floats(400_000, 700_000))
    y = draw(st.floats(5_500_000, 5_800_000))
    w = draw(st.floats(100, 60_000))
    h = draw(st.floats(100, 60_000))
    kind = draw(st.sampled_from(["box", "triangle", "multi"]))
    if kind == "box":
        return box(x, y, x + w, y + h)
    if kind == "triangle":
        return Polygon([(x, y), (x + w, y), (x + w / 3, y + h)])
    dx = draw(st.floats(-w, 2 * w))
    return MultiPolygon([box(x, y, x + w, y + h), box(x + dx, y + h / 2, x + dx + w, y + 1.5 * h)]).buffer(0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_polygons(), _sizes, st.sampled_from([None, 10.0, 20.0]), st.sampled_from([(0.0, 0.0), (5.0, -5.0)]))
def test_tiles_cover_never_overlap_keep_crs(aoi, size, resolution, origin):
    tiles = split_area(gpd.GeoSeries([aoi], crs=32631), tile_size=size, resolution=resolution, origin=origin)
    assert tiles.crs.to_epsg() == 32631  # no projection: the AOI's CRS is kept
    _check_partition(tiles, aoi)
    if resolution is not None:
        b = tiles.bounds.to_numpy()
        offsets = (b - np.array([origin[0], origin[1], origin[0], origin[1]])) / resolution
        assert np.allclose(offsets, np.round(offsets), atol=1e-6)  # every edge on the pixel grid
        assert np.all(b[:, 2] - b[:, 0] <= size + 1e-6)


@settings(max_examples=30, deadline=None)
@given(_polygons(), st.sampled_from(["EPSG:3035", "EPSG:32632", "EPSG:3857"]))
def test_tiles_in_another_projection_cover_the_reprojected_aoi(aoi, projection):
    tiles = split_area(gpd.GeoSeries([aoi], crs=32631), projection=projection, tile_size=5_000)
    assert tiles.crs == gpd.GeoSeries([], crs=projection).crs
    _check_partition(tiles, gpd.GeoSeries([aoi], crs=32631).to_crs(projection).iloc[0], rel=1e-4)


def test_pixel_alignment_moves_tile_edges_onto_the_grid():
    aoi = {"west": 600_003.0, "south": 5_600_007.0, "east": 620_005.0, "north": 5_611_111.0, "crs": 32631}
    plain = split_area(aoi, projection=32631, tile_size=5_000)
    assert plain.total_bounds[0] == 600_003.0  # openeo anchors at the AOI corner
    aligned = split_area(aoi, projection=32631, tile_size=5_000, resolution=20, origin=(0, 0))
    assert list(aligned.total_bounds) == [600_000.0, 5_600_000.0, 620_020.0, 5_611_120.0]
    with pytest.raises(ConfigurationError, match="whole number of pixels"):
        split_area(aoi, projection=32631, tile_size=5_005, resolution=20)


# --------------------------------------------------------------------------- antimeridian


@pytest.mark.parametrize("aoi", [
    {"west": 170.0, "south": -20.0, "east": -170.0, "north": -10.0, "crs": 4326},
    box(170.0, -20.0, 190.0, -10.0),
    Polygon([(170, -20), (-170, -20), (-170, -10), (170, -10)]),
])
def test_antimeridian_areas_are_tiled_on_both_sides(aoi):
    tiles = split_area(aoi, projection=4326, tile_size=5.0, crs=None if isinstance(aoi, dict) else 4326)
    west, east = box(170, -20, 180, -10), box(-180, -20, -170, -10)
    _check_partition(tiles, west.union(east))
    assert tiles.total_bounds.tolist() == [-180.0, -20.0, 180.0, -10.0]
    assert len(tiles) == 8


def test_antimeridian_area_in_a_projected_grid_is_one_piece():
    aoi = {"west": 178.0, "south": -10.0, "east": -178.0, "north": -5.0, "crs": 4326}
    tiles = split_area(aoi, projection="EPSG:32760", tile_size=50_000)
    merged = tiles.union_all()
    assert merged.geom_type == "Polygon"
    target = gpd.GeoSeries([box(178, -10, 182, -5)], crs=4326).to_crs(32760).iloc[0]
    assert target.difference(merged).area <= 1e-4 * target.area


# --------------------------------------------------------------------------- bad input


def test_aoi_without_crs_where_one_is_needed_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="no CRS.*no projection"):
        split_area(box(0, 0, 1, 1), tile_size=0.5)
    with pytest.raises(ConfigurationError, match="antimeridian"):
        split_area({"west": 170, "south": 0, "east": -170, "north": 1}, projection=4326, tile_size=1)


def test_bare_polygon_with_projection_is_taken_in_that_projection(caplog):
    with caplog.at_level(logging.WARNING, logger="eoextract.split"):
        tiles = split_area(box(0, 0, 10, 10), projection=3857, tile_size=5)
    assert len(tiles) == 4 and "no CRS" in caplog.text


@pytest.mark.parametrize("kwargs, message", [
    ({"tile_size": 1.0, "tile_grid": gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=4326)}, "cannot be combined"),
    ({"projection": 4326}, "tile_size"),
    ({"projection": 4326, "tile_size": -1}, "positive"),
    ({"projection": "not a crs", "tile_size": 1}, "not a coordinate reference system"),
    ({"tile_grid": "s2"}, "get_tiles"),
    ({"projection": 4326, "tile_size": 1, "crs": 3857}, "two CRSs"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        split_area({"west": 0, "south": 0, "east": 2, "north": 2, "crs": 4326}, **kwargs)


@pytest.mark.parametrize("aoi, message", [
    ({"west": 0, "south": 2, "east": 1, "north": 1, "crs": 4326}, "south"),
    ({"west": 1, "south": 0, "east": 1, "north": 1, "crs": 4326}, "empty"),
    ({"west": 0, "south": 0, "east": 1}, "north"),
    ("POLYGON ((0 0, 1 0, 1 1, 0 0))", "expected a bounding-box dict"),
    ({"west": 5, "south": 0, "east": 1, "north": 1, "crs": 3857}, "projected"),
])
def test_bad_areas(aoi, message):
    with pytest.raises(ConfigurationError, match=message):
        split_area(aoi, projection=4326, tile_size=1)


def test_grid_objects_with_get_tiles_are_used_as_openeo_uses_them():
    seen = []

    class Halves:
        """A user's grid: the AOI's bounding box cut in two."""

        def get_tiles(self, geometry):
            seen.append(geometry)
            w, s, e, n = geometry["west"], geometry["south"], geometry["east"], geometry["north"]
            return gpd.GeoDataFrame(geometry=[box(w, s, (w + e) / 2, n), box((w + e) / 2, s, e, n)], crs=4326)

    aoi = {"west": 0, "south": 0, "east": 2, "north": 1, "crs": 4326}
    tiles = split_area(aoi, tile_grid=Halves())
    assert seen == [aoi] and len(tiles) == 2
    with pytest.raises(ConfigurationError, match="foreign tile grid"):
        split_area(box(0, 0, 1, 1), tile_grid=Halves(), crs=4326)


@settings(max_examples=40, deadline=None)
@given(st.floats(150.0, 179.9), st.floats(0.2, 25.0), st.floats(-60.0, 60.0), st.floats(0.2, 10.0),
       st.sampled_from([("EPSG:4326", 1.5), ("EPSG:3832", 100_000.0)]))
def test_antimeridian_boxes_cover_never_overlap(west, width, south, height, grid):
    projection, size = grid
    east = west + width - 360.0 if west + width > 180.0 else west + width
    aoi = {"west": west, "south": south, "east": east, "north": south + height, "crs": 4326}
    tiles = split_area(aoi, projection=projection, tile_size=size)
    assert tiles.crs == gpd.GeoSeries([], crs=projection).crs
    parts = [box(west, south, min(west + width, 180.0), south + height)]
    if west + width > 180.0:
        parts.append(box(-180.0, south, west + width - 360.0, south + height))
    target = gpd.GeoSeries([shapely.union_all(parts)], crs=4326)
    target = target.segmentize(0.05).to_crs(projection).iloc[0]
    _check_partition(tiles, target, rel=1e-4)
    assert tiles.total_bounds[0] >= -180.0 - 1e-9 or projection != "EPSG:4326"
