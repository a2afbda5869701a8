"""Split an area of interest into tiles: openeo's ``split_area`` and what it lacks.

Three ways to tile, as in openeo 0.50+:

* by ``projection`` and ``tile_size``: regular tiles anchored at the AOI's lower-left corner
  and cut at its bounding box (openeo's behaviour); with ``resolution`` (and ``origin``) the
  box is first widened to the pixel grid, so every tile edge is a pixel edge;
* by a predefined ``tile_grid`` GeoDataFrame/GeoSeries: the grid's tiles meeting the AOI;
* by a grid object with ``get_tiles(aoi)``: openeo's tile grids, or
  :class:`~eoextract.split.Sentinel2Grid` (the production grid on Sentinel-2 tiles).

Unlike openeo, an AOI crossing the antimeridian is cut at ±180° and tiled on both sides,
tiles of a MultiPolygon's parts never overlap, and tiles that only touch the AOI are left
out.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol, runtime_checkable

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from shapely.geometry.base import BaseGeometry

from eoextract.errors import ConfigurationError
from eoextract.split._aoi import as_crs, parse_aoi, reproject, require_crs

logger = logging.getLogger(__name__)

#: Relative slack when checking that a tile size is a whole number of pixels.
_EPS = 1e-9


@runtime_checkable
class TileGrid(Protocol):
    """Anything that turns an AOI into tiles (openeo's tile grids are such objects)."""

    def get_tiles(self, geometry: Any) -> gpd.GeoDataFrame:  # pragma: no cover - protocol
        ...


def split_area(
    aoi: Any,
    *,
    projection: Any = None,
    tile_size: float | None = None,
    tile_grid: Any = None,
    resolution: float | tuple[float, float] | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
    crs: Any = None,
) -> gpd.GeoDataFrame:
    """Split an area of interest into tiles (openeo's ``split_area`` signature, extended).

    Args:
        aoi: A bounding-box dict (``west``, ``south``, ``east``, ``north``, optional ``crs``),
            a shapely Polygon or MultiPolygon, or a GeoDataFrame/GeoSeries with a CRS.
        projection: CRS of the tiles (``"EPSG:32631"``, ``32631``, ...). Without it and
            without ``tile_grid``, the AOI's own CRS.
        tile_size: Tile edge in the projection's unit (metres, or degrees in EPSG:4326).
        tile_grid: Instead of ``projection``/``tile_size``: a GeoDataFrame/GeoSeries of
            predefined tiles, or a grid object with ``get_tiles`` (openeo's, or
            :class:`~eoextract.split.Sentinel2Grid`).
        resolution: Pixel size (one value, or ``(x, y)``); tile edges then fall on the
            pixel grid through ``origin`` and ``tile_size`` must be a whole number of pixels.
        origin: A corner of the pixel grid, ``(x, y)`` in the projection.
        crs: CRS of a bare Polygon/MultiPolygon (a dict's ``crs`` or a GeoDataFrame's own
            CRS otherwise).

    Returns:
        One row per tile, in the tiles' CRS (the projection, the predefined grid's CRS,
        or the AOI's CRS for :class:`~eoextract.split.Sentinel2Grid`).

    Raises:
        ConfigurationError: On contradictory or missing arguments, or an AOI without CRS
            where one is needed (no ``projection``, the Sentinel-2 grid, an antimeridian box).
    """
    if tile_grid is not None:
        if projection is not None or tile_size is not None or resolution is not None:
            raise ConfigurationError(
                "tile_grid cannot be combined with projection, tile_size or resolution: the "
                "grid defines the tiles")
        if isinstance(tile_grid, (gpd.GeoDataFrame, gpd.GeoSeries)):
            return predefined_tiles(aoi, tile_grid, crs=crs)
        if getattr(tile_grid, "accepts_crs", False):
            return tile_grid.get_tiles(aoi, crs=crs)
        if isinstance(tile_grid, TileGrid):
            if crs is not None:
                raise ConfigurationError("crs= is not passed on to a foreign tile grid; give the AOI a CRS instead")
            return tile_grid.get_tiles(aoi)
        raise ConfigurationError(
            f"tile_grid must be a GeoDataFrame, a GeoSeries or an object with get_tiles(), "
            f"got {type(tile_grid).__name__}")
    if tile_size is None:
        raise ConfigurationError("give tile_size (with a projection), or a tile_grid")
    return size_tiles(aoi, projection=projection, tile_size=tile_size, resolution=resolution,
                      origin=origin, crs=crs)


# --------------------------------------------------------------------------- size-based


def _pixel_size(resolution: float | tuple[float, float] | None) -> tuple[float, float] | None:
    if resolution is None:
        return None
    rx, ry = (resolution, resolution) if np.isscalar(resolution) else tuple(resolution)  # type: ignore[misc]
    if not (rx > 0 and ry > 0):
        raise ConfigurationError(f"resolution must be positive, got {resolution!r}")
    return float(rx), float(ry)


def _snap_down(v: float, o: float, r: float) -> float:
    return o + math.floor(round((v - o) / r, 9)) * r


def _snap_up(v: float, o: float, r: float) -> float:
    return o + math.ceil(round((v - o) / r, 9)) * r


def _disjoint_boxes(parts: list[BaseGeometry]) -> list[tuple[float, float, float, float]]:
    """Bounding boxes of the parts, overlapping ones merged until none overlap."""
    boxes = [p.bounds for p in parts]
    changed = True
    while changed:
        changed = False
        out: list[tuple[float, float, float, float]] = []
        for b in boxes:
            for i, o in enumerate(out):
                if b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3]:
                    out[i] = (min(b[0], o[0]), min(b[1], o[1]), max(b[2], o[2]), max(b[3], o[3]))
                    changed = True
                    break
            else:
                out.append(b)
        boxes = out
    return boxes


