"""Execution engine of the embedded openEO backend.

:class:`Engine` runs flat openEO process graphs with ``openeo-pg-parser-networkx`` over the
process registry of :mod:`eoextract.backend._process_registry` and writes result files through
:mod:`eoextract.backend._output_formats`. It also answers the metadata endpoints (processes,
collections, file formats) and validates graphs without running them.

Before execution a graph is prepared (:mod:`eoextract.backend._graph_preparation`). With
``save_result(..., options={"sample_by_feature": true})`` and a geometry with N features,
the graph runs once per feature, each run generating only that feature's pixels and writing
``openEO_<i>.<ext>``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eoextract.backend._api_errors import OpenEOApiError, ProcessGraphInvalid, ProcessUnsupported
from eoextract.backend._collection_metadata import collection_metadata, collection_summary
from eoextract.backend._execution_context import ExecutionContext, use_context
from eoextract.backend._graph_preparation import (
    UdpLookup,
    count_features,
    prepare_graph,
    sample_by_feature,
)
from eoextract.backend._output_formats import ResultAsset, file_formats
from eoextract.backend._process_registry import build_registry, save_result
from eoextract.backend._synthetic_collections import COLLECTIONS, get_collection

logger = logging.getLogger(__name__)

LogFn = Callable[[str, str], None]


class Engine:
    """Runs process graphs and answers the metadata endpoints (thread-safe)."""

    def __init__(self) -> None:
        t0 = time.perf_counter()
        self._registry = build_registry()
        logger.info("process registry built in %.2f s", time.perf_counter() - t0)

    # -- metadata ---------------------------------------------------------------------------

    def _is_known(self, process_id: str) -> bool:
        try:
            self._registry[process_id]
        except KeyError:
            return False
        return True

    def process_specs(self) -> list[dict]:
        """openEO process descriptions for ``GET /processes``."""
        out = []
        for (_, pid) in sorted(self._registry, key=lambda k: k[1]):
            spec = self._registry[pid].spec
            if isinstance(spec, dict) and "parameters" in spec:
                out.append(spec)
        return out

    def collections(self) -> list[dict]:
        """STAC Collection summaries for ``GET /collections``."""
        return [collection_summary(c) for c in COLLECTIONS.values()]

    def collection(self, collection_id: str) -> dict:
        """Full metadata of one collection (raises ``CollectionNotFound``)."""
        return collection_metadata(get_collection(collection_id))

    def file_formats(self) -> dict:
        """``GET /file_formats`` document."""
        return file_formats()

    # -- preparation --------------------------------------------------------------------------

    def _prepare(self, process_graph: dict, udp_resolver: UdpLookup | None) -> dict:
        return prepare_graph(process_graph, self._is_known, udp_resolver)

    def _parse(self, graph: dict) -> Any:
        from openeo_pg_parser_networkx import OpenEOProcessGraph

        try:
            return OpenEOProcessGraph({"process_graph": graph})
        except RecursionError:
            raise ProcessGraphInvalid("The process graph contains a cycle.") from None
        except Exception as exc:
            raise ProcessGraphInvalid(f"The process graph cannot be parsed: {exc}") from None

    def validate(self, process_graph: dict, udp_resolver: UdpLookup | None = None) -> list[dict]:
        """Check a graph without running it.

        Returns:
            openEO ``/validation`` errors (``[{"code", "message"}]``), empty when valid.
        """
        try:
            self._parse(self._prepare(process_graph, udp_resolver))
        except OpenEOApiError as exc:
            return [{"code": exc.code, "message": exc.message}]
        except Exception as exc:  # defensive: validation never raises
            return [{"code": "ProcessGraphInvalid", "message": f"{type(exc).__name__}: {exc}"}]
        return []

    # -- execution ----------------------------------------------------------------------------

    def execute(self, process_graph: dict, out_dir: Path, *, udp_resolver: UdpLookup | None = None,
                log: LogFn | None = None, cancel_event: threading.Event | None = None) -> list[ResultAsset]:
        """Run a flat process graph, writing results into ``out_dir``.

        Args:
            process_graph: ``{node_id: {"process_id", "arguments", "result"?}}``.
            out_dir: Folder for the result files (created if needed).
            udp_resolver: ``(process_id, namespace) -> {"id", "parameters", "process_graph"}``
                for user-defined or remote processes, or None.
            log: ``log(level, message)`` for job logs.
            cancel_event: Checked between steps; when set,
                :class:`~eoextract.backend._execution_context.JobCanceled` is raised.

        Returns:
            The files written.

        Raises:
            OpenEOApiError: openEO errors (bad input: 4xx codes; anything unexpected:
                ``Internal`` with status 500 and the Python error in the message).
            JobCanceled: When ``cancel_event`` was set.
        """
        log_fn: LogFn = log or (lambda level, message: None)
        ctx = ExecutionContext(out_dir=Path(out_dir), log=log_fn, cancel_event=cancel_event)
        t0 = time.perf_counter()
        try:
            with use_context(ctx):
                graph = self._prepare(process_graph, udp_resolver)
                n_features = count_features(graph) if sample_by_feature(graph) else None
                if n_features:
                    log_fn("info", f"sample_by_feature: running the graph for {n_features} features")
                    ctx.n_features = n_features
                    step = max(1, n_features // 10)
                    for i in range(n_features):
                        ctx.check_canceled()
                        ctx.feature_index = i
                        self._run(graph, ctx)
                        if n_features >= 10 and (i + 1) % step == 0:
                            log_fn("info", f"features done: {i + 1}/{n_features}")
                else:
                    self._run(graph, ctx)
        except OpenEOApiError:
            raise
        except Exception as exc:
            mapped = _map_library_error(exc)
            if mapped is not None:
                raise mapped from exc
            logger.debug("execution failed", exc_info=True)
            raise OpenEOApiError(f"Execution failed: {type(exc).__name__}: {exc}",
                                 code="Internal", status=500) from exc
        log_fn("info", f"finished in {time.perf_counter() - t0:.2f} s, {len(ctx.assets)} file(s)")
        return ctx.assets

    def _run(self, graph: dict, ctx: ExecutionContext) -> None:
        pg = self._parse(graph)
        for node in pg.G.nodes(data=True):
            if not self._is_known(node[1]["process_id"]):
                raise ProcessUnsupported(f"Process {node[1]['process_id']!r} is not available on this backend.")
        n_before = len(ctx.assets)
        ctx.results_cache = {}  # the graph's node results (apply_neighborhood drops its callback's)
        result = pg.to_callable(process_registry=self._registry, results_cache=ctx.results_cache)()
        ctx.check_canceled()
        if len(ctx.assets) == n_before and result is not None and result is not True:
            # No save_result in the graph: store the result in a default format.
            fmt = "netCDF" if getattr(result, "dims", None) and "x" in result.dims else "JSON"
            save_result(result, fmt, {})


_CODED_MESSAGE = re.compile(r"^(?P<code>[A-Z][A-Za-z]+)(?: - |: )(?P<message>.+)$", re.S)


def _map_library_error(exc: Exception) -> OpenEOApiError | None:
    """openeo-processes-dask reports openEO errors by class name (``OpenEOException``
    subclasses) or as ``"LabelExists - ..."`` messages: keep those 4xx with their codes."""
    from openeo_processes_dask.process_implementations.exceptions import OpenEOException

    if isinstance(exc, OpenEOException):
        return OpenEOApiError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__, status=400)
    match = _CODED_MESSAGE.match(str(exc)) if type(exc) is Exception else None
    if match:
        return OpenEOApiError(match["message"], code=match["code"], status=400)
    return None
