"""File writers of the embedded backend (NetCDF, GTiff, JSON, CSV) and what they report.

Writers are deterministic: the same cube gives the same bytes (no timestamps or history
attributes). NetCDF files follow what CDSE batch jobs deliver: dims ``t, y, x``, one variable
per band (uint16 kept when lossless), a CF grid-mapping variable ``crs`` with ``crs_wkt`` and
``spatial_ref`` referenced by every band's ``grid_mapping``.
"""

from __future__ import annotations

import csv
import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj
import xarray as xr

from eoextract._util.utc import as_utc
from eoextract.backend._api_errors import ProcessParameterInvalid
from eoextract.backend._collection_metadata import band_metadata
from eoextract.backend._geometry import cube_epsg
from eoextract.backend._synthetic_collections import COLLECTIONS

#: Serialises NetCDF writes of jobs running in threads of one process.
_NETCDF_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Raster helpers


def grid_metadata(cube: xr.DataArray, epsg: int | None = None) -> dict:
    """Grid metadata of a cube: epsg, shape, transform, bboxes, footprint."""
    xs, ys = cube["x"].values.astype(float), cube["y"].values.astype(float)
    rx = abs(float(xs[1] - xs[0])) if xs.size > 1 else 10.0
    ry = abs(float(ys[1] - ys[0])) if ys.size > 1 else 10.0
    west, east = float(xs.min()) - rx / 2, float(xs.max()) + rx / 2
    south, north = float(ys.min()) - ry / 2, float(ys.max()) + ry / 2
    epsg = epsg if epsg is not None else cube_epsg(cube)
    out: dict = {"epsg": epsg, "shape": (int(ys.size), int(xs.size)),
                 "transform": [rx, 0.0, west, 0.0, -ry, north],
                 "bbox_native": [west, south, east, north]}
    if epsg is not None:
        tr = pyproj.Transformer.from_crs(epsg, 4326, always_xy=True)
        ring = [(west, south), (east, south), (east, north), (west, north), (west, south)]
        ll = [tuple(round(v, 7) for v in tr.transform(x, y)) for x, y in ring]
        out["geometry_4326"] = {"type": "Polygon", "coordinates": [[list(p) for p in ll]]}
        lons, lats = [p[0] for p in ll], [p[1] for p in ll]
        out["bbox_4326"] = [min(lons), min(lats), max(lons), max(lats)]
    return out


def date_range(cube: xr.DataArray) -> tuple[datetime | None, datetime | None]:
    """First and last date of a cube's ``t`` dimension (None, None without dates)."""
    if "t" not in cube.dims or cube.sizes["t"] == 0 or not np.issubdtype(cube["t"].dtype, np.datetime64):
        return None, None
    t = pd.to_datetime(cube["t"].values)
    return as_utc(t.min().to_pydatetime()), as_utc(t.max().to_pydatetime())


def _band_names(cube: xr.DataArray) -> list[str]:
    if "bands" in cube.dims:
        return [str(b) for b in cube["bands"].values]
    return [str(cube.name) if cube.name else "band_0"]


def _storage(values: np.ndarray) -> tuple[np.ndarray, str, float | int | None]:
    """Values to store, their dtype name and nodata: integers kept, integral floats -> uint16."""
    if values.dtype.kind in "ui":
        return values, values.dtype.name, 0
    if values.dtype.kind == "b":
        return values.astype(np.uint8), "uint8", None
    finite = np.isfinite(values)
    vals = values[finite]
    if vals.size and np.all(vals == np.round(vals)) and vals.min() >= 1 and vals.max() <= 65535:
        return np.where(finite, values, 0).astype(np.uint16), "uint16", 0
    return values.astype(np.float32), "float32", float("nan")


def _stats(values: np.ndarray, nodata: Any) -> dict:
    v = values.astype(np.float64)
    valid = np.isfinite(v) if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)) \
        else (v != nodata) & np.isfinite(v)
    good = v[valid]
    if not good.size:
        return {"valid_percent": 0.0}
    return {"minimum": float(good.min()), "maximum": float(good.max()), "mean": float(good.mean()),
            "stddev": float(good.std()), "valid_percent": round(100.0 * good.size / max(v.size, 1), 4)}


