"""Preparation of openEO process graphs before the embedded backend runs them.

1. calls of user-defined processes are inlined (a ``resolver`` finds their definitions);
2. the graph is checked statically (known collections, bands, output formats, processes in
   callbacks, ``run_udf`` runtime, version and code syntax);
3. extents are pushed down: a ``load_collection`` without ``spatial_extent`` or
   ``temporal_extent`` takes them from the first ``filter_spatial``/``filter_bbox``/
   ``aggregate_spatial``/``filter_temporal`` that consumes it (as real backends do), so
   nothing global is ever generated.

With ``save_result(..., options={"sample_by_feature": true})`` the engine runs the graph once
per feature of its geometry source (:func:`sample_by_feature`, :func:`count_features`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from eoextract.backend._api_errors import (
    ProcessGraphInvalid,
    ProcessParameterInvalid,
    ProcessUnsupported,
)
from eoextract.backend._geometry import to_geodataframe
from eoextract.backend._output_formats import normalize_format
from eoextract.backend._synthetic_collections import get_collection
from eoextract.backend._udf import check_udf
from eoextract.backend._vector_processes import load_geojson, load_url

UdpLookup = Callable[[str, "str | None"], "dict | None"]
"""``(process_id, namespace) -> {"id", "parameters", "process_graph"}`` or None."""

_PASSTHROUGH = {
    "filter_bands", "filter_temporal", "filter_bbox", "filter_spatial", "apply", "ndvi",
    "linear_scale_range", "rename_labels", "merge_cubes", "mask", "resample_spatial",
    "reduce_dimension", "apply_dimension", "apply_neighborhood", "rename_dimension",
    "add_dimension", "drop_dimension", "resample_cube_spatial", "mask_polygon", "save_result",
    "aggregate_spatial", "aggregate_temporal", "aggregate_temporal_period", "apply_kernel",
    "run_udf", "to_scl_dilation_mask",
}
_MAX_UDP_DEPTH = 16


def is_ref(v: Any, key: str) -> bool:
    """Whether ``v`` is a ``{key: ...}`` reference (``from_node``, ``from_parameter``)."""
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
    if is_ref(value, "from_parameter"):
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
    if is_ref(value, "from_node"):
        return {"from_node": mapping.get(value["from_node"], value["from_node"])}
    if isinstance(value, dict):
        if "process_graph" in value and isinstance(value["process_graph"], dict):
            return value  # callbacks refer to their own nodes
        return {k: _rename_refs(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename_refs(v, mapping) for v in value]
    return value


def expand_udps(graph: dict, is_known: Callable[[str], bool],
                resolver: UdpLookup | None, depth: int = 0) -> dict:
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


def _expand_in_value(value: Any, is_known: Callable[[str], bool], resolver: UdpLookup | None,
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
            if is_ref(value, "from_node") and value["from_node"] in out:
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


def sample_by_feature(graph: dict) -> bool:
    """Whether a ``save_result`` of the graph asks for one file per feature."""
    for node in graph.values():
        if node["process_id"] == "save_result":
            opts = (node.get("arguments") or {}).get("options") or {}
            if isinstance(opts, dict) and opts.get("sample_by_feature"):
                return True
    return False


def count_features(graph: dict) -> int | None:
    """Number of features of the geometry source, evaluating a ``load_url``/``load_geojson``."""
    source = _features_source(graph)
    if source is None:
        return None
    if is_ref(source, "from_node"):
        node = graph.get(source["from_node"], {})
        args = node.get("arguments") or {}
        if node.get("process_id") not in ("load_url", "load_geojson") or any(
                isinstance(v, dict) and ("from_node" in v or "from_parameter" in v) for v in args.values()):
            return None
        impl = load_url if node["process_id"] == "load_url" else load_geojson
        source = impl(**args)
    return len(to_geodataframe(source))


def prepare_graph(process_graph: dict, is_known: Callable[[str], bool],
                  udp_resolver: UdpLookup | None) -> dict:
    """A copy of ``process_graph`` ready to run: user-defined processes inlined, checked,
    extents pushed down.

    Raises:
        OpenEOApiError: ``ProcessGraphInvalid``, ``ProcessUnsupported``, ``CollectionNotFound``,
            ``FormatUnsupported`` or ``ProcessParameterInvalid`` for what cannot run.
    """
    graph = _check_shape(copy.deepcopy(process_graph))
    graph = expand_udps(graph, is_known, udp_resolver)
    _check_static(graph, is_known)
    return push_down_extents(_normalize_crs_members(graph))


def _check_static(graph: dict, is_known: Callable[[str], bool]) -> None:
    for node in graph.values():
        pid, args = node.get("process_id"), node.get("arguments") or {}
        if pid == "run_udf":
            check_udf(args.get("udf"), args.get("runtime"), args.get("version"))
        if pid == "load_collection":
            cid = args.get("id")
            if not is_ref(cid, "from_parameter"):
                spec = get_collection(cid)
                for band in args.get("bands") or []:
                    if isinstance(band, str):
                        spec.band(band)
        elif pid == "save_result":
            fmt = args.get("format")
            if isinstance(fmt, str):
                normalize_format(fmt)
        for value in args.values():
            if isinstance(value, dict) and isinstance(value.get("process_graph"), dict):
                for sub in value["process_graph"].values():
                    if not is_known(sub.get("process_id", "")):
                        raise ProcessUnsupported(
                            f"Process {sub.get('process_id')!r} is not available on this backend.")
                _check_static(value["process_graph"], is_known)
