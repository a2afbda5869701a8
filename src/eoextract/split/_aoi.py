"""An area of interest as a shapely geometry with its CRS, and its antimeridian handling.

Accepted forms (those of openeo's ``split_area`` plus geopandas objects):

* a bounding-box dict ``{"west", "south", "east", "north"}`` with an optional ``"crs"``;
  in a geographic CRS ``west > east`` means the box crosses the antimeridian;
* a shapely ``Polygon`` or ``MultiPolygon`` (no CRS of its own: pass ``crs=``);
* a ``GeoDataFrame`` or ``GeoSeries`` (its geometries' union, in its CRS).

In a geographic CRS, longitudes beyond ±180° (e.g. 170…190) or a ring edge jumping by more
than 180° (e.g. 179 → -179) mean the area crosses the antimeridian: it is cut at ±180° and
each piece moved back into [-180, 180].
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from eoextract.errors import ConfigurationError
from eoextract.split._splitters import _shift_east

_WORLD = box(-180.0, -90.0, 180.0, 90.0)
_BBOX_KEYS = ("west", "south", "east", "north")


def as_crs(value: Any) -> pyproj.CRS | None:
    """A ``pyproj.CRS`` from an EPSG int, an authority string, WKT, ... (None stays None)."""
    if value is None:
        return None
    try:
        return pyproj.CRS.from_user_input(value)
    except pyproj.exceptions.CRSError as exc:
        raise ConfigurationError(f"not a coordinate reference system: {value!r} ({exc})") from exc


def parse_aoi(aoi: Any, crs: Any = None) -> tuple[BaseGeometry, pyproj.CRS | None]:
    """``(geometry, crs)`` of an area of interest; ``crs`` is None when nothing tells it.

    Raises:
        ConfigurationError: On an unsupported type, an empty or invalid box, or two
            different CRSs (``crs=`` against the AOI's own).
    """
    given = as_crs(crs)
    if isinstance(aoi, dict):
        missing = [k for k in _BBOX_KEYS if k not in aoi]
        if missing:
            raise ConfigurationError(f"bounding box lacks {', '.join(missing)}: {aoi!r}")
        west, south, east, north = (float(aoi[k]) for k in _BBOX_KEYS)
        own = as_crs(aoi.get("crs"))
        aoi_crs = _one_crs(own, given)
        if not south < north:
            raise ConfigurationError(f"invalid bounding box: south ({south}) must be less than north ({north})")
        if west == east:
            raise ConfigurationError(f"invalid bounding box: west equals east ({west}), the box is empty")
        if west > east:
            if aoi_crs is None:
                raise ConfigurationError(
                    "bounding box with west > east but no 'crs': it can only mean a box across "
                    "the antimeridian in a geographic CRS; add e.g. 'crs': 4326")
            if not aoi_crs.is_geographic:
                raise ConfigurationError(
                    f"invalid bounding box: west ({west}) > east ({east}) in projected "
                    f"{aoi_crs.name}; only geographic boxes may cross the antimeridian")
            geom: BaseGeometry = box(west, south, east + 360.0, north)
        else:
            geom = box(west, south, east, north)
        return geom, aoi_crs
    if isinstance(aoi, (gpd.GeoDataFrame, gpd.GeoSeries)):
        series = aoi.geometry if isinstance(aoi, gpd.GeoDataFrame) else aoi
        geoms = series[~(series.isna() | series.is_empty)]
        if len(geoms) == 0:
            raise ConfigurationError("the area of interest has no geometry")
        return _polygonal(shapely.union_all(geoms.array)), _one_crs(as_crs(series.crs), given)
    if isinstance(aoi, (Polygon, MultiPolygon)):
        if aoi.is_empty:
            raise ConfigurationError("the area of interest is empty")
        return aoi, given
    raise ConfigurationError(
        "expected a bounding-box dict, a shapely Polygon or MultiPolygon, or a GeoDataFrame/"
        f"GeoSeries, got {type(aoi).__name__}")


def _one_crs(own: pyproj.CRS | None, given: pyproj.CRS | None) -> pyproj.CRS | None:
    if own is not None and given is not None and own != given:
        raise ConfigurationError(f"two CRSs for the area of interest: {own.to_string()} and {given.to_string()}")
    return own if own is not None else given


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, (Polygon, MultiPolygon))]
    if not polys:
        raise ConfigurationError(f"the area of interest must be polygonal, got {geom.geom_type}")
    return shapely.union_all(polys)


def require_crs(aoi_crs: pyproj.CRS | None, why: str) -> pyproj.CRS:
    """The AOI's CRS, or a ConfigurationError saying why one is needed."""
    if aoi_crs is None:
        raise ConfigurationError(
            f"the area of interest has no CRS, and {why}; give one: a 'crs' key in the "
            "bounding box, a GeoDataFrame/GeoSeries with a CRS, or split_area(..., crs=...)")
    return aoi_crs


# --------------------------------------------------------------------------- antimeridian


def _jumps_antimeridian(poly: Polygon) -> bool:
    for ring in (poly.exterior, *poly.interiors):
        lon = np.asarray(ring.coords)[:, 0]
        a, b = lon[:-1], lon[1:]
        on_edge = (np.abs(a) == 180.0) & (np.abs(b) == 180.0)
        if np.any((np.abs(b - a) > 180.0) & ~on_edge):
            return True
    return False


def _shift(geom: BaseGeometry, dx: float) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: xy + np.array([dx, 0.0]))


