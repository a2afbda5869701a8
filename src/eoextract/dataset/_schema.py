"""The columns of many point files, read once, checked against each other before a merge:
a required column missing in a file, one column typed differently by two jobs, or two
coordinate reference systems fail here, naming the file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eoextract.dataset._geo_metadata import crs_key, merged_geo, parse_geo
from eoextract.dataset._sources import file_format
from eoextract.errors import DatasetError

#: Column families: two files may disagree on the width of a number, not on its family.
STRING, NUMBER, TIME, BOOL, BINARY, GEOMETRY, OTHER = (
    "string", "number", "time", "boolean", "binary", "geometry", "other")


@dataclass
class FileSchemas:
    """What the files hold, as read from their metadata (Parquet) or by sniffing (CSV/JSON)."""

    #: Per file (in merge order), column name -> family.
    columns: dict[Path, dict[str, str]]
    #: Column name -> family, over all files (the first file that has it decides).
    union: dict[str, str]
    #: The CRS of the geometry (``AUTHORITY:CODE`` when it has one), if any.
    crs: str | None = None
    #: The GeoParquet metadata to write the merged files with (WKB geometry read as is).
    geo: dict[str, Any] | None = None
    formats: set[str] = field(default_factory=set)
    #: Whether every file has the same columns, in the same order, with the same types.
    uniform: bool = False

    def require(self, names: Iterable[str], what: str) -> None:
        """Every file has every one of ``names``; else a :class:`DatasetError` naming the file."""
        for path, cols in self.columns.items():
            missing = [n for n in names if n not in cols]
            if missing:
                raise DatasetError(f"{path}: no {what} column {', '.join(map(repr, missing))} "
                                   f"(columns: {', '.join(cols)})", path=str(path))


def _parquet_family(physical: str, converted: str, logical: str) -> str:
    """The family of a Parquet leaf column, from its physical, converted and logical type
    names (as pyarrow spells them: ``BYTE_ARRAY``, ``UTF8``, ``STRING``)."""
    if logical in ("STRING", "ENUM", "JSON") or converted in ("UTF8", "ENUM", "JSON"):
        return STRING
    if logical in ("TIMESTAMP", "DATE") or converted.startswith(("TIMESTAMP", "DATE")) \
            or physical == "INT96":
        return TIME
    if physical == "BOOLEAN":
        return BOOL
    if physical in ("INT32", "INT64", "FLOAT", "DOUBLE") or logical == "DECIMAL":
        return NUMBER
    if logical in ("GEOMETRY", "GEOGRAPHY"):
        return GEOMETRY
    if physical in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"):
        return BINARY
    return OTHER


def _duckdb_family(dtype: str) -> str:
    t = dtype.upper()
    if t.startswith(("VARCHAR", "ENUM")):
        return STRING
    if t.startswith(("TIMESTAMP", "DATE")):
        return TIME
    if t == "BOOLEAN":
        return BOOL
    if t.startswith(("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT",
                     "USMALLINT", "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")):
        return NUMBER
    if t.startswith("GEOMETRY"):
        return GEOMETRY
    if t == "BLOB":
        return BINARY
    return OTHER


def reader_sql(paths: Sequence[Path], fmt: str, *, by_name: bool = True) -> str:
    """A DuckDB table function reading ``paths`` (columns matched by name if ``by_name``)."""
    listed = "[" + ", ".join(sql_string(str(p)) for p in paths) + "]"
    union = str(by_name).lower()
    if fmt == "parquet":
        return f"read_parquet({listed}, union_by_name = {union})"
    if fmt == "csv":
        return f"read_csv({listed}, union_by_name = {union}, header = true)"
    return f"read_json_auto({listed}, union_by_name = {union})"


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_name(value: str) -> str:
    """A SQL identifier, quoted."""
    return '"' + value.replace('"', '""') + '"'


def _columns_of(schema: Any) -> tuple[dict[str, str], str | None]:
    """Top-level column families of a pyarrow ``ParquetSchema`` (in schema order; a nested
    column is ``other``), and the CRS of its native geometry column (``None``: none)."""
    leaves = {}
    for i in range(len(schema)):
        leaves.setdefault(schema.column(i).path, schema.column(i))
    columns: dict[str, str] = {}
    crs = None
    for top in schema.to_arrow_schema():
        leaf = leaves.get(top.name)
        if leaf is None or top.type.num_fields:  # a struct, list or map
            columns[top.name] = OTHER
            continue
        logical = leaf.logical_type.type
        columns[top.name] = family = _parquet_family(leaf.physical_type, leaf.converted_type,
                                                     logical)
        if family == GEOMETRY and crs is None:
            crs = _native_crs(leaf.logical_type.to_json())
    return columns, crs


def _native_crs(logical_json: str) -> str:
    """``AUTHORITY:CODE`` (or the CRS text) of a Parquet GEOMETRY/GEOGRAPHY logical type,
    given as pyarrow's JSON of it (no CRS: ``OGC:CRS84``)."""
    crs = json.loads(logical_json).get("crs")
    if isinstance(crs, str):
        try:
            crs = json.loads(crs)
        except ValueError:
            pass
    return crs_key(crs or None)


