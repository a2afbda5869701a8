"""``usage`` and ``costs`` of a batch job, modelled from its process graph.

Production backends report what a job consumed in its metadata (``GET /jobs/{id}``)::

    "usage": {"cpu": {"value": 32, "unit": "cpu-seconds"},
              "memory": {"value": 1234, "unit": "mb-seconds"},
              "duration": {"value": 70, "unit": "seconds"},
              "input_pixel": {"value": 1.125, "unit": "mega-pixel"},
              "sentinelhub": {"value": 0, "unit": "sentinelhub_processing_unit"}},
    "costs": 3.2

(keys and units as openeo-geopyspark-driver writes them). Measured figures would change
from run to run, so here they are *modelled* from the work the graph asks for: the input
pixels of every ``load_collection`` (10 m pixels of its bounding box × observation dates
every 5 days in its half-open time range × bands), from which duration, CPU and memory
follow linearly. The same graph therefore always has the same usage and costs.
``soft_errors`` is the fraction of inputs that failed to load and were skipped; it is 0
unless the job option ``eoextract_soft_error_fraction`` sets it (to exercise quality gates
such as WorldCereal's).
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

_PIXEL_M = 10.0
_REVISIT_DAYS = 5
_DEFAULT_BANDS = 14  # the synthetic SENTINEL2_L2A: 13 bands and SCL
_DEFAULT_DATES = 1
_SECONDS_BASE = 30.0  # start-up of a job
_SECONDS_PER_MEGAPIXEL = 2.0
_CORES = 2
_MEMORY_MB = 2048
SOFT_ERROR_OPTION = "eoextract_soft_error_fraction"
"""Job option setting the reported soft-error fraction (0–1)."""


def _bbox(extent: Any) -> tuple[float, float, float, float] | None:
    """``(west, south, east, north)`` in degrees of a spatial extent or GeoJSON, else None."""
    if isinstance(extent, dict):
        if all(k in extent for k in ("west", "south", "east", "north")):
            crs = extent.get("crs")
            if crs not in (None, 4326, "4326", "EPSG:4326"):
                return None  # projected extents are not modelled (counted as one pixel)
            return (float(extent["west"]), float(extent["south"]),
                    float(extent["east"]), float(extent["north"]))
        coords: list[tuple[float, float]] = []
        _collect_coords(extent, coords)
        if coords:
            xs, ys = zip(*coords, strict=True)
            return min(xs), min(ys), max(xs), max(ys)
    return None


def _collect_coords(value: Any, out: list[tuple[float, float]]) -> None:
    if isinstance(value, dict):
        for key in ("coordinates", "geometry", "features", "geometries"):
            if key in value:
                _collect_coords(value[key], out)
    elif isinstance(value, list):
        if len(value) >= 2 and all(isinstance(v, int | float) for v in value[:2]):
            out.append((float(value[0]), float(value[1])))
        else:
            for item in value:
                _collect_coords(item, out)


def _dates(temporal: Any) -> int:
    if not isinstance(temporal, list | tuple) or len(temporal) != 2:
        return _DEFAULT_DATES
    try:
        start = date.fromisoformat(str(temporal[0])[:10])
        end = date.fromisoformat(str(temporal[1])[:10])
    except ValueError:
        return _DEFAULT_DATES
    return max(1, math.ceil((end - start).days / _REVISIT_DAYS))  # the end is excluded


def _pixels(arguments: dict[str, Any]) -> int:
    box = _bbox(arguments.get("spatial_extent"))
    if box is None:
        per_date = 1
    else:
        west, south, east, north = box
        mid = math.radians((south + north) / 2)
        width = abs(east - west) * 111_320.0 * math.cos(mid)
        height = abs(north - south) * 110_540.0
        per_date = max(1, math.ceil(width / _PIXEL_M)) * max(1, math.ceil(height / _PIXEL_M))
    bands = arguments.get("bands")
    n_bands = len(bands) if isinstance(bands, list) and bands else _DEFAULT_BANDS
    return per_date * n_bands * _dates(arguments.get("temporal_extent"))


def input_pixels(process_graph: dict[str, Any]) -> int:
    """Input pixels of every ``load_collection`` in a graph (child graphs included)."""
    total = 0
    stack: list[Any] = [process_graph]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if value.get("process_id") == "load_collection" and isinstance(value.get("arguments"), dict):
                total += _pixels(value["arguments"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return total


def job_usage(
    process_graph: dict[str, Any],
    job_options: dict[str, Any] | None,
    *,
    credits_base: float,
    credits_per_cpu_hour: float,
    credits_per_megapixel: float,
) -> tuple[dict[str, Any], float]:
    """``(usage, costs)`` of a job: the same graph and options always give the same result."""
    megapixels = input_pixels(process_graph) / (1024 * 1024)
    duration = round(_SECONDS_BASE + _SECONDS_PER_MEGAPIXEL * megapixels, 3)
    cpu = round(duration * _CORES, 3)
    memory = round(duration * _MEMORY_MB, 3)
    soft = (job_options or {}).get(SOFT_ERROR_OPTION, 0.0)
    try:
        soft = min(1.0, max(0.0, float(soft)))
    except (TypeError, ValueError):
        soft = 0.0
    usage = {
        "cpu": {"value": cpu, "unit": "cpu-seconds"},
        "memory": {"value": memory, "unit": "mb-seconds"},
        "duration": {"value": duration, "unit": "seconds"},
        "input_pixel": {"value": round(megapixels, 6), "unit": "mega-pixel"},
        "sentinelhub": {"value": 0.0, "unit": "sentinelhub_processing_unit"},
        "soft_errors": {"value": soft, "unit": "fraction"},
    }
    costs = credits_base + credits_per_cpu_hour * cpu / 3600 + credits_per_megapixel * megapixels
    return usage, round(costs, 4)
