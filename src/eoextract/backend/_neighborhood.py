"""``apply_neighborhood`` of the embedded backend: a child process (or UDF) per spatial chunk.

The cube is cut into chunks of ``size`` pixels in x and y (``t`` and ``bands`` whole: their
size must be null or cover the dimension), each widened by ``overlap`` pixels on every side.
The child process gets each widened chunk as a ``(t, bands, y, x)`` cube with coordinates; its
result must keep the chunk's y/x shape (bands and times may change), and the overlap is trimmed
off before the chunks are put back together.

A size that does not divide the cube is handled as production backends do on their tile grid:
edge chunks are padded to the full chunk size with no-data (NaN, or 0 for integer cubes), so the
process always sees the same shape; the padding is cut off again. A cube smaller than ``size``
is one chunk of the cube's own size (plus the overlap padding), not a full ``size`` chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr

from eoextract.backend._api_errors import ProcessParameterInvalid
from eoextract.backend._execution_context import current_context
from eoextract.backend._geometry import GRID

SPEC: dict = {
    "id": "apply_neighborhood",
    "summary": "Apply a process to pixels in a n-dimensional neighborhood",
    "description": __doc__,
    "categories": ["cubes"],
    "parameters": [
        {"name": "data", "description": "A raster data cube.",
         "schema": {"type": "object", "subtype": "datacube"}},
        {"name": "process", "description": "Process (or UDF) applied to each neighborhood.",
         "schema": {"type": "object", "subtype": "process-graph",
                    "parameters": [{"name": "data", "schema": {"type": "object", "subtype": "datacube"}},
                                   {"name": "context", "schema": {"description": "Any data type."},
                                    "optional": True, "default": None}]}},
        {"name": "size", "description": "Neighborhood sizes along each dimension (x, y in px).",
         "schema": {"type": "array", "items": {"type": "object"}}},
        {"name": "overlap", "description": "Overlap of neighborhoods (x, y in px).",
         "optional": True, "default": None,
         "schema": [{"type": "array", "items": {"type": "object"}}, {"type": "null"}]},
        {"name": "context", "description": "Additional data passed to the process.",
         "optional": True, "default": None, "schema": {"description": "Any data type."}},
    ],
    "returns": {"description": "A raster data cube with the same dimensions.",
                "schema": {"type": "object", "subtype": "datacube"}},
    "exceptions": {"DimensionNotAvailable": {"message": "A dimension with the specified name does not exist."},
                   "DataCubePropertiesImmutable": {"message": "The dimension properties (name, type, "
                                                   "labels, reference system and resolution) must "
                                                   "remain unchanged."}},
}


def _pixels(data: xr.DataArray, spec: Any, what: str) -> dict[str, int | None]:
    """``{dimension: pixels or None}`` from a ``size``/``overlap`` list."""
    out: dict[str, int | None] = {}
    for item in spec or []:
        if not isinstance(item, dict) or "dimension" not in item:
            raise ProcessParameterInvalid(f"apply_neighborhood: each {what} entry needs a 'dimension'.")
        dim, value, unit = item["dimension"], item.get("value"), item.get("unit") or "px"
        if dim not in data.dims:
            raise ProcessParameterInvalid(f"apply_neighborhood: {what} names dimension {dim!r}, the "
                                          f"cube has {list(data.dims)}.", code="DimensionNotAvailable")
        if value is None:
            out[dim] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ProcessParameterInvalid(f"apply_neighborhood: {what} of {dim} must be a "
                                          f"non-negative number, not {value!r}.")
        if unit == "m" and dim in ("x", "y"):
            value = value / _resolution(data, dim)
        elif unit != "px":
            raise ProcessParameterInvalid(f"apply_neighborhood: unit {unit!r} of {dim} is not "
                                          "supported (px, or m for x and y).")
        if value != int(value):
            raise ProcessParameterInvalid(f"apply_neighborhood: {what} of {dim} is not a whole "
                                          f"number of pixels ({value}).")
        out[dim] = int(value)
    return out


def _resolution(data: xr.DataArray, dim: str) -> float:
    coords = data[dim].values if dim in data.coords else []
    return float(abs(coords[1] - coords[0])) if len(coords) > 1 else GRID


def _extended(coords: np.ndarray, before: int, after: int) -> np.ndarray:
    """Coordinates continued regularly ``before``/``after`` the given ones."""
    step = coords[1] - coords[0] if coords.size > 1 else GRID
    idx = np.arange(-before, coords.size + after)
    return coords[0] + idx * step


def apply_neighborhood(data: xr.DataArray, process: Callable, size: list, overlap: list | None = None,
                       context: Any = None) -> xr.DataArray:
    """Apply ``process`` to each x/y chunk of ``size`` (+ ``overlap``) and stitch the results."""
    if not isinstance(data, xr.DataArray) or not {"x", "y"} <= set(data.dims):
        raise ProcessParameterInvalid("apply_neighborhood needs a raster cube with x and y.")
    sizes, overlaps = _pixels(data, size, "size"), _pixels(data, overlap, "overlap")
    for dim in set(sizes) | set(overlaps):
        if dim in ("x", "y"):
            continue
        if sizes.get(dim) not in (None, data.sizes[dim]) or overlaps.get(dim):
            raise ProcessParameterInvalid(
                f"apply_neighborhood: dimension {dim!r} must be taken whole (size null or "
                f"{data.sizes[dim]}, no overlap); only x and y can be cut into chunks.")
    ny, nx = data.sizes["y"], data.sizes["x"]
    if sizes.get("y") == 0 or sizes.get("x") == 0:
        raise ProcessParameterInvalid("apply_neighborhood: the size of x and y must be at least 1 px.")
    sy, sx = min(sizes.get("y") or ny, ny), min(sizes.get("x") or nx, nx)
    oy, ox = overlaps.get("y") or 0, overlaps.get("x") or 0
    cy, cx = -(-ny // sy), -(-nx // sx)  # chunks per axis
    lead = [d for d in data.dims if d not in ("y", "x")]
    ordered = data.transpose(*lead, "y", "x")
    fill = 0 if ordered.dtype.kind in "uib" else np.nan
    pad = [(0, 0)] * len(lead) + [(oy, oy + cy * sy - ny), (ox, ox + cx * sx - nx)]
    padded = np.pad(ordered.values, pad, constant_values=fill)
    ys = _extended(ordered["y"].values, oy, oy + cy * sy - ny)
    xs = _extended(ordered["x"].values, ox, ox + cx * sx - nx)
    lead_coords = {d: ordered[d].values for d in lead if d in ordered.coords}
    crs = data.rio.crs
    ctx = current_context()
    if cy * cx > 1:
        ctx.log("info", f"apply_neighborhood: {cy * cx} chunks of {sy}x{sx} px (+{oy}/{ox} px overlap)")
    out: np.ndarray | None = None
    template: xr.DataArray | None = None
    for iy in range(cy):
        for ix in range(cx):
            ctx.check_canceled()
            y0, x0 = iy * sy, ix * sx
            ysl, xsl = slice(y0, y0 + sy + 2 * oy), slice(x0, x0 + sx + 2 * ox)
            chunk = xr.DataArray(padded[..., ysl, xsl], dims=(*lead, "y", "x"),
                                 coords={**lead_coords, "y": ys[ysl], "x": xs[xsl]})
            if crs is not None:
                chunk = chunk.rio.write_crs(crs)
            result = _call(process, chunk, context)
            if result.sizes.get("y") != chunk.sizes["y"] or result.sizes.get("x") != chunk.sizes["x"]:
                raise ProcessParameterInvalid(
                    f"apply_neighborhood: the process returned {dict(result.sizes)} for a chunk of "
                    f"{dict(chunk.sizes)}; it must keep the x and y size.",
                    code="DataCubePropertiesImmutable")
            rlead = [d for d in result.dims if d not in ("y", "x")]
            result = result.transpose(*rlead, "y", "x")
            core = result.isel(y=slice(oy, oy + sy), x=slice(ox, ox + sx))
            if out is None:
                template = core
                out = np.empty((*core.shape[:-2], cy * sy, cx * sx), dtype=core.dtype)
            elif core.shape[:-2] != out.shape[:-2]:
                raise ProcessParameterInvalid("apply_neighborhood: the process returned chunks of "
                                              "different shapes.", code="DataCubePropertiesImmutable")
            out[..., y0:y0 + sy, x0:x0 + sx] = core.values
    assert out is not None and template is not None
    coords = {d: template[d].values for d in template.dims if d in template.coords and d not in ("y", "x")}
    coords.update(y=ordered["y"].values, x=ordered["x"].values)
    stitched = xr.DataArray(out[..., :ny, :nx], dims=template.dims, coords=coords)
    order = [d for d in data.dims if d in stitched.dims] + [d for d in stitched.dims if d not in data.dims]
    stitched = stitched.transpose(*order)
    return stitched.rio.write_crs(crs) if crs is not None else stitched


def _call(process: Callable, chunk: xr.DataArray, context: Any) -> xr.DataArray:
    # the graph caches node results: forget those of the callback, which runs once per chunk
    cache = current_context().results_cache
    before = set(cache)
    try:
        result = process(chunk, positional_parameters={"data": 0},
                         named_parameters={"data": chunk, "context": context})
    finally:
        for key in set(cache) - before:
            del cache[key]
    if isinstance(result, xr.DataArray):
        return result
    if isinstance(result, np.ndarray) and result.shape == chunk.shape:
        return chunk.copy(data=result)
    raise ProcessParameterInvalid(f"apply_neighborhood: the process returned {type(result).__name__}, "
                                  "not a data cube.")
