"""Geometry input of the embedded backend: GeoJSON and vector cubes to GeoDataFrames, UTM grids.

Cubes live on a 10 m grid (:data:`GRID`) in the UTM zone of their geometry's centre.
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj

from eoextract.backend._api_errors import OpenEOApiError, ProcessParameterInvalid
from eoextract.backend._execution_context import current_context
from eoextract.backend._synthetic_collections import utm_epsg


GRID = 10.0  # metres


def _crs_member(obj: dict) -> str | None:
    crs = obj.get("crs")
    if isinstance(crs, dict):
        return (crs.get("properties") or {}).get("name")
    if isinstance(crs, (str, int)):
        return str(crs) if not str(crs).isdigit() else f"EPSG:{crs}"
    return None


def to_geodataframe(value: Any) -> gpd.GeoDataFrame:
    """Turn a spatial extent or geometry argument into a GeoDataFrame (one row per feature).

    Accepts a bounding box (``BoundingBox`` model or dict with west/south/east/north and
    optional ``crs``), GeoJSON (Feature, FeatureCollection, geometries; EPSG:4326 unless a
    ``crs`` member names another CRS) or a vector cube (GeoDataFrame).

    Raises:
        ProcessParameterInvalid: When the value is not a usable geometry.
    """
    from shapely.geometry import box, shape

    try:
        if isinstance(value, gpd.GeoDataFrame):
            gdf = value if value.crs is not None else value.set_crs(4326)
            return gdf.reset_index(drop=True)
        if hasattr(value, "west") and hasattr(value, "east"):  # pydantic BoundingBox
            value = {"west": value.west, "south": value.south, "east": value.east,
                     "north": value.north, "crs": value.crs}
        if not isinstance(value, dict):
            raise ValueError(f"expected a bounding box, GeoJSON or vector cube, got {type(value).__name__}")
        if "west" in value:
            w, s, e, n = (float(value[k]) for k in ("west", "south", "east", "north"))
            if not (w < e and s < n):
                raise ProcessParameterInvalid(
                    f"The spatial extent is empty: west={w}, east={e}, south={s}, north={n} "
                    "(west must be < east and south < north)."
                )
            crs = value.get("crs") or 4326
            if isinstance(crs, str) and crs.isdigit():
                crs = int(crs)
            return gpd.GeoDataFrame(geometry=[box(w, s, e, n)], crs=pyproj.CRS.from_user_input(crs))
        kind = value.get("type")
        crs = _crs_member(value) or "EPSG:4326"
        if kind == "FeatureCollection":
            feats = value.get("features") or []
            geoms = [shape(f["geometry"]) for f in feats]
            props = [dict(f.get("properties") or {}) for f in feats]
            gdf = gpd.GeoDataFrame(pd.DataFrame(props), geometry=geoms, crs=crs)
        elif kind == "Feature":
            gdf = gpd.GeoDataFrame(pd.DataFrame([dict(value.get("properties") or {})]),
                                   geometry=[shape(value["geometry"])], crs=crs)
        elif kind == "GeometryCollection":
            gdf = gpd.GeoDataFrame(geometry=[shape(g) for g in value["geometries"]], crs=crs)
        elif kind in ("Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString", "MultiLineString"):
            gdf = gpd.GeoDataFrame(geometry=[shape(value)], crs=crs)
        else:
            raise ValueError(f"unsupported GeoJSON type {kind!r}")
    except OpenEOApiError:
        raise
    except Exception as exc:  # shapely/pyproj/KeyError on malformed input
        raise ProcessParameterInvalid(f"Invalid geometry: {exc}") from None
    if len(gdf) == 0:
        raise ProcessParameterInvalid("The geometry contains no features.")
    empty = [i for i, g in enumerate(gdf.geometry) if g is None or g.is_empty]
    if empty:
        raise ProcessParameterInvalid(f"Empty geometry at feature index {empty[:10]}.")
    if gdf.crs.is_geographic:
        w, s, e, n = gdf.total_bounds
        if not (-180.0 <= w and e <= 360.0 and -90.0 <= s and n <= 90.0):
            raise ProcessParameterInvalid(
                f"Coordinates {[w, s, e, n]} are out of range for {gdf.crs.to_string()}; geometries "
                "in a projected CRS (e.g. UTM) need a 'crs' member naming it."
            )
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        import shapely

        current_context().log("warning", f"repaired invalid geometries at index {list(np.flatnonzero(invalid))[:10]}")
        gdf = gdf.set_geometry(shapely.make_valid(gdf.geometry.values))
    return gdf


def select_feature(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """In per-feature mode, keep only the current feature of a full feature set."""
    ctx = current_context()
    if ctx.feature_index is not None and ctx.n_features == len(gdf) and len(gdf) > 1:
        return gdf.iloc[[ctx.feature_index]].reset_index(drop=True)
    return gdf


def target_epsg(gdf: gpd.GeoDataFrame) -> int:
    """The UTM zone (EPSG code) of the cube: the geometry's own if it is UTM, else its centre's."""
    epsg = gdf.crs.to_epsg() if gdf.crs is not None else None
    if epsg is not None and 32601 <= epsg <= 32760 and epsg % 100 <= 60 and epsg % 100 >= 1:
        return epsg
    ll = gdf.to_crs(4326)
    minx, miny, maxx, maxy = ll.total_bounds
    return utm_epsg((minx + maxx) / 2.0, (miny + maxy) / 2.0)


def cube_epsg(cube: Any) -> int | None:
    """EPSG code of a raster cube's CRS (rioxarray), if known."""
    import rioxarray  # noqa: F401 - registers the .rio accessor

    try:
        crs = cube.rio.crs
    except Exception:
        return None
    return crs.to_epsg() if crs is not None else None


def grid_bounds(gdf_utm: gpd.GeoDataFrame) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of the geometries, snapped outwards to the grid (at least one pixel)."""
    w, s, e, n = gdf_utm.total_bounds
    tol = 0.01
    w = np.floor((w + tol) / GRID) * GRID
    s = np.floor((s + tol) / GRID) * GRID
    e = max(np.ceil((e - tol) / GRID) * GRID, w + GRID)
    n = max(np.ceil((n - tol) / GRID) * GRID, s + GRID)
    return float(w), float(s), float(e), float(n)


def geometry_mask_of(gdf_utm: gpd.GeoDataFrame, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """True for pixels whose centre is inside one of the geometries (points always hit)."""
    from rasterio.features import geometry_mask
    from rasterio.transform import from_origin

    transform = from_origin(xs[0] - GRID / 2, ys[0] + GRID / 2, GRID, GRID)
    geoms = [g for g in gdf_utm.geometry if g is not None and not g.is_empty]
    return ~geometry_mask(geoms, out_shape=(ys.size, xs.size), transform=transform)
