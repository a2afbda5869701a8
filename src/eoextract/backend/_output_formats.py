"""Output formats of the embedded backend and ``save_result``: which files a result becomes.

Formats are NetCDF, GTiff, JSON and CSV (:mod:`eoextract.backend._file_writers` writes them);
each written file is described by a :class:`ResultAsset`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from eoextract.backend._api_errors import FormatUnsupported, ProcessParameterInvalid
from eoextract.backend._file_writers import (
    date_range,
    grid_metadata,
    raster_cube,
    write_csv,
    write_gtiff,
    write_json,
    write_netcdf,
)
from eoextract.backend._geometry import cube_epsg

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


def _asset(path: Path, fmt: str, cube: xr.DataArray | None, bands: list[dict],
           feature_index: int | None) -> ResultAsset:
    asset = ResultAsset(name=path.name, path=path, media_type=MEDIA_TYPES[fmt], bands=bands,
                        feature_index=feature_index)
    if cube is not None and "x" in cube.dims:
        for k, v in grid_metadata(cube).items():
            setattr(asset, k, v)
        asset.start_datetime, asset.end_datetime = date_range(cube)
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
    return _write_document(cube, fmt, stem, out_dir, feature_index)


def _write_document(data: Any, fmt: str, stem: str, out_dir: Path,
                    feature_index: int | None) -> list[ResultAsset]:
    """Write ``data`` as JSON or CSV (a cube, a vector result or plain data)."""
    if fmt not in ("json", "csv"):
        raise ProcessParameterInvalid(f"Cannot write a {type(data).__name__} result as {fmt}.")
    path = out_dir / f"{stem}.{EXTENSIONS[fmt]}"
    (write_json if fmt == "json" else write_csv)(data, path)
    cube = data if isinstance(data, xr.DataArray) else None
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
        raster_cube(data)
    prefix = _safe_name(options.get("filename_prefix") or "openEO")
    if not by_feature:
        return _write_raster(data, fmt, prefix, out_dir, None) if isinstance(data, xr.DataArray) \
            else _write_document(data, fmt, prefix, out_dir, None)
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
    epsg = cube_epsg(data)
    for i, (_, row) in enumerate(ctx.geometries.to_crs(epsg).iterrows()):
        ctx.check_canceled()
        w, s, e, n = row.geometry.bounds
        xs, ys = data["x"].values, data["y"].values
        sub = data.isel(x=np.flatnonzero((xs + 5 > w) & (xs - 5 < e)),
                        y=np.flatnonzero((ys + 5 > s) & (ys - 5 < n)))
        if sub.sizes["x"] and sub.sizes["y"]:
            out.extend(_write_raster(sub, fmt, stem(i, row), out_dir, i))
    return out
