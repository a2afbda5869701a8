"""Split a GeoDataFrame of samples into job-sized groups, offline.

Two grids, as in openeo-gfmap's job splitters:

* :func:`split_job_hex` groups by the H3 cell of each geometry's centroid and re-splits
  crowded cells at finer resolutions;
* :func:`split_job_s2grid` groups by the Sentinel-2 tile (MGRS 100 km square) of the
  centroid, computed with the ``mgrs`` package, so nothing is downloaded.

Both keep the input CRS, columns and index labels, never drop or duplicate a row, and put
rows whose geometry is missing or empty in groups of their own (key ``None``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Hashable, Sequence

import geopandas as gpd
import h3
import mgrs
import numpy as np
import shapely

from eoextract.errors import ConfigurationError


logger = logging.getLogger(__name__)

MAX_H3_RESOLUTION = 15
#: Cylindrical equal-area projection (EASE-Grid 2.0 global), defined up to the poles.
_EQUAL_AREA = "EPSG:6933"
_MGRS = mgrs.MGRS()


# --------------------------------------------------------------------------- helpers


def _check_input(gdf: gpd.GeoDataFrame, max_points: int) -> None:
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise ConfigurationError(f"expected a GeoDataFrame, got {type(gdf).__name__}")
    if gdf.crs is None:
        raise ConfigurationError(
            "the GeoDataFrame has no CRS; set one (e.g. gdf.set_crs('EPSG:4326')) so the "
            "samples can be placed on the grid"
        )
    if not isinstance(max_points, (int, np.integer)) or max_points < 1:
        raise ConfigurationError(f"max_points must be a positive integer, got {max_points!r}")


def _wrap_lon(lon: np.ndarray) -> np.ndarray:
    return ((lon + 180.0) % 360.0) - 180.0


def _shift_east(xy: np.ndarray) -> np.ndarray:
    """Move negative longitudes by +360° (for geometries crossing the antimeridian)."""
    out = xy.copy()
    out[:, 0] = np.where(out[:, 0] < 0.0, out[:, 0] + 360.0, out[:, 0])
    return out


def _geographic_centroids(geoms: gpd.GeoSeries) -> np.ndarray:
    """Centroids (lon/lat points) of non-point geometries given in EPSG:4326."""
    centres = geoms.to_crs(_EQUAL_AREA).centroid.to_crs("EPSG:4326").array.copy()
    bounds = geoms.bounds
    crossing = ((bounds.maxx - bounds.minx) > 180.0).to_numpy()
    if crossing.any():
        shifted = shapely.transform(geoms.array[crossing], _shift_east)
        c = shapely.centroid(shifted)
        centres[crossing] = shapely.points(_wrap_lon(shapely.get_x(c)), shapely.get_y(c))
    return np.asarray(centres, dtype=object)


def centroids_lonlat(gdf: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Longitude and latitude (EPSG:4326) of each geometry's centroid.

    Points are used as they are. Other geometries get their centroid in the input CRS
    when it is projected, else in an equal-area projection; geometries spanning more than
    180° of longitude are taken to cross the antimeridian and averaged on shifted
    longitudes. Missing or empty geometries (or ones outside EPSG:4326's domain) give NaN.

    Args:
        gdf: Geometries with a CRS.

    Returns:
        Two float arrays (lon, lat), one value per row.
    """
    n = len(gdf)
    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    geometry = gdf.geometry
    valid = ~(geometry.isna().to_numpy() | geometry.is_empty.to_numpy())
    if not valid.any():
        return lon, lat
    # z plays no part in a centroid, and mixed 2D/3D positions make reprojection fail
    work = gpd.GeoSeries(shapely.force_2d(geometry[valid].array), index=geometry.index[valid], crs=gdf.crs)
    others = (work.geom_type != "Point").to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf/NaN out of the CRS domain
        if gdf.crs.is_projected:
            points = work.array.copy()
            if others.any():
                points[others] = shapely.centroid(points[others])
            points = gpd.GeoSeries(points, crs=gdf.crs).to_crs("EPSG:4326").array
        else:
            ll = work.to_crs("EPSG:4326")
            points = ll.array.copy()
            if others.any():
                points[others] = _geographic_centroids(ll[others])
    points = np.asarray(points, dtype=object)
    points[shapely.is_empty(points)] = None  # a degenerate geometry has an empty centroid
    x, y = shapely.get_x(points), shapely.get_y(points)
    lon[valid], lat[valid] = x, y
    good = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90.0)
    lon[~good] = np.nan
    lat[~good] = np.nan
    lon[good] = _wrap_lon(lon[good])
    return lon, lat


def s2_tile(lat: float, lon: float) -> tuple[str, int]:
    """Sentinel-2 tile id (MGRS 100 km square) and UTM/UPS EPSG code of a point.

    Args:
        lat: Latitude in degrees.
        lon: Longitude in degrees.

    Returns:
        ``(tile, epsg)``, e.g. ``("31UFS", 32631)``; polar points give UPS squares
        (``"ZAH"``, EPSG 32661 north / 32761 south).
    """
    tile = _MGRS.toMGRS(float(lat), float(_wrap_lon(np.float64(lon))), MGRSPrecision=0)
    if isinstance(tile, bytes):  # older mgrs versions
        tile = tile.decode()
    if tile[:2].isdigit():
        zone, band = int(tile[:2]), tile[2]
        return tile, (32600 if band >= "N" else 32700) + zone
    return tile, 32661 if tile[0] in "YZ" else 32761