def band_entry(name: str, dtype: str, nodata: Any, stats: dict) -> dict:
    """Description of one written band: collection metadata, data type, nodata, statistics."""
    meta = dict(band_metadata(COLLECTIONS["SENTINEL2_L2A"], name))
    if len(meta) == 1:
        meta = dict(band_metadata(COLLECTIONS["SENTINEL1_GRD"], name))
    meta.pop("gsd", None)
    meta.pop("description", None)
    meta["data_type"] = dtype
    meta["nodata"] = None if isinstance(nodata, float) and np.isnan(nodata) else nodata
    if isinstance(nodata, float) and np.isnan(nodata):
        meta["nodata"] = "nan"
    meta["statistics"] = stats
    return meta


def raster_cube(data: Any) -> xr.DataArray:
    """``data`` as a raster cube with dims ordered ``(t, bands, y, x)``.

    Raises:
        ProcessParameterInvalid: For anything else, or an empty cube.
    """
    if not isinstance(data, xr.DataArray) or "x" not in data.dims or "y" not in data.dims:
        raise ProcessParameterInvalid(
            "This output format needs a raster data cube with x and y dimensions."
        )
    extra = [d for d in data.dims if d not in ("t", "bands", "y", "x")]
    if extra:
        raise ProcessParameterInvalid(f"Cannot write a raster cube with extra dimensions {extra}.")
    if data.size == 0:
        raise ProcessParameterInvalid("The data cube to save is empty.")
    order = [d for d in ("t", "bands", "y", "x") if d in data.dims]
    return data.transpose(*order)


# --------------------------------------------------------------------------------------------
# Writers


def cf_crs_attrs(epsg: int) -> dict:
    """CF grid-mapping attributes of an EPSG CRS, with ``crs_wkt`` and ``spatial_ref``."""
    crs = pyproj.CRS.from_epsg(epsg)
    attrs = {k: v for k, v in crs.to_cf().items() if isinstance(v, (str, int, float))}
    attrs["crs_wkt"] = attrs["spatial_ref"] = crs.to_wkt()
    return attrs


def _crs_variable(epsg: int | None) -> xr.DataArray:
    return xr.DataArray(np.int32(0), attrs=cf_crs_attrs(epsg) if epsg is not None else {})


