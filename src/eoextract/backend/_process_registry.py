"""The process registry of the embedded backend.

The openEO processes come from ``openeo-processes-dask``; the backend's own (see
:mod:`eoextract.backend._cube_processes` and :mod:`eoextract.backend._vector_processes`, and
``save_result`` here; ``run_udf`` of :mod:`eoextract.backend._udf`, ``apply_neighborhood`` and
``to_scl_dilation_mask``) replace or complete them, wired into an
``openeo_pg_parser_networkx.ProcessRegistry``.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from eoextract.backend._cube_processes import (
    aggregate_temporal_period,
    apply_dimension,
    filter_bands,
    filter_bbox,
    filter_spatial,
    load_collection,
    merge_cubes,
    ndvi,
    resample_spatial,
)
from eoextract.backend._execution_context import current_context
from eoextract.backend._neighborhood import SPEC as APPLY_NEIGHBORHOOD_SPEC
from eoextract.backend._neighborhood import apply_neighborhood
from eoextract.backend._output_formats import save
from eoextract.backend._scl_mask import SPEC as SCL_MASK_SPEC
from eoextract.backend._scl_mask import to_scl_dilation_mask
from eoextract.backend._udf import run_udf
from eoextract.backend._vector_processes import aggregate_spatial, load_geojson, load_url


def save_result(data: Any, format: str, options: dict | None = None) -> bool:  # noqa: A002
    """Write ``data`` into the execution's output folder (see ``_output_formats.save``)."""
    ctx = current_context()
    ctx.check_canceled()
    ctx.assets.extend(save(data, format, options or {}, ctx))
    return True


CUSTOM_PROCESSES: dict[str, Callable] = {
    "load_collection": load_collection,
    "save_result": save_result,
    "load_url": load_url,
    "load_geojson": load_geojson,
    "filter_spatial": filter_spatial,
    "filter_bbox": filter_bbox,
    "filter_bands": filter_bands,
    "ndvi": ndvi,
    "aggregate_spatial": aggregate_spatial,
    "resample_spatial": resample_spatial,
    "merge_cubes": merge_cubes,
    "apply_dimension": apply_dimension,
    "aggregate_temporal_period": aggregate_temporal_period,
    "run_udf": run_udf,
    "apply_neighborhood": apply_neighborhood,
    "to_scl_dilation_mask": to_scl_dilation_mask,
}
CUSTOM_SPECS: dict[str, dict] = {
    "apply_neighborhood": APPLY_NEIGHBORHOOD_SPEC,
    "to_scl_dilation_mask": SCL_MASK_SPEC,
}


def _cancellable(f: Callable) -> Callable:
    @wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        current_context().check_canceled()
        return f(*args, **kwargs)

    return wrapper


def _not_the_missing_ml_notice(record: logging.LogRecord) -> bool:
    """openeo-processes-dask warns at import that its machine-learning processes (an extra
    the embedded backend does not install) are missing: not news to its users."""
    return "machine learning processes" not in record.getMessage()


def build_registry():
    """Build the process registry (processes-dask implementations plus ours).

    Returns:
        An ``openeo_pg_parser_networkx.ProcessRegistry``.
    """
    notices = logging.getLogger("openeo_processes_dask.process_implementations")
    if _not_the_missing_ml_notice not in notices.filters:
        notices.addFilter(_not_the_missing_ml_notice)
    from openeo_pg_parser_networkx import ProcessRegistry
    from openeo_pg_parser_networkx.process_registry import Process
    from openeo_processes_dask.process_implementations.core import process

    logging.getLogger("openeo_processes_dask.process_implementations.core").setLevel(logging.WARNING)
    specs = importlib.import_module("openeo_processes_dask.specs")
    impl = importlib.import_module("openeo_processes_dask.process_implementations")
    registry = ProcessRegistry(wrap_funcs=[process, _cancellable])
    for name, func in inspect.getmembers(impl, inspect.isfunction):
        spec = getattr(specs, name, None)
        if spec is not None and func.__name__ not in ("load_stac", "run_udf"):
            registry[name] = Process(spec=spec, implementation=func)
    for name, func in CUSTOM_PROCESSES.items():
        spec = CUSTOM_SPECS.get(name) or getattr(specs, name, None) or {"id": name}
        registry[name] = Process(spec=spec, implementation=func)
    return registry
