"""Raster-cube processes of the embedded backend that ``openeo-processes-dask`` lacks or that need
to know the synthetic collections: ``load_collection``, spatial and band filters, ``ndvi`` by
common band names, ``resample_spatial``, ``merge_cubes`` and two processes-dask wrappers.

Raster cubes are ``xarray.DataArray`` objects with dims ``(t, bands, y, x)`` (numpy-backed),
their CRS written with rioxarray, on the 10 m UTM grid of :mod:`eoextract.backend._geometry`.
Per-execution state (output folder, log, cancel flag, the feature being processed) lives in
:class:`~eoextract.backend._execution_context.ExecutionContext`, so one registry serves
concurrent executions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import xarray as xr

from eoextract._util.utc import as_utc
from eoextract.backend._api_errors import ProcessParameterInvalid
from eoextract.backend._execution_context import current_context
from eoextract.backend._geometry import (
    GRID,
    cube_epsg,
    geometry_mask_of,
    grid_bounds,
    select_feature,
    target_epsg,
    to_geodataframe,
)
from eoextract.backend._synthetic_collections import (
    COLLECTIONS,
    collection_dates,
    filter_dates,
    get_collection,
    tile_key,
)
from eoextract.backend._synthetic_pixels import generate

#: Largest raster a single ``load_collection`` may produce (pixels x bands x dates), about
#: 300 MB of uint16: e.g. 100 km2 at 10 m for 13 bands and 11 dates.
MAX_CUBE_VALUES = 150_000_000


# --------------------------------------------------------------------------------------------
# Arguments


def _to_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if hasattr(value, "root"):
        value = value.root
    if isinstance(value, str):
        value = pd.Timestamp(value).to_pydatetime()
    if isinstance(value, datetime):  # plain datetime (pendulum's subclass breaks arithmetic)
        v = as_utc(value)
        return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond,
                        tzinfo=timezone.utc)
    raise ProcessParameterInvalid(f"Cannot read a date from {value!r}.")


def _temporal_bounds(extent: Any) -> tuple[datetime | None, datetime | None]:
    if extent is None:
        return None, None
    items = list(extent.root) if hasattr(extent, "root") else list(extent)
    if len(items) != 2:
        raise ProcessParameterInvalid("temporal_extent must be a list of two dates.")
    start, end = (_to_datetime(v) for v in items)
    if start is not None and end is not None and start >= end:
        raise ProcessParameterInvalid(f"The temporal extent is empty: {start:%Y-%m-%d} >= {end:%Y-%m-%d}.")
    return start, end


# --------------------------------------------------------------------------------------------
# Processes


def load_collection(id: str, spatial_extent: Any = None, temporal_extent: Any = None,  # noqa: A002
                    bands: list[str] | None = None, properties: dict | None = None) -> xr.DataArray:
    """Generate a synthetic collection on the UTM grid of the extent."""
    ctx = current_context()
    spec = get_collection(id)
    if spatial_extent is None:
        raise ProcessParameterInvalid(
            f"load_collection({id}) needs a spatial_extent (or a later filter_bbox/filter_spatial)."
        )
    start, end = _temporal_bounds(temporal_extent)
    if start is None or end is None:
        raise ProcessParameterInvalid(
            "load_collection needs a temporal_extent with a start and an end "
            "(or a later filter_temporal)."
        )
    band_names = list(bands) if bands else spec.band_names
    for b in band_names:
        spec.band(b)
    gdf = select_feature(to_geodataframe(spatial_extent))
    ll = gdf.to_crs(4326).total_bounds if not gdf.crs.is_geographic else gdf.total_bounds
    if ll[2] - ll[0] > 3.0 or ll[3] - ll[1] > 3.0:
        raise ProcessParameterInvalid(
            f"The spatial extent ({ll[2] - ll[0]:.2f} x {ll[3] - ll[1]:.2f} degrees) is far too large for "
            f"{id} at 10 m (limit about 100 km2 per cube); use a smaller extent, or "
            "sample_by_feature for scattered polygons."
        )
    epsg = target_epsg(gdf)
    gdf_utm = gdf.to_crs(epsg)
    w, s, e, n = grid_bounds(gdf_utm)
    if not np.all(np.isfinite([w, s, e, n])):
        raise ProcessParameterInvalid(f"The spatial extent cannot be projected to EPSG:{epsg}.")
    xs = np.arange(w + GRID / 2, e, GRID)
    ys = np.arange(n - GRID / 2, s, -GRID)
    dates = collection_dates(spec, start, end)
    if dates and properties:
        tile = tile_key(epsg, (w + e) / 2, (s + n) / 2)
        dates = filter_dates(spec, tile, dates, properties)
    if not dates:
        raise ProcessParameterInvalid(
            f"No {id} acquisitions in [{start:%Y-%m-%d}, {end:%Y-%m-%d}) matching the filters "
            f"(one every {spec.revisit_days} days)."
        )
    n_values = xs.size * ys.size * len(band_names) * len(dates)
    if n_values > MAX_CUBE_VALUES:
        raise ProcessParameterInvalid(
            f"The requested cube is too large: {ys.size} x {xs.size} px "
            f"({xs.size * ys.size * 1e-4:.1f} km2) x {len(band_names)} bands x {len(dates)} dates "
            f"= {n_values:,} values, over this backend's limit of {MAX_CUBE_VALUES:,} "
            "(about 100 km2 x 13 bands x 11 dates). Use a smaller extent, fewer bands or dates, "
            "or sample_by_feature for scattered polygons."
        )
    ctx.check_canceled()
    if not ctx.feature_index:  # once per execution, not once per feature
        ctx.log("info", f"load_collection {id}: EPSG:{epsg}, {ys.size}x{xs.size} px, "
                        f"{len(band_names)} bands, {len(dates)} dates")
    values = generate(spec, epsg, xs, ys, dates, band_names, checkpoint=ctx.check_canceled)
    if not _is_bbox(spatial_extent) and not _is_box(gdf_utm):
        inside = geometry_mask_of(gdf_utm, xs, ys)
        fill = 0 if values.dtype.kind in "ui" else np.nan
        values[..., ~inside] = fill
    ctx.geometries = gdf
    return _make_cube(values, dates, band_names, ys, xs, epsg)


def _is_bbox(value: Any) -> bool:
    return (hasattr(value, "west") and hasattr(value, "east")) or (isinstance(value, dict) and "west" in value)


def _is_box(gdf_utm: gpd.GeoDataFrame) -> bool:
    """True for one axis-aligned rectangle (masking it would change nothing)."""
    geom = gdf_utm.geometry.iloc[0]
    return (len(gdf_utm) == 1 and geom.geom_type == "Polygon" and geom.area > 0
            and abs(geom.envelope.area - geom.area) <= 1e-6 * geom.area)


def _make_cube(values: np.ndarray, dates: list[datetime], bands: list[str], ys: np.ndarray,
               xs: np.ndarray, epsg: int) -> xr.DataArray:
    t = np.array([d.replace(tzinfo=None) for d in dates], dtype="datetime64[ns]")
    cube = xr.DataArray(values, dims=("t", "bands", "y", "x"),
                        coords={"t": t, "bands": bands, "y": ys, "x": xs})
    return cube.rio.write_crs(f"EPSG:{epsg}")


def _crop_to(data: xr.DataArray, gdf: gpd.GeoDataFrame, mask: bool) -> xr.DataArray:
    epsg = cube_epsg(data)
    if epsg is None:
        raise ProcessParameterInvalid("The data cube has no CRS; cannot filter it spatially.")
    gdf_c = gdf.to_crs(epsg)
    w, s, e, n = gdf_c.total_bounds
    xs, ys = data["x"].values, data["y"].values
    rx = (xs + GRID / 2 > w) & (xs - GRID / 2 < e)
    ry = (ys + GRID / 2 > s) & (ys - GRID / 2 < n)
    if not rx.any() or not ry.any():
        raise ProcessParameterInvalid("The spatial filter does not overlap the data cube.")
    out = data.isel(x=np.flatnonzero(rx), y=np.flatnonzero(ry))
    if mask and not _is_box(gdf_c):
        inside = xr.DataArray(geometry_mask_of(gdf_c, out["x"].values, out["y"].values), dims=("y", "x"))
        fill = 0 if out.dtype.kind in "ui" else np.nan
        out = out.where(inside, fill).astype(out.dtype) if out.dtype.kind in "ui" else out.where(inside)
    return out


def filter_spatial(data: xr.DataArray, geometries: Any) -> xr.DataArray:
    """Crop to the geometries' bounding box and set pixels outside them to no-data."""
    gdf = select_feature(to_geodataframe(geometries))
    current_context().geometries = gdf
    return _crop_to(data, gdf, mask=True)