def _groups(keys: Sequence[Hashable | None]) -> list[tuple[Hashable | None, np.ndarray]]:
    """Positions per key, keys sorted (None last), positions in input order."""
    positions: dict[Hashable | None, list[int]] = {}
    for i, k in enumerate(keys):
        positions.setdefault(k, []).append(i)
    ordered = sorted((k for k in positions if k is not None), key=str)
    if None in positions:
        ordered.append(None)
    return [(k, np.asarray(positions[k], dtype=np.intp)) for k in ordered]


def _chunks(idx: np.ndarray, size: int) -> list[np.ndarray]:
    return [idx[i : i + size] for i in range(0, len(idx), size)]


def _take(
    gdf: gpd.GeoDataFrame, idx: np.ndarray, columns: dict[str, Callable[[np.ndarray], object]]
) -> gpd.GeoDataFrame:
    part = gdf.iloc[idx].copy()
    for name, values in columns.items():
        part[name] = values(idx)
    return part


# --------------------------------------------------------------------------- splitters


def split_job_hex(
    gdf: gpd.GeoDataFrame, max_points: int = 500, grid_resolution: int = 3
) -> list[gpd.GeoDataFrame]:
    """Split samples into groups by the H3 cell of their centroid.

    A cell holding more than ``max_points`` samples is split again by the cells of the
    next finer resolution, until every group fits (samples sharing one position at the
    finest resolution are cut into consecutive chunks).

    Args:
        gdf: Samples with a CRS (any geometry type).
        max_points: Most samples per group.
        grid_resolution: H3 resolution of the first split (0 coarse ... 15 fine).

    Returns:
        GeoDataFrames in the input CRS with the input's columns and index labels plus an
        ``h3index`` column (the cell of the group, replacing any existing column); each
        input row is in exactly one of them.

    Raises:
        ConfigurationError: Without a CRS, or with invalid parameters.
    """
    _check_input(gdf, max_points)
    if not 0 <= grid_resolution <= MAX_H3_RESOLUTION:
        raise ConfigurationError(f"grid_resolution must be within 0..15, got {grid_resolution}")
    lon, lat = centroids_lonlat(gdf)
    cell_of = np.empty(len(gdf), dtype=object)
    result: list[gpd.GeoDataFrame] = []

    def split(idx: np.ndarray, resolution: int) -> None:
        keys = [
            None if np.isnan(lat[i]) else h3.latlng_to_cell(lat[i], lon[i], resolution) for i in idx
        ]
        for key, pos in _groups(keys):
            members = idx[pos]
            if len(members) <= max_points:
                cell_of[members] = key
                result.append(_take(gdf, members, {"h3index": lambda m: cell_of[m]}))
            elif key is not None and resolution < MAX_H3_RESOLUTION:
                split(members, resolution + 1)
            else:
                cell_of[members] = key
                for chunk in _chunks(members, max_points):
                    result.append(_take(gdf, chunk, {"h3index": lambda m: cell_of[m]}))

    if len(gdf):
        split(np.arange(len(gdf), dtype=np.intp), grid_resolution)
    logger.info("split %d sample(s) into %d H3 group(s)", len(gdf), len(result))
    return result


def split_job_s2grid(gdf: gpd.GeoDataFrame, max_points: int = 500) -> list[gpd.GeoDataFrame]:
    """Split samples into groups by the Sentinel-2 tile of their centroid.

    Tile ids are MGRS 100 km squares computed offline with ``mgrs``; groups above
    ``max_points`` are cut into consecutive chunks.

    Args:
        gdf: Samples with a CRS (any geometry type).
        max_points: Most samples per group.

    Returns:
        GeoDataFrames in the input CRS with the input's columns and index labels plus
        ``tile`` (e.g. ``"31UFS"``) and ``epsg`` (its UTM zone, e.g. ``32631``) columns;
        each input row is in exactly one of them.

    Raises:
        ConfigurationError: Without a CRS, or with invalid parameters.
    """
    _check_input(gdf, max_points)
    lon, lat = centroids_lonlat(gdf)
    tiles = np.empty(len(gdf), dtype=object)
    epsgs = np.zeros(len(gdf), dtype=object)
    for i in range(len(gdf)):
        if np.isnan(lat[i]):
            tiles[i], epsgs[i] = None, None
        else:
            tiles[i], epsgs[i] = s2_tile(lat[i], lon[i])
    result: list[gpd.GeoDataFrame] = []
    columns = {"tile": lambda m: tiles[m], "epsg": lambda m: _epsg_column(epsgs[m])}
    for _key, members in _groups(list(tiles)):
        for chunk in _chunks(members, max_points):
            result.append(_take(gdf, chunk, columns))
    logger.info("split %d sample(s) into %d Sentinel-2 tile group(s)", len(gdf), len(result))
    return result


def _epsg_column(values: np.ndarray) -> object:
    if all(v is not None for v in values):
        return values.astype(np.int64)
    return values