def _footer(path: Path) -> tuple[Any, bytes | None]:
    """One file's Parquet schema and raw GeoParquet ``geo`` value, from its footer."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})",
                           path=str(path)) from exc
    return meta.schema, (meta.metadata or {}).get(b"geo")


def _read_parquet(paths: list[Path]
                  ) -> tuple[dict[Path, dict[str, str]], dict[Path, dict], dict[Path, str], bool]:
    """Per file: columns, GeoParquet metadata and the CRS of a native geometry column; and
    whether all files have one schema. Each footer is read once, with pyarrow (about 50 µs
    a file, one after the other: a pool of threads measured no faster); a schema and a
    ``geo`` value are turned into columns and parsed once however many files share them."""
    distinct: list[tuple[Any, dict[str, str], str | None]] = []  # schema, columns, CRS
    parsed: dict[bytes, dict[str, Any]] = {}
    columns: dict[Path, dict[str, str]] = {}
    geo_by_file: dict[Path, dict] = {}
    crs_by_file: dict[Path, str] = {}
    last = None
    for path in paths:
        schema, raw_geo = _footer(path)
        if last is None or not schema.equals(last[0]):
            last = next((d for d in distinct if schema.equals(d[0])), None)
            if last is None:
                last = (schema, *_columns_of(schema))
                distinct.append(last)
        _, found, crs = last
        meta = parse_geo(raw_geo, parsed)
        cols = columns[path] = dict(found)
        if meta is not None:
            geo_by_file[path] = meta
            for name in meta.get("columns", {}):
                if cols.get(name) == BINARY:
                    cols[name] = GEOMETRY  # WKB, as the GeoParquet metadata says
        if crs is not None:
            crs_by_file[path] = crs
    return columns, geo_by_file, crs_by_file, len(distinct) == 1


def _read_text(con: Any, path: Path, fmt: str) -> dict[str, str]:
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader_sql([path], fmt)}").fetchall()
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable {fmt.upper()} point table ({exc})",
                           path=str(path)) from exc
    return {name: _duckdb_family(dtype) for name, dtype, *_ in described}


def read_schemas(con: Any, paths: Sequence[Path]) -> FileSchemas:
    """The columns of every file, checked for agreement between files.

    Raises:
        DatasetError: An unreadable file, a column whose family differs between two files
            (both named), or GeoParquet files in different coordinate reference systems.
    """
    formats = {p: file_format(p) for p in paths}
    parquet = [p for p in paths if formats[p] == "parquet"]
    columns: dict[Path, dict[str, str]] = {}
    crs_by_file: dict[Path, str] = {}
    geo_by_file: dict[Path, dict] = {}
    uniform = False
    if parquet:
        found, geo_by_file, crs_by_file, uniform = _read_parquet(parquet)
        columns.update(found)
    for p in paths:
        if formats[p] != "parquet":
            columns[p] = _read_text(con, p, formats[p])
            uniform = False
    ordered = {p: columns[p] for p in paths}
    union: dict[str, str] = {}
    first: dict[str, Path] = {}
    for path, cols in ordered.items():
        for name, family in cols.items():
            seen = union.setdefault(name, family)
            first.setdefault(name, path)
            if {seen, family} == {BINARY, GEOMETRY}:
                union[name] = GEOMETRY
            elif seen != family:
                raise DatasetError(
                    f"{path}: column {name!r} holds {family} values, but {seen} in "
                    f"{first[name]} (schemas of the jobs differ)", path=str(path))
    geo = merged_geo(geo_by_file, paths)
    for path, meta in geo_by_file.items():
        primary = meta.get("primary_column", "geometry")
        crs_by_file.setdefault(path, crs_key(meta.get("columns", {}).get(primary, {}).get("crs")))
    crs = None
    if crs_by_file:
        in_order = [(p, crs_by_file[p]) for p in paths if p in crs_by_file]
        reference_path, crs = in_order[0]
        for path, other in in_order:
            if other != crs:
                raise DatasetError(f"{path}: geometry in {other}, but {crs} in "
                                   f"{reference_path} (reproject before merging)", path=str(path))
    return FileSchemas(columns=ordered, union=union, crs=crs, geo=geo,
                       formats=set(formats.values()), uniform=uniform)