def filter_bbox(data: Any, extent: Any) -> Any:
    """Crop a raster cube (or a vector cube) to a bounding box."""
    gdf = to_geodataframe(extent)
    if isinstance(data, gpd.GeoDataFrame):
        box_geom = gdf.to_crs(data.crs).geometry.iloc[0]
        return data[data.intersects(box_geom)].reset_index(drop=True)
    return _crop_to(data, gdf, mask=False)


def filter_bands(data: xr.DataArray, bands: list[str] | None = None, wavelengths: Any = None) -> xr.DataArray:
    """Select bands by name."""
    if not bands:
        raise ProcessParameterInvalid("filter_bands needs a list of band names.")
    available = [str(b) for b in data["bands"].values]
    missing = [b for b in bands if b not in available]
    if missing:
        raise ProcessParameterInvalid(
            f"Band(s) {missing} not in the data cube; available bands: {available}."
        )
    return data.sel(bands=list(bands))


def ndvi(data: xr.DataArray, nir: str = "nir", red: str = "red", target_band: str | None = None) -> xr.DataArray:
    """NDVI, resolving common names (``nir``, ``red``) to band names of the collections."""
    from openeo_processes_dask.process_implementations.cubes.indices import ndvi as _ndvi

    available = [str(b) for b in data["bands"].values]
    by_common = {b.common_name: b.name for spec in COLLECTIONS.values() for b in spec.bands if b.common_name}

    def resolve(name: str) -> str:
        if name in available:
            return name
        for label in available:
            if by_common.get(name) in (label, label.rsplit("-", 1)[-1]):
                return label
        raise ProcessParameterInvalid(f"ndvi: band {name!r} not found; bands: {available}.")

    return _ndvi(data, nir=resolve(nir), red=resolve(red), target_band=target_band)


