"""Execution engine of the embedded openEO backend.

:class:`Engine` runs flat openEO process graphs with ``openeo-pg-parser-networkx`` over the
process registry of :mod:`eoextract.backend._cube_processes` and writes result files through
:mod:`eoextract.backend._output_formats`. It also answers the metadata endpoints (processes,
collections, file formats) and validates graphs without running them.

Before execution a graph is prepared:

1. calls of user-defined processes are inlined (``udp_resolver``);
2. extents are pushed down: a ``load_collection`` without ``spatial_extent`` or
   ``temporal_extent`` takes them from the first ``filter_spatial``/``filter_bbox``/
   ``aggregate_spatial``/``filter_temporal`` that consumes it (as real backends do), so
   nothing global is ever generated;
3. with ``save_result(..., options={"sample_by_feature": true})`` and a geometry with N
   features, the graph runs once per feature, each run generating only that feature's
   pixels and writing ``openEO_<i>.<ext>``.
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eoextract.backend import _cube_processes as processes
from eoextract.backend import _output_formats as formats
from eoextract.backend._api_errors import (
    OpenEOApiError,
    ProcessGraphInvalid,
    ProcessParameterInvalid,
    ProcessUnsupported,
)
from eoextract.backend._collection_metadata import collection_metadata, collection_summary
from eoextract.backend._output_formats import ResultAsset
from eoextract.backend._execution_context import ExecutionContext, JobCanceled, use_context
from eoextract.backend._synthetic_collections import COLLECTIONS, get_collection


logger = logging.getLogger(__name__)

UdpResolver = Callable[[str, "str | None"], "dict | None"]
LogFn = Callable[[str, str], None]

_PASSTHROUGH = {
    "filter_bands", "filter_temporal", "filter_bbox", "filter_spatial", "apply", "ndvi",
    "linear_scale_range", "rename_labels", "merge_cubes", "mask", "resample_spatial",
    "reduce_dimension", "apply_dimension", "apply_neighborhood", "rename_dimension",
    "add_dimension", "drop_dimension", "resample_cube_spatial", "mask_polygon", "save_result",
    "aggregate_spatial", "aggregate_temporal", "aggregate_temporal_period", "apply_kernel",
}
_MAX_UDP_DEPTH = 16


def _is_ref(v: Any, key: str) -> bool:
    return isinstance(v, dict) and key in v and len(v) == 1


def _result_node(graph: dict) -> str:
    results = [k for k, n in graph.items() if isinstance(n, dict) and n.get("result")]
    if len(results) != 1:
        raise ProcessGraphInvalid(
            f"The process graph must have exactly one result node, found {len(results)}."
        )
    return results[0]


def _check_shape(graph: Any) -> dict:
    if not isinstance(graph, dict) or not graph:
        raise ProcessGraphInvalid("The process graph must be a non-empty JSON object of nodes.")
    if "process_graph" in graph and isinstance(graph["process_graph"], dict):
        graph = graph["process_graph"]
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("process_id"), str):
            raise ProcessGraphInvalid(f"Node {node_id!r} has no process_id.")
        if not isinstance(node.get("arguments", {}), dict):
            raise ProcessGraphInvalid(f"Node {node_id!r}: arguments must be an object.")
    _result_node(graph)
    return graph


# --------------------------------------------------------------------------------------------
# User-defined processes


_CALLBACK_PARAMS = {"x", "y", "data", "value", "context", "index", "label", "min", "max"}


def _substitute(value: Any, params: dict, in_callback: bool) -> Any:
    if _is_ref(value, "from_parameter"):
        name = value["from_parameter"]
        if name in params and not (in_callback and name in _CALLBACK_PARAMS):
            return copy.deepcopy(params[name])
        return value
    if isinstance(value, dict):
        if "process_graph" in value and isinstance(value["process_graph"], dict):
            return {**value, "process_graph": {
                k: {**n, "arguments": _substitute(n.get("arguments", {}), params, True)}
                for k, n in value["process_graph"].items()}}
        return {k: _substitute(v, params, in_callback) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params, in_callback) for v in value]
    return value


def _rename_refs(value: Any, mapping: dict[str, str]) -> Any:
    if _is_ref(value, "from_node"):
        return {"from_node": mapping.get(value["from_node"], value["from_node"])}
    if isinstance(value, dict):
        if "process_graph" in value and isinstance(value["process_graph"], dict):
            return value  # callbacks refer to their own nodes
        return {k: _rename_refs(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_refs(v, mapping) for v in value]
    return value


def expand_udps(graph: dict, is_known: Callable[[str], bool],
                resolver: UdpResolver | None, depth: int = 0) -> dict:
    """Inline calls of user-defined processes (recursively, callbacks included).

    Raises:
        ProcessUnsupported: For a process that is neither predefined nor resolvable.
    """
    if depth > _MAX_UDP_DEPTH:
        raise ProcessGraphInvalid("User-defined processes nest too deeply (recursion?).")
    out: dict = {}
    for node_id, node in graph.items():
        node = dict(node)
        node["arguments"] = {k: _expand_in_value(v, is_known, resolver, depth)
                             for k, v in (node.get("arguments") or {}).items()}
        pid, ns = node["process_id"], node.get("namespace")
        if ns in (None, "backend", "predefined") and is_known(pid):
            out[node_id] = node
            continue
        udp = resolver(pid, ns) if resolver is not None else None
        if not udp or not isinstance(udp.get("process_graph"), dict):
            where = f" in namespace {ns!r}" if ns else ""
            raise ProcessUnsupported(f"Process {pid!r}{where} is not available on this backend.")
        params = {}
        for p in udp.get("parameters") or []:
            name = p.get("name")
            if name in node["arguments"]:
                params[name] = node["arguments"][name]
            elif "default" in p:
                params[name] = p["default"]
            elif not p.get("optional", False):
                raise ProcessParameterInvalid(f"Process {pid!r}: missing required parameter {name!r}.")
            else:
                params[name] = None
        inner = expand_udps(_check_shape(udp["process_graph"]), is_known, resolver, depth + 1)
        inner_result = _result_node(inner)
        mapping = {k: (node_id if k == inner_result else f"{node_id}__{k}") for k in inner}
        for k, inner_node in inner.items():
            new = dict(inner_node)
            new["arguments"] = _rename_refs(_substitute(inner_node.get("arguments", {}), params, False), mapping)
            new["result"] = bool(node.get("result")) if k == inner_result else False
            out[mapping[k]] = new
    return out


def _expand_in_value(value: Any, is_known: Callable[[str], bool], resolver: UdpResolver | None,
                     depth: int) -> Any:
    if isinstance(value, dict):
        if "process_graph" in value and isinstance(value["process_graph"], dict):
            return {**value, "process_graph": expand_udps(value["process_graph"], is_known, resolver, depth)}
        return {k: _expand_in_value(v, is_known, resolver, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_in_value(v, is_known, resolver, depth) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# Graph preparation


def _normalize_crs_members(value: Any) -> Any:
    """GeoJSON ``crs`` objects become plain strings (the graph parser chokes on dicts there)."""
    if isinstance(value, dict):
        out = {k: _normalize_crs_members(v) for k, v in value.items()}
        crs = out.get("crs")
        if isinstance(crs, dict) and "type" in out:
            name = (crs.get("properties") or {}).get("name")
            if name:
                out["crs"] = str(name)
            else:
                del out["crs"]
        return out
    if isinstance(value, list):
        return [_normalize_crs_members(v) for v in value]
    return value


def _consumers(graph: dict) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {k: [] for k in graph}
    for node_id, node in graph.items():
        for arg, value in (node.get("arguments") or {}).items():
            if _is_ref(value, "from_node") and value["from_node"] in out:
                out[value["from_node"]].append((node_id, arg))
    return out


def push_down_extents(graph: dict) -> dict:
    """Give each ``load_collection`` the spatial/temporal extent of a downstream filter."""
    graph = copy.deepcopy(graph)
    consumers = _consumers(graph)
    for node_id, node in graph.items():
        if node["process_id"] != "load_collection":
            continue
        args = node.setdefault("arguments", {})
        want_space = args.get("spatial_extent") is None
        want_time = args.get("temporal_extent") is None
        queue, seen = [node_id], {node_id}
        while queue and (want_space or want_time):
            current = queue.pop(0)
            for consumer, arg in consumers.get(current, []):
                cnode = graph[consumer]
                pid, cargs = cnode["process_id"], cnode.get("arguments", {})
                if pid not in _PASSTHROUGH or consumer in seen:
                    continue
                if want_space and pid in ("filter_spatial", "aggregate_spatial") and arg == "data":
                    args["spatial_extent"] = copy.deepcopy(cargs.get("geometries"))
                    want_space = False
                elif want_space and pid == "filter_bbox" and arg == "data":
                    args["spatial_extent"] = copy.deepcopy(cargs.get("extent"))
                    want_space = False
                if want_time and pid == "filter_temporal" and arg == "data":
                    args["temporal_extent"] = copy.deepcopy(cargs.get("extent"))
                    want_time = False
                seen.add(consumer)
                queue.append(consumer)
    return graph


def _features_source(graph: dict) -> Any:
    """The geometry argument that defines the features for ``sample_by_feature``."""
    for pid, arg in (("filter_spatial", "geometries"), ("load_collection", "spatial_extent")):
        for node in graph.values():
            if node["process_id"] == pid:
                value = (node.get("arguments") or {}).get(arg)
                if value is not None and not (isinstance(value, dict) and "west" in value):
                    return value
    return None


def _sample_by_feature(graph: dict) -> bool:
    for node in graph.values():
        if node["process_id"] == "save_result":
            opts = (node.get("arguments") or {}).get("options") or {}
            if isinstance(opts, dict) and opts.get("sample_by_feature"):
                return True
    return False


def _count_features(graph: dict, registry: Any) -> int | None:
    """Number of features of the geometry source, evaluating a ``load_url``/``load_geojson``."""
    source = _features_source(graph)
    if source is None:
        return None
    if _is_ref(source, "from_node"):
        node = graph.get(source["from_node"], {})
        args = node.get("arguments") or {}
        if node.get("process_id") not in ("load_url", "load_geojson") or any(
                isinstance(v, dict) and ("from_node" in v or "from_parameter" in v) for v in args.values()):
            return None
        impl = processes.CUSTOM_PROCESSES[node["process_id"]]
        source = impl(**args)
    return len(processes.to_geodataframe(source))


# --------------------------------------------------------------------------------------------


class Engine:
    """Runs process graphs and answers the metadata endpoints (thread-safe)."""

    def __init__(self) -> None:
        t0 = time.perf_counter()
        self._registry = processes.build_registry()
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
        return formats.file_formats()

    # -- preparation --------------------------------------------------------------------------

    def _prepare(self, process_graph: dict, udp_resolver: UdpResolver | None) -> dict:
        graph = _check_shape(copy.deepcopy(process_graph))
        graph = expand_udps(graph, self._is_known, udp_resolver)
        self._check_static(graph)
        return push_down_extents(_normalize_crs_members(graph))

    def _check_static(self, graph: dict) -> None:
        for node in graph.values():
            pid, args = node["process_id"], node.get("arguments") or {}
            if pid == "load_collection":
                cid = args.get("id")
                if not _is_ref(cid, "from_parameter"):
                    spec = get_collection(cid)
                    for band in args.get("bands") or []:
                        if isinstance(band, str):
                            spec.band(band)
            elif pid == "save_result":
                fmt = args.get("format")
                if isinstance(fmt, str):
                    formats.normalize_format(fmt)
            for value in args.values():
                if isinstance(value, dict) and isinstance(value.get("process_graph"), dict):
                    for sub in value["process_graph"].values():
                        if not self._is_known(sub.get("process_id", "")):
                            raise ProcessUnsupported(
                                f"Process {sub.get('process_id')!r} is not available on this backend.")

    def _parse(self, graph: dict) -> Any:
        from openeo_pg_parser_networkx import OpenEOProcessGraph

        try:
            return OpenEOProcessGraph({"process_graph": graph})
        except RecursionError:
            raise ProcessGraphInvalid("The process graph contains a cycle.") from None
        except Exception as exc:
            raise ProcessGraphInvalid(f"The process graph cannot be parsed: {exc}") from None

    def validate(self, process_graph: dict, udp_resolver: UdpResolver | None = None) -> list[dict]:
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

    def execute(self, process_graph: dict, out_dir: Path, *, udp_resolver: UdpResolver | None = None,
                log: LogFn | None = None, cancel_event: threading.Event | None = None) -> list[ResultAsset]:
        """Run a flat process graph, writing results into ``out_dir``.

        Args:
            process_graph: ``{node_id: {"process_id", "arguments", "result"?}}``.
            out_dir: Folder for the result files (created if needed).
            udp_resolver: ``(process_id, namespace) -> {"id", "parameters", "process_graph"}``
                for user-defined or remote processes, or None.
            log: ``log(level, message)`` for job logs.
            cancel_event: Checked between steps; when set, :class:`JobCanceled` is raised.

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
                n_features = _count_features(graph, self._registry) if _sample_by_feature(graph) else None
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
        result = pg.to_callable(process_registry=self._registry)()
        ctx.check_canceled()
        if len(ctx.assets) == n_before and result is not None and result is not True:
            # No save_result in the graph: store the result in a default format.
            fmt = "netCDF" if getattr(result, "dims", None) and "x" in result.dims else "JSON"
            processes.save_result(result, fmt, {})


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