def write_netcdf(cube: xr.DataArray, path: Path) -> list[dict]:
    """Write ``cube`` as CF NetCDF; returns the band descriptions."""
    cube = raster_cube(cube)
    epsg = cube_epsg(cube)
    names = _band_names(cube)
    variables: dict[str, xr.DataArray] = {}
    encoding: dict[str, dict] = {}
    bands = []
    spatial = [d for d in ("t", "y", "x") if d in cube.dims]
    for i, name in enumerate(names):
        values = cube.isel(bands=i).values if "bands" in cube.dims else cube.values
        stored, dtype, nodata = _storage(np.asarray(values))
        attrs = {"grid_mapping": "crs"}
        enc: dict = {"zlib": True, "complevel": 4, "dtype": dtype}
        if dtype == "uint16":
            enc["_FillValue"] = np.uint16(0)
        elif dtype == "float32":
            enc["_FillValue"] = np.float32(np.nan)
        else:
            enc["_FillValue"] = None
        variables[name] = xr.DataArray(stored, dims=spatial, attrs=attrs)
        encoding[name] = enc
        bands.append(band_entry(name, dtype, nodata, _stats(stored, nodata)))
    geographic = epsg is not None and pyproj.CRS.from_epsg(epsg).is_geographic
    x_attrs = ({"standard_name": "longitude", "units": "degrees_east"} if geographic else
               {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of projection", "units": "m"})
    y_attrs = ({"standard_name": "latitude", "units": "degrees_north"} if geographic else
               {"standard_name": "projection_y_coordinate", "long_name": "y coordinate of projection", "units": "m"})
    coords: dict = {"x": ("x", cube["x"].values.astype(np.float64), x_attrs),
                    "y": ("y", cube["y"].values.astype(np.float64), y_attrs)}
    if "t" in cube.dims and np.issubdtype(cube["t"].dtype, np.datetime64):
        t = pd.to_datetime(cube["t"].values)
        coords["t"] = ("t", t.values, {"standard_name": "time", "axis": "T"})
        whole_days = bool(np.all(t == t.normalize()))
        encoding["t"] = {"units": f"{'days' if whole_days else 'seconds'} since 1990-01-01",
                         "calendar": "standard", "dtype": "int32" if whole_days else "int64"}
    elif "t" in cube.dims:
        coords["t"] = ("t", np.asarray(cube["t"].values))
    ds = xr.Dataset(variables, coords=coords)
    ds["crs"] = _crs_variable(epsg)
    ds.attrs = {"Conventions": "CF-1.9", "source": "eoextract embedded openEO backend (synthetic data)"}
    for c in ("x", "y"):
        encoding[c] = {"_FillValue": None}
    with _NETCDF_LOCK:  # netCDF-C/HDF5 are not thread-safe; jobs may run in threads
        ds.to_netcdf(path, engine="netcdf4", encoding=encoding, format="NETCDF4")
    return bands


def write_gtiff(cube: xr.DataArray, path: Path) -> list[dict]:
    """Write a single-date cube as a GeoTIFF, one raster band per cube band."""
    import rasterio
    from rasterio.transform import Affine

    cube = raster_cube(cube)
    if "t" in cube.dims:
        cube = cube.isel(t=0)
    names = _band_names(cube)
    arr = cube.values if "bands" in cube.dims else cube.values[None]
    stored, dtype, nodata = _storage(np.asarray(arr))
    geo = grid_metadata(cube)
    profile = {
        "driver": "GTiff", "width": geo["shape"][1], "height": geo["shape"][0], "count": len(names),
        "dtype": dtype, "crs": f"EPSG:{geo['epsg']}" if geo["epsg"] else None,
        "transform": Affine(*geo["transform"]), "compress": "deflate", "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(stored)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return [band_entry(n, dtype, nodata, _stats(stored[i], nodata)) for i, n in enumerate(names)]


def _jsonable(values: np.ndarray) -> Any:
    arr = np.asarray(values, dtype=np.float64)
    return [None if not np.isfinite(v) else (int(v) if v == int(v) else float(v)) for v in arr.ravel()] \
        if arr.ndim <= 1 else [_jsonable(a) for a in arr]


def _iso(t: Any) -> str:
    return pd.Timestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(t, (np.datetime64, datetime)) else str(t)


def write_json(data: Any, path: Path) -> None:
    """Vector results as ``{date: [[band values] per geometry]}``; other data as plain JSON."""
    if isinstance(data, xr.DataArray) and "geometry" in data.dims:
        cube = data.transpose("geometry", *[d for d in ("t", "bands") if d in data.dims])
        if "t" in cube.dims:
            doc = {_iso(t): _jsonable(cube.isel(t=i).values if "bands" in cube.dims
                                      else cube.isel(t=i).values[:, None])
                   for i, t in enumerate(cube["t"].values)}
        else:
            doc = _jsonable(cube.values if "bands" in cube.dims else cube.values[:, None])
    elif isinstance(data, xr.DataArray):
        doc = {"dims": list(data.dims),
               "coords": {d: [_iso(v) if np.issubdtype(data[d].dtype, np.datetime64) else
                              (v.item() if hasattr(v, "item") else v) for v in data[d].values]
                          for d in data.dims if d in data.coords},
               "data": _jsonable(data.values)}
    else:
        doc = data.to_dict() if hasattr(data, "to_dict") else data
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, default=str) + "\n")


def write_csv(data: Any, path: Path) -> None:
    """Vector results as rows ``date, feature_index, <band>...``."""
    if not (isinstance(data, xr.DataArray) and "geometry" in data.dims):
        raise ProcessParameterInvalid("CSV output needs a vector result (e.g. from aggregate_spatial).")
    cube = data.transpose("geometry", *[d for d in ("t", "bands") if d in data.dims])
    bands = [str(b) for b in cube["bands"].values] if "bands" in cube.dims else ["value"]
    times = cube["t"].values if "t" in cube.dims else [None]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["date", "feature_index", *bands])
        for ti, t in enumerate(times):
            sub = cube.isel(t=ti) if t is not None else cube
            for gi in range(sub.sizes["geometry"]):
                row = np.atleast_1d(sub.isel(geometry=gi).values)
                w.writerow([_iso(t) if t is not None else "", gi,
                            *("" if not np.isfinite(v) else repr(float(v)) for v in row)])