_RESAMPLING = {"near": "nearest", "nearest": "nearest", "bilinear": "bilinear", "cubic": "cubic",
               "cubicspline": "cubic_spline", "lanczos": "lanczos", "average": "average",
               "mode": "mode", "max": "max", "min": "min", "med": "med", "q1": "q1", "q3": "q3",
               "sum": "sum", "rms": "rms"}


def _reproject(data: xr.DataArray, **kwargs: Any) -> xr.DataArray:
    """rioxarray reprojection of a cube with any leading dims (flattened into one)."""
    lead = [d for d in data.dims if d not in ("y", "x")]
    nodata = 0 if data.dtype.kind in "ui" else np.nan
    ordered = data.transpose(*lead, "y", "x")
    n = int(np.prod([data.sizes[d] for d in lead])) if lead else 1
    flat = xr.DataArray(ordered.values.reshape(n, data.sizes["y"], data.sizes["x"]),
                        dims=("_z", "y", "x"), coords={"y": data["y"].values, "x": data["x"].values})
    flat = flat.rio.write_crs(data.rio.crs).rio.write_nodata(nodata)
    out = flat.rio.reproject(nodata=nodata, **kwargs)
    values = out.values.reshape(*[data.sizes[d] for d in lead], out.sizes["y"], out.sizes["x"])
    coords = {d: data[d].values for d in lead if d in data.coords}
    coords.update(y=out["y"].values, x=out["x"].values)
    result = xr.DataArray(values, dims=(*lead, "y", "x"), coords=coords).transpose(*data.dims)
    return result.rio.write_crs(out.rio.crs)


