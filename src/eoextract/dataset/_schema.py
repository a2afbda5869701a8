"""The columns of many point files, read once, checked against each other before a merge:
a required column missing in a file, one column typed differently by two jobs, or two
coordinate reference systems fail here, naming the file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    #: The GeoParquet ``geo`` metadata of the first file that has one.
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


def _parquet_family(ptype: str | None, converted: str | None, logical: str | None) -> str:
    logical, converted, ptype = logical or "", converted or "", ptype or ""
    if "String" in logical or converted in ("UTF8", "ENUM", "JSON") or "Enum" in logical:
        return STRING
    if "Timestamp" in logical or "Date" in logical or converted.startswith(("TIMESTAMP", "DATE")) \
            or ptype == "INT96":
        return TIME
    if ptype == "BOOLEAN":
        return BOOL
    if ptype in ("INT32", "INT64", "FLOAT", "DOUBLE") or "Decimal" in logical:
        return NUMBER
    if "Geometry" in logical or "Geography" in logical:
        return GEOMETRY
    if ptype in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY"):
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


def _fetch(cursor: Any, query: str) -> list[tuple]:
    try:
        return cursor.execute(query).fetchall()
    finally:
        cursor.close()


def _read_parquet(con: Any, paths: list[Path]
                  ) -> tuple[dict[Path, dict[str, str]], dict, bool]:
    listed = "[" + ", ".join(sql_string(str(p)) for p in paths) + "]"
    by_name = {str(p): p for p in paths}
    columns: dict[Path, dict[str, str]] = {p: {} for p in paths}
    queries = {
        "schema": f"SELECT file_name, name, type, converted_type, logical_type, num_children "
                  f"FROM parquet_schema({listed})",
        "geo": f"SELECT value, list(file_name) FROM parquet_kv_metadata({listed}) "
               f"WHERE key::VARCHAR = 'geo' GROUP BY value",
    }
    try:  # the three read the footers: side by side, each on a cursor of its own
        with ThreadPoolExecutor(len(queries)) as pool:
            futures = {k: pool.submit(_fetch, con.cursor(), q) for k, q in queries.items()}
            rows, kv = (futures[k].result() for k in queries)
    except Exception as exc:  # a file that is not Parquet: find which one
        for p in paths:
            try:
                con.execute(f"SELECT 1 FROM parquet_schema({sql_string(str(p))}) LIMIT 1")
            except Exception as inner:
                raise DatasetError(f"{p}: not a readable Parquet file ({inner})",
                                   path=str(p)) from exc
        raise
    pending: dict[Path, list[int]] = {}  # per file: children still to skip, per level
    signatures: dict[Path, list[tuple]] = {p: [] for p in paths}
    for file_name, name, ptype, converted, logical, children in rows:
        path = by_name.get(file_name) or Path(file_name)
        signatures[path].append((name, ptype, converted, logical))
        stack = pending.setdefault(path, [])
        if path not in columns or (not columns[path] and not stack and ptype is None
                                   and children and name in ("schema", "duckdb_schema",
                                                             "spark_schema", "root")):
            continue  # the root of the schema tree
        if stack:  # a descendant of a nested column
            stack[-1] -= 1
            if children:
                stack.append(int(children))
            while stack and stack[-1] == 0:
                stack.pop()
            continue
        if children:
            columns[path][name] = OTHER
            stack.append(int(children))
            continue
        columns[path][name] = _parquet_family(ptype, converted, logical)
    geo = {}
    for value, files in kv:  # files of one run share their metadata: parsed once
        meta = json.loads(bytes(value))
        geo.update((by_name.get(f) or Path(f), meta) for f in files)
    uniform = len({tuple(v) for v in signatures.values()}) == 1
    return columns, geo, uniform


def _read_text(con: Any, path: Path, fmt: str) -> dict[str, str]:
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader_sql([path], fmt)}").fetchall()
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable {fmt.upper()} point table ({exc})",
                           path=str(path)) from exc
    return {name: _duckdb_family(dtype) for name, dtype, *_ in described}


def _crs_key(geo: dict[str, Any]) -> str:
    primary = geo.get("primary_column", "geometry")
    crs = geo.get("columns", {}).get(primary, {}).get("crs", "OGC:CRS84")
    if isinstance(crs, dict) and isinstance(crs.get("id"), dict):
        return f"{crs['id'].get('authority')}:{crs['id'].get('code')}"
    return json.dumps(crs, sort_keys=True)


def read_schemas(con: Any, paths: Sequence[Path]) -> FileSchemas:
    """The columns of every file, checked for agreement between files.

    Raises:
        DatasetError: An unreadable file, a column whose family differs between two files
            (both named), or GeoParquet files in different coordinate reference systems.
    """
    formats = {p: file_format(p) for p in paths}
    parquet = [p for p in paths if formats[p] == "parquet"]
    columns: dict[Path, dict[str, str]] = {}
    geo_by_file: dict[Path, dict] = {}
    uniform = False
    if parquet:
        found, geo_by_file, uniform = _read_parquet(con, parquet)
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
            if family == BINARY and path in geo_by_file and name == geo_by_file[path].get(
                    "primary_column", "geometry"):
                family = cols[name] = GEOMETRY
            seen = union.setdefault(name, family)
            first.setdefault(name, path)
            if {seen, family} == {BINARY, GEOMETRY}:
                union[name] = GEOMETRY
            elif seen != family:
                raise DatasetError(
                    f"{path}: column {name!r} holds {family} values, but {seen} in "
                    f"{first[name]} (schemas of the jobs differ)", path=str(path))
    geo = None
    if geo_by_file:
        in_order = [(p, geo_by_file[p]) for p in paths if p in geo_by_file]
        reference_path, geo = in_order[0]
        reference = _crs_key(geo)
        for path, meta in in_order:
            if _crs_key(meta) != reference:
                raise DatasetError(f"{path}: geometry in {_crs_key(meta)}, but {reference} in "
                                   f"{reference_path} (reproject before merging)", path=str(path))
    return FileSchemas(columns=ordered, union=union, geo=geo,
                       formats=set(formats.values()), uniform=uniform)
