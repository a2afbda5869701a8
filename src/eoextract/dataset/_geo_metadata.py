"""GeoParquet ``geo`` metadata of the files of a merge: read once per distinct value,
checked for agreement (one CRS and one encoding per geometry column, the file named
otherwise), and merged into the metadata the merged files are written with, so their
geometry goes through as it was encoded (WKB stays WKB, not decoded and encoded again)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eoextract.errors import DatasetError

#: The GeoParquet version the merged files declare.
GEOPARQUET_VERSION = "1.1.0"


def parse_geo(value: Any, cache: dict[bytes, dict[str, Any]]) -> dict[str, Any] | None:
    """The parsed ``geo`` metadata of a raw value (``None``: none), parsed once per distinct
    value (``cache``: raw bytes -> parsed dict, shared between files)."""
    if value is None:
        return None
    raw = bytes(value)
    if raw not in cache:
        cache[raw] = json.loads(raw)
    return cache[raw]


def crs_key(crs: Any) -> str:
    """``AUTHORITY:CODE`` of a GeoParquet CRS (PROJJSON), ``OGC:CRS84`` when absent, else
    the CRS as sorted JSON."""
    if crs is None:
        return "OGC:CRS84"
    if isinstance(crs, dict) and isinstance(crs.get("id"), dict):
        return f"{crs['id'].get('authority')}:{crs['id'].get('code')}"
    return crs if isinstance(crs, str) else json.dumps(crs, sort_keys=True)


def merged_geo(geo_by_file: dict[Path, dict[str, Any]], order: Sequence[Path]
               ) -> dict[str, Any] | None:
    """The ``geo`` metadata of the merged files: per geometry column the encoding and CRS
    all files agree on and the union of their geometry types (none listed, i.e. unknown,
    when a file does not list them); no bounding box (it differs per written file).

    Raises:
        DatasetError: Two files with the same geometry column in different CRSs or
            encodings (both files named).
    """
    if not geo_by_file:
        return None
    columns: dict[str, dict[str, Any]] = {}
    first: dict[str, Path] = {}
    primary = None
    for path in order:
        meta = geo_by_file.get(path)
        if meta is None:
            continue
        primary = primary or meta.get("primary_column", "geometry")
        for name, column in meta.get("columns", {}).items():
            if name not in columns:
                columns[name] = {"encoding": column.get("encoding", "WKB"),
                                 "geometry_types": list(column.get("geometry_types", [])),
                                 **({"crs": column["crs"]} if "crs" in column else {})}
                first[name] = path
                continue
            merged = columns[name]
            ours, theirs = crs_key(column.get("crs")), crs_key(merged.get("crs"))
            if ours != theirs:
                raise DatasetError(f"{path}: geometry in {ours}, but {theirs} in {first[name]} "
                                   f"(reproject before merging)", path=str(path))
            if column.get("encoding", "WKB") != merged["encoding"]:
                raise DatasetError(f"{path}: geometry {name!r} encoded as "
                                   f"{column.get('encoding')}, but {merged['encoding']} in "
                                   f"{first[name]}", path=str(path))
            types = column.get("geometry_types", [])
            if not types or not merged["geometry_types"]:
                merged["geometry_types"] = []
            else:
                merged["geometry_types"] = sorted(set(merged["geometry_types"]) | set(types))
    return {"version": GEOPARQUET_VERSION, "primary_column": primary, "columns": columns}