def _grid_edges(lo: float, hi: float, step: float) -> np.ndarray:
    n = max(1, math.ceil(round((hi - lo) / step, 9)))
    edges = lo + step * np.arange(n + 1, dtype=float)
    edges[-1] = hi
    return edges


def size_tiles(
    aoi: Any,
    *,
    projection: Any,
    tile_size: float,
    resolution: float | tuple[float, float] | None = None,
    origin: tuple[float, float] = (0.0, 0.0),
    crs: Any = None,
) -> gpd.GeoDataFrame:
    """Regular tiles of ``tile_size`` covering the AOI (see :func:`split_area`)."""
    if not (isinstance(tile_size, (int, float, np.number)) and tile_size > 0):
        raise ConfigurationError(f"tile_size must be a positive number, got {tile_size!r}")
    geom, aoi_crs = parse_aoi(aoi, crs)
    grid_crs = as_crs(projection)
    if grid_crs is None:
        grid_crs = require_crs(aoi_crs, "no projection was given to tile in")
    elif aoi_crs is None:
        logger.warning("the area of interest has no CRS; taking it to be in the tiles' CRS %s",
                       grid_crs.to_string())
        aoi_crs = grid_crs
    geom = reproject(geom, aoi_crs, grid_crs)
    pixel = _pixel_size(resolution)
    if pixel is not None:
        for r in pixel:
            n = tile_size / r
            if abs(n - round(n)) > _EPS * max(1.0, n):
                raise ConfigurationError(
                    f"tile_size {tile_size} is not a whole number of pixels of {r}; "
                    "choose a multiple of the resolution")
    ox, oy = (float(origin[0]), float(origin[1]))
    tiles: list[BaseGeometry] = []
    parts = list(getattr(geom, "geoms", [geom]))
    for west, south, east, north in _disjoint_boxes(parts):
        if pixel is not None:
            west, east = _snap_down(west, ox, pixel[0]), _snap_up(east, ox, pixel[0])
            south, north = _snap_down(south, oy, pixel[1]), _snap_up(north, oy, pixel[1])
        xs, ys = _grid_edges(west, east, tile_size), _grid_edges(south, north, tile_size)
        if len(xs) * len(ys) > 250_000:
            logger.warning("splitting into %d x %d tiles; consider a larger tile_size",
                           len(xs) - 1, len(ys) - 1)
        x0, y0 = np.meshgrid(xs[:-1], ys[:-1], indexing="ij")
        x1, y1 = np.meshgrid(xs[1:], ys[1:], indexing="ij")
        tiles.extend(shapely.box(x0.ravel(), y0.ravel(), x1.ravel(), y1.ravel()))
    out = gpd.GeoDataFrame(geometry=tiles, crs=grid_crs)
    return out.loc[_meets(out, geom)].reset_index(drop=True)


# --------------------------------------------------------------------------- predefined


def predefined_tiles(aoi: Any, grid: gpd.GeoDataFrame | gpd.GeoSeries, *, crs: Any = None) -> gpd.GeoDataFrame:
    """The rows of a predefined grid that meet the AOI (in the grid's CRS)."""
    frame = grid.copy() if isinstance(grid, gpd.GeoDataFrame) else gpd.GeoDataFrame(geometry=grid)
    if frame.empty:
        raise ConfigurationError("the tile grid has no tiles")
    if frame.crs is None:
        raise ConfigurationError("the tile grid has no CRS; set one (grid.set_crs(...))")
    geom, aoi_crs = parse_aoi(aoi, crs)
    grid_crs = pyproj.CRS(frame.crs)
    if aoi_crs is None:
        logger.warning("the area of interest has no CRS; taking it to be in the grid's CRS %s",
                       grid_crs.to_string())
        aoi_crs = grid_crs
    geom = reproject(geom, aoi_crs, grid_crs)
    return frame.loc[_meets(frame, geom)].reset_index(drop=True)


def _meets(frame: gpd.GeoDataFrame, geom: BaseGeometry) -> np.ndarray:
    """Rows sharing some area with ``geom`` (not only an edge or a corner)."""
    keep = frame.intersects(geom).to_numpy()
    if keep.any():
        keep[keep] = shapely.area(shapely.intersection(frame.geometry.array[keep], geom)) > 0
    return keep