def resample_spatial(data: xr.DataArray, resolution: Any = 0, projection: Any = None,
                     method: str = "near", align: str = "upper-left") -> xr.DataArray:
    """Change resolution and/or projection (rasterio warping, ``method`` as in openEO)."""
    from rasterio.enums import Resampling

    src = cube_epsg(data)
    if src is None:
        raise ProcessParameterInvalid("resample_spatial: the data cube has no CRS.")
    try:
        dst = pyproj.CRS.from_user_input(projection) if projection not in (None, "") else pyproj.CRS.from_epsg(src)
    except pyproj.exceptions.CRSError:
        raise ProcessParameterInvalid(f"resample_spatial: unknown projection {projection!r}.") from None
    res = resolution if isinstance(resolution, (list, tuple)) else [resolution, resolution]
    if any(not isinstance(r, (int, float)) or r < 0 for r in res):
        raise ProcessParameterInvalid(f"resample_spatial: invalid resolution {resolution!r}.")
    if method not in _RESAMPLING:
        raise ProcessParameterInvalid(f"resample_spatial: unknown method {method!r}.")
    same_crs = dst.to_epsg() == src
    if same_crs and (res[0] in (0, GRID)) and (res[1] in (0, GRID)):
        return data
    kwargs: dict = {"resampling": getattr(Resampling, _RESAMPLING[method])}
    if same_crs:
        # Keep the grid anchored on multiples of the new resolution.
        from rasterio.transform import from_origin

        rx, ry = (float(r) if r else GRID for r in res)
        xs, ys = data["x"].values, data["y"].values
        west = np.floor((xs.min() - GRID / 2) / rx) * rx
        north = np.ceil((ys.max() + GRID / 2) / ry) * ry
        width = int(np.ceil((xs.max() + GRID / 2 - west) / rx))
        height = int(np.ceil((north - (ys.min() - GRID / 2)) / ry))
        kwargs.update(transform=from_origin(west, north, rx, ry), shape=(height, width))
    elif res[0]:
        kwargs["resolution"] = tuple(float(r) for r in res)
    return _reproject(data, dst_crs=dst, **kwargs)


def merge_cubes(cube1: Any, cube2: Any, overlap_resolver: Callable | None = None,
                context: Any = None) -> Any:
    """Merge two cubes; disjoint band sets are stacked on the union of dates and pixels."""
    from openeo_processes_dask.process_implementations.cubes.merge import merge_cubes as _merge

    if (isinstance(cube1, xr.DataArray) and isinstance(cube2, xr.DataArray)
            and "bands" in cube1.dims and "bands" in cube2.dims and set(cube1.dims) == set(cube2.dims)
            and not set(cube1["bands"].values.tolist()) & set(cube2["bands"].values.tolist())):
        epsg = cube_epsg(cube1)
        if cube_epsg(cube2) != epsg:
            cube2 = _reproject(cube2.transpose(*cube1.dims), dst_crs=pyproj.CRS.from_epsg(epsg),
                               transform=cube1.rio.transform(), shape=(cube1.sizes["y"], cube1.sizes["x"]))
        ints = cube1.dtype.kind in "ui" and cube2.dtype.kind in "ui"
        a, b = xr.align(cube1.drop_vars("spatial_ref", errors="ignore"),
                        cube2.drop_vars("spatial_ref", errors="ignore").transpose(*cube1.dims),
                        join="outer", exclude=["bands"], fill_value=0 if ints else np.nan)
        dtype = np.result_type(a.dtype, b.dtype)
        merged = xr.concat([a.astype(dtype), b.astype(dtype)], dim="bands")
        merged.attrs = {}
        return merged.rio.write_crs(f"EPSG:{epsg}")
    return _merge(cube1, cube2, overlap_resolver=overlap_resolver, context=context)


def apply_dimension(data: xr.DataArray, process: Callable, dimension: str,
                    target_dimension: str | None = None, context: Any = None) -> xr.DataArray:
    """processes-dask's ``apply_dimension``, keeping the labels when their number is unchanged."""
    from openeo_processes_dask.process_implementations.cubes.apply import apply_dimension as _apply_dim

    out = _apply_dim(data, process, dimension, target_dimension=target_dimension, context=context)
    if (target_dimension in (None, dimension) and dimension in out.dims and dimension in data.coords
            and out.sizes[dimension] == data.sizes[dimension]):
        out = out.assign_coords({dimension: data[dimension].values})
    return out


def aggregate_temporal_period(data: xr.DataArray, period: str, reducer: Callable,
                              dimension: str | None = None, context: Any = None) -> xr.DataArray:
    """processes-dask's ``aggregate_temporal_period``, labelled by period start (openEO style)."""
    from openeo_processes_dask.process_implementations.cubes.aggregate import \
        aggregate_temporal_period as _atp

    out = _atp(data, reducer=reducer, period=period, dimension=dimension)
    dim = dimension or "t"
    if dim in out.dims and np.issubdtype(out[dim].dtype, np.datetime64) and period in ("month", "year"):
        t = pd.to_datetime(out[dim].values)
        starts = t.to_period("M" if period == "month" else "Y").to_timestamp()
        out = out.assign_coords({dim: starts.values})
    return out

