"""Output formats of the embedded backend: NetCDF, GTiff, JSON and CSV writers.

Writers are deterministic: the same cube gives the same bytes (no timestamps or history
attributes). NetCDF files follow what CDSE batch jobs deliver: dims ``t, y, x``, one variable
per band (uint16 kept when lossless), a CF grid-mapping variable ``crs`` with ``crs_wkt`` and
``spatial_ref`` referenced by every band's ``grid_mapping``.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyproj
import xarray as xr

from eoextract.backend._api_errors import FormatUnsupported, ProcessParameterInvalid
from eoextract.backend._collection_metadata import band_metadata
from eoextract.backend._synthetic_collections import COLLECTIONS


logger = logging.getLogger(__name__)

MEDIA_TYPES = {
    "netcdf": "application/x-netcdf",
    "gtiff": "image/tiff; application=geotiff",
    "json": "application/json",
    "csv": "text/csv",
}
EXTENSIONS = {"netcdf": "nc", "gtiff": "tif", "json": "json", "csv": "csv"}
_ALIASES = {
    "netcdf": "netcdf", "nc": "netcdf", "netcdf4": "netcdf",
    "gtiff": "gtiff", "geotiff": "gtiff", "tiff": "gtiff", "tif": "gtiff",
    "json": "json", "csv": "csv",
}

#: Serialises NetCDF writes of jobs running in threads of one process.
_NETCDF_LOCK = threading.Lock()


@dataclass
class ResultAsset:
    """One result file of an execution, with the metadata the STAC renderer needs.

    Attributes:
        name: File name, e.g. ``openEO_0.nc`` or ``openEO.nc``.
        path: Where the file was written.
        media_type: IANA media type.
        roles: STAC asset roles.
        epsg: Native CRS EPSG code.
        shape: ``(rows, cols)`` of the raster.
        transform: Affine transform, 6 numbers in rasterio order.
        bbox_native: ``[minx, miny, maxx, maxy]`` in the native CRS.
        bbox_4326: Bounding box in EPSG:4326.
        geometry_4326: GeoJSON polygon of the footprint in EPSG:4326.
        start_datetime: First date in the file.
        end_datetime: Last date in the file.
        bands: Band descriptions with statistics.
        feature_index: Input feature the file belongs to (``sample_by_feature``), else None.
    """

    name: str
    path: Path
    media_type: str
    roles: list[str] = field(default_factory=lambda: ["data"])
    epsg: int | None = None
    shape: tuple[int, int] | None = None
    transform: list[float] | None = None
    bbox_native: list[float] | None = None
    bbox_4326: list[float] | None = None
    geometry_4326: dict | None = None
    start_datetime: datetime | None = None
    end_datetime: datetime | None = None
    bands: list[dict] = field(default_factory=list)
    feature_index: int | None = None


def normalize_format(name: Any) -> str:
    """Canonical format key (``netcdf``, ``gtiff``, ``json``, ``csv``).

    Raises:
        FormatUnsupported: For anything else.
    """
    key = _ALIASES.get(str(name).strip().lower())
    if key is None:
        raise FormatUnsupported(
            f"Output format {name!r} is not supported; use one of NetCDF, GTiff, JSON, CSV."
        )
    return key


def file_formats() -> dict:
    """The ``GET /file_formats`` document."""
    raster = ["raster"]
    out = {
        "netCDF": {"title": "Network Common Data Form", "gis_data_types": raster,
                   "parameters": {"sample_by_feature": {
                       "type": "boolean", "default": False,
                       "description": "One file per input feature (openEO_<i>.nc)."}}},
        "GTiff": {"title": "GeoTiff", "gis_data_types": raster,
                  "parameters": {"sample_by_feature": {"type": "boolean", "default": False,
                                                       "description": "One file per feature."}}},
        "JSON": {"title": "JavaScript Object Notation", "gis_data_types": ["raster", "vector", "other"],
                 "parameters": {}},
        "CSV": {"title": "Comma Separated Values", "gis_data_types": ["vector", "table"],
                "parameters": {}},
    }
    inputs = {
        "GeoJSON": {"title": "GeoJSON", "gis_data_types": ["vector"], "parameters": {}},
        "JSON": {"title": "JSON", "gis_data_types": ["other"], "parameters": {}},
        "Parquet": {"title": "GeoParquet", "gis_data_types": ["vector"], "parameters": {}},
    }
    return {"input": inputs, "output": out}


# --------------------------------------------------------------------------------------------
# Raster helpers


def _epsg(cube: xr.DataArray) -> int | None:
    import rioxarray  # noqa: F401 - registers the .rio accessor

    try:
        crs = cube.rio.crs
    except Exception:
        return None
    return crs.to_epsg() if crs is not None else None


def _geo(cube: xr.DataArray, epsg: int | None = None) -> dict:
    """Grid metadata of a cube: epsg, shape, transform, bboxes, footprint."""
    xs, ys = cube["x"].values.astype(float), cube["y"].values.astype(float)
    rx = abs(float(xs[1] - xs[0])) if xs.size > 1 else 10.0
    ry = abs(float(ys[1] - ys[0])) if ys.size > 1 else 10.0
    west, east = float(xs.min()) - rx / 2, float(xs.max()) + rx / 2
    south, north = float(ys.min()) - ry / 2, float(ys.max()) + ry / 2
    epsg = epsg if epsg is not None else _epsg(cube)
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


def _dates(cube: xr.DataArray) -> tuple[datetime | None, datetime | None]:
    if "t" not in cube.dims or cube.sizes["t"] == 0 or not np.issubdtype(cube["t"].dtype, np.datetime64):
        return None, None
    t = pd.to_datetime(cube["t"].values)
    return (t.min().to_pydatetime().replace(tzinfo=timezone.utc),
            t.max().to_pydatetime().replace(tzinfo=timezone.utc))


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


def _band_entry(name: str, dtype: str, nodata: Any, stats: dict) -> dict:
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


def _raster_cube(data: Any) -> xr.DataArray:
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


def _crs_variable(epsg: int | None) -> xr.DataArray:
    attrs: dict = {}
    if epsg is not None:
        crs = pyproj.CRS.from_epsg(epsg)
        attrs = {k: v for k, v in crs.to_cf().items() if isinstance(v, (str, int, float))}
        wkt = crs.to_wkt()
        attrs["crs_wkt"] = wkt
        attrs["spatial_ref"] = wkt
    return xr.DataArray(np.int32(0), attrs=attrs)


def write_netcdf(cube: xr.DataArray, path: Path) -> list[dict]:
    """Write ``cube`` as CF NetCDF; returns the band descriptions."""
    cube = _raster_cube(cube)
    epsg = _epsg(cube)
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
        bands.append(_band_entry(name, dtype, nodata, _stats(stored, nodata)))
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

    cube = _raster_cube(cube)
    if "t" in cube.dims:
        cube = cube.isel(t=0)
    names = _band_names(cube)
    arr = cube.values if "bands" in cube.dims else cube.values[None]
    stored, dtype, nodata = _storage(np.asarray(arr))
    geo = _geo(cube)
    profile = {
        "driver": "GTiff", "width": geo["shape"][1], "height": geo["shape"][0], "count": len(names),
        "dtype": dtype, "crs": f"EPSG:{geo['epsg']}" if geo["epsg"] else None,
        "transform": Affine(*geo["transform"]), "compress": "deflate", "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(stored)
        for i, name in enumerate(names, start=1):
            dst.set_band_description(i, name)
    return [_band_entry(n, dtype, nodata, _stats(stored[i], nodata)) for i, n in enumerate(names)]


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


# --------------------------------------------------------------------------------------------
# save_result


def _asset(path: Path, fmt: str, cube: xr.DataArray | None, bands: list[dict],
           feature_index: int | None) -> ResultAsset:
    asset = ResultAsset(name=path.name, path=path, media_type=MEDIA_TYPES[fmt], bands=bands,
                        feature_index=feature_index)
    if cube is not None and "x" in cube.dims:
        for k, v in _geo(cube).items():
            setattr(asset, k, v)
        asset.start_datetime, asset.end_datetime = _dates(cube)
    return asset


def _write_raster(cube: xr.DataArray, fmt: str, stem: str, out_dir: Path,
                  feature_index: int | None) -> list[ResultAsset]:
    if fmt == "netcdf":
        path = out_dir / f"{stem}.nc"
        return [_asset(path, fmt, cube, write_netcdf(cube, path), feature_index)]
    if fmt == "gtiff":
        if "t" in cube.dims and cube.sizes["t"] > 1:
            out = []
            for i, t in enumerate(cube["t"].values):
                sub = cube.isel(t=[i])
                label = f"{pd.Timestamp(t):%Y-%m-%dZ}" if np.issubdtype(cube["t"].dtype, np.datetime64) else str(t)
                path = out_dir / f"{stem}_{_safe_name(label)}.tif"
                out.append(_asset(path, fmt, sub, write_gtiff(sub, path), feature_index))
            return out
        path = out_dir / f"{stem}.tif"
        return [_asset(path, fmt, cube, write_gtiff(cube, path), feature_index)]
    path = out_dir / f"{stem}.{EXTENSIONS[fmt]}"
    if fmt == "json":
        write_json(cube, path)
    else:
        write_csv(cube, path)
    return [_asset(path, fmt, cube, [], feature_index)]


def _safe_name(value: Any) -> str:
    """A file-name part without path separators or leading dots."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).lstrip(".")
    return name[:100] or "_"