def wrap_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """A lon/lat area cut at ±180° with every piece inside [-180, 180] (see module doc)."""
    pieces = []
    for poly in getattr(geom, "geoms", [geom]):
        if _jumps_antimeridian(poly):
            poly = shapely.make_valid(shapely.transform(poly, _shift_east))
        pieces.append(poly)
    merged = shapely.union_all(pieces)
    minx, _, maxx, _ = merged.bounds
    if minx >= -180.0 and maxx <= 180.0:
        return merged
    parts = [merged.intersection(_WORLD)]
    for k in (-2, -1, 1, 2):
        window = box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
        part = merged.intersection(window)
        if not part.is_empty:
            parts.append(_shift(part, -360.0 * k))
    return _polygonal(shapely.union_all([p for p in parts if not p.is_empty]))


def reproject(geom: BaseGeometry, src: pyproj.CRS, dst: pyproj.CRS) -> BaseGeometry:
    """``geom`` from ``src`` to ``dst``, edges densified first (so curved edges stay close),
    geographic results cut at the antimeridian."""
    if src == dst:
        return wrap_antimeridian(geom) if dst.is_geographic else geom
    if src.is_geographic:
        geom = wrap_antimeridian(geom)
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / 128.0
    if src.is_geographic:
        step = min(step, 0.05)
    if step > 0:
        geom = shapely.segmentize(geom, step)
    out = gpd.GeoSeries([geom], crs=src).to_crs(dst).iloc[0]
    if not out.is_valid:
        out = shapely.make_valid(out)
    if not any(isinstance(g, (Polygon, MultiPolygon)) for g in getattr(out, "geoms", [out])):
        return Polygon()  # a sliver thinner than the projection's precision
    out = _polygonal(out)
    return wrap_antimeridian(out) if dst.is_geographic else out


def reproject_many(geoms: np.ndarray, src: pyproj.CRS, dst: pyproj.CRS) -> np.ndarray:
    """:func:`reproject` for an array of polygons at once (one transformation call)."""
    if src == dst or len(geoms) == 0:
        return geoms
    b = shapely.bounds(geoms)
    step = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 128.0
    if src.is_geographic:
        step = np.minimum(step, 0.05)
    geoms = shapely.segmentize(geoms, np.maximum(step, 1e-9))
    out = np.asarray(gpd.GeoSeries(geoms, crs=src).to_crs(dst).array, dtype=object)
    bad = ~shapely.is_valid(out)
    if bad.any():
        out[bad] = [_polygonal(shapely.make_valid(g)) for g in out[bad]]
    if dst.is_geographic:
        ob = shapely.bounds(out)
        beyond = (ob[:, 0] < -180.0) | (ob[:, 2] > 180.0)
        out[beyond] = [wrap_antimeridian(g) for g in out[beyond]]
    return out
