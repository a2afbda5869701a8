"""Vector processes of the embedded backend: vector cubes from loopback URLs and inline GeoJSON,
and zonal statistics (``aggregate_spatial``) from a raster cube to one value per geometry.

Vector cubes are ``geopandas.GeoDataFrame`` objects (see :mod:`eoextract.backend._geometry`).
"""

from __future__ import annotations

import copy
import io
import json
import re
from collections.abc import Callable
from typing import Any
import geopandas as gpd
import numpy as np
import xarray as xr

from eoextract._util.redact import redact
from eoextract.backend._api_errors import FormatUnsupported, ProcessParameterInvalid
from eoextract.backend._execution_context import current_context
from eoextract.backend._geometry import cube_epsg, geometry_mask_of, to_geodataframe
from eoextract.backend._loopback import UrlNotAllowed, check_loopback_url, get_loopback


def load_url(url: str, format: str = "GeoJSON", options: dict | None = None) -> Any:  # noqa: A002
    """Read a GeoJSON, JSON or GeoParquet file from a loopback URL (``127.0.0.1``/``localhost``).

    Redirects are followed only while they stay on loopback hosts.
    """
    import requests

    try:
        check_loopback_url(url)
    except UrlNotAllowed as exc:
        raise ProcessParameterInvalid(f"load_url only reads loopback http URLs on this backend: {exc}.") from None
    fmt = str(format).lower()
    shown = redact(url)  # signed URLs: no query string values in messages
    ctx = current_context()
    key = (url, fmt)
    if key not in ctx.url_cache:
        try:
            resp = get_loopback(url, timeout_s=30)
        except UrlNotAllowed as exc:
            raise ProcessParameterInvalid(f"load_url only reads loopback http URLs on this backend: {exc}.") from None
        except requests.RequestException as exc:
            raise ProcessParameterInvalid(f"load_url could not read {shown}: {redact(str(exc))}") from None
        if resp.status_code >= 400:
            raise ProcessParameterInvalid(f"load_url: {shown} answered HTTP {resp.status_code}"
                                          f"{_s3_reason(resp.text)}.")
        if fmt in ("geojson", "json"):
            try:
                doc = resp.json()
            except ValueError:
                raise ProcessParameterInvalid(f"load_url: {shown} is not valid JSON.") from None
            ctx.url_cache[key] = doc if fmt == "json" else to_geodataframe(doc)
        elif fmt in ("parquet", "geoparquet"):
            try:
                ctx.url_cache[key] = gpd.read_parquet(io.BytesIO(resp.content))
            except Exception as exc:
                raise ProcessParameterInvalid(f"load_url: cannot read GeoParquet from {shown}: {exc}") from None
        else:
            raise FormatUnsupported(f"load_url: format {format!r} not supported (GeoJSON, JSON, Parquet).")
    value = ctx.url_cache[key]
    return value.copy() if isinstance(value, gpd.GeoDataFrame) else copy.deepcopy(value)


def _s3_reason(body: str) -> str:
    """`` (S3 <Code>: <Message>)`` from an S3 XML error body, with a hint for expired URLs."""
    code = re.search(r"<Code>([^<]{1,100})</Code>", body[:4096])
    if code is None:
        return ""
    message = re.search(r"<Message>([^<]{0,300})</Message>", body[:4096])
    reason = f" (S3 {code.group(1)}: {message.group(1) if message else ''})"
    if message and "expired" in message.group(1).lower():
        reason += ": the presigned URL has expired, create a new one"
    return reason


def load_geojson(data: dict, properties: list[str] | None = None) -> gpd.GeoDataFrame:
    """Turn inline GeoJSON into a vector cube."""
    gdf = to_geodataframe(data)
    if properties:
        gdf = gdf[[c for c in properties if c in gdf.columns] + ["geometry"]]
    return gdf


def aggregate_spatial(data: xr.DataArray, geometries: Any, reducer: Callable,
                      target_dimension: str = "result", context: Any = None) -> xr.DataArray:
    """Zonal statistics: reduce the pixels of each geometry (per date and band).

    Returns a cube with dims ``(geometry, t, bands)`` (``t`` only when present); the
    geometries (EPSG:4326 GeoJSON) are kept in ``attrs["eoextract_geometries"]``.
    """
    gdf = to_geodataframe(geometries)
    epsg = cube_epsg(data)
    if epsg is None:
        raise ProcessParameterInvalid("aggregate_spatial: the data cube has no CRS.")
    gdf_c = gdf.to_crs(epsg)
    xs, ys = data["x"].values, data["y"].values
    other = [d for d in data.dims if d not in ("y", "x")]
    arr = data.transpose(*other, "y", "x").values
    if arr.dtype.kind in "ui":
        arr = np.where(arr == 0, np.nan, arr.astype(np.float64))
    out = []
    for geom in gdf_c.geometry:
        current_context().check_canceled()
        inside = geometry_mask_of(gpd.GeoDataFrame(geometry=[geom], crs=gdf_c.crs), xs, ys)
        pixels = arr[..., inside]
        if pixels.shape[-1] == 0:
            out.append(np.full(arr.shape[:-2], np.nan))
            continue
        value = reducer(pixels, axis=-1, positional_parameters={"data": 0}, context=context)
        out.append(np.asarray(value, dtype=np.float64))
    coords = {d: data[d].values for d in other}
    coords["geometry"] = np.arange(len(gdf_c))
    result = xr.DataArray(np.stack(out), dims=("geometry", *other), coords=coords)
    result.attrs["eoextract_geometries"] = json.loads(gdf.to_crs(4326).geometry.to_json())
    return result