def save(data: Any, format: str, options: dict, ctx: Any) -> list[ResultAsset]:  # noqa: A002
    """Write ``data`` in ``format`` into ``ctx.out_dir``; implements ``save_result``.

    With ``options["sample_by_feature"]`` one file per input feature is written
    (``openEO_<i>.<ext>``), cropped to the feature's bounding box on the cube's grid.
    """
    fmt = normalize_format(format)
    out_dir = Path(ctx.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_feature = bool(options.get("sample_by_feature")) and isinstance(data, xr.DataArray) \
        and "x" in data.dims
    if fmt in ("netcdf", "gtiff"):
        _raster_cube(data)
    prefix = _safe_name(options.get("filename_prefix") or "openEO")
    if not by_feature:
        return _write_raster(data, fmt, prefix, out_dir, None) if isinstance(data, xr.DataArray) \
            else _write_other(data, fmt, out_dir, prefix)
    id_prop = options.get("feature_id_property")

    def stem(i: int, row: Any) -> str:
        value = row.get(id_prop) if id_prop and row is not None else None
        return f"{prefix}_{_safe_name(value) if value is not None and str(value) else i}"

    if ctx.feature_index is not None:
        row = ctx.geometries.iloc[0] if ctx.geometries is not None and len(ctx.geometries) == 1 else None
        return _write_raster(data, fmt, stem(ctx.feature_index, row), out_dir, ctx.feature_index)
    if ctx.geometries is None:
        raise ProcessParameterInvalid(
            "sample_by_feature needs geometries (a GeoJSON spatial_extent or filter_spatial)."
        )
    out = []
    epsg = _epsg(data)
    for i, (_, row) in enumerate(ctx.geometries.to_crs(epsg).iterrows()):
        ctx.check_canceled()
        w, s, e, n = row.geometry.bounds
        xs, ys = data["x"].values, data["y"].values
        sub = data.isel(x=np.flatnonzero((xs + 5 > w) & (xs - 5 < e)),
                        y=np.flatnonzero((ys + 5 > s) & (ys - 5 < n)))
        if sub.sizes["x"] and sub.sizes["y"]:
            out.extend(_write_raster(sub, fmt, stem(i, row), out_dir, i))
    return out


def _write_other(data: Any, fmt: str, out_dir: Path, prefix: str = "openEO") -> list[ResultAsset]:
    if fmt not in ("json", "csv"):
        raise ProcessParameterInvalid(f"Cannot write a {type(data).__name__} result as {fmt}.")
    path = out_dir / f"{prefix}.{EXTENSIONS[fmt]}"
    if fmt == "json":
        write_json(data, path)
    else:
        write_csv(data, path)
    return [_asset(path, fmt, None, [], None)]


#: Grid of the instant result: UTM 31N, upper-left corner of its 2x2 pixels of 10 m.
_INSTANT_EPSG = 32631
_INSTANT_ORIGIN = (600000.0, 5700000.0)


def write_instant_result(out_dir: Path) -> list[ResultAsset]:
    """Write a tiny valid NetCDF (1 band, 2x2 px, 1 date, ``crs`` variable) computing nothing.

    Uses the raw netCDF4 API so it stays in the millisecond range.
    """
    import netCDF4

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "openEO.nc"
    x0, y0 = _INSTANT_ORIGIN
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.Conventions = "CF-1.9"
        for dim, size in (("t", 1), ("y", 2), ("x", 2)):
            nc.createDimension(dim, size)
        t = nc.createVariable("t", "i4", ("t",))
        t.units, t.calendar, t.standard_name = "days since 1990-01-01", "standard", "time"
        t[:] = [12053]  # 2023-01-01
        x = nc.createVariable("x", "f8", ("x",))
        x.standard_name, x.units = "projection_x_coordinate", "m"
        x[:] = [x0 + 5, x0 + 15]
        y = nc.createVariable("y", "f8", ("y",))
        y.standard_name, y.units = "projection_y_coordinate", "m"
        y[:] = [y0 - 5, y0 - 15]
        crs = nc.createVariable("crs", "i4")
        for k, v in _INSTANT_CRS_ATTRS.items():
            crs.setncattr(k, v)
        b = nc.createVariable("B04", "u2", ("t", "y", "x"), fill_value=0)
        b.grid_mapping = "crs"
        b[:] = np.array([[[100, 200], [300, 400]]], dtype=np.uint16)
    geo = copy.deepcopy(_instant_geo())
    day = datetime(2023, 1, 1, tzinfo=timezone.utc)
    stats = {"minimum": 100.0, "maximum": 400.0, "mean": 250.0, "stddev": 111.80339887498948,
             "valid_percent": 100.0}
    return [ResultAsset(name=path.name, path=path, media_type=MEDIA_TYPES["netcdf"],
                        start_datetime=day, end_datetime=day,
                        bands=[_band_entry("B04", "uint16", 0, stats)], **geo)]


@cache
def _instant_geo() -> dict:
    x0, y0 = _INSTANT_ORIGIN
    cube = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"),
                        coords={"x": [x0 + 5, x0 + 15], "y": [y0 - 5, y0 - 15]})
    return _geo(cube, epsg=_INSTANT_EPSG)


def _instant_crs_attrs() -> dict:
    crs = pyproj.CRS.from_epsg(_INSTANT_EPSG)
    attrs = {k: v for k, v in crs.to_cf().items() if isinstance(v, (str, int, float))}
    attrs["crs_wkt"] = attrs["spatial_ref"] = crs.to_wkt()
    return attrs


_INSTANT_CRS_ATTRS = _instant_crs_attrs()
