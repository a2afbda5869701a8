"""The columns of many point files, read once, checked against each other before a merge:
a required column missing in a file, one column typed differently by two jobs, or two
coordinate reference systems fail here, naming the file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eoextract.dataset._geo_metadata import crs_key, geo_query, merged_geo, parse_geo
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


def _columns_of(rows: Sequence[Sequence[Any]]) -> tuple[dict[str, str], str | None]:
    """Top-level column families of one file's ``parquet_schema`` rows (in schema order),
    and the CRS of its geometry (``None``: no geometry column)."""
    columns: dict[str, str] = {}
    crs = None
    stack: list[int] = []  # children still to skip, per level of a nested column
    for i, (name, ptype, converted, logical, children, duckdb_type) in enumerate(rows):
        if i == 0 and ptype is None and children:
            continue  # the root of the schema tree
        if stack:  # a descendant of a nested column
            stack[-1] -= 1
            if children:
                stack.append(int(children))
            while stack and stack[-1] == 0:
                stack.pop()
            continue
        if children:
            columns[name] = OTHER
            stack.append(int(children))
            continue
        family = _parquet_family(ptype, converted, logical)
        if (duckdb_type or "").upper().startswith("GEOMETRY"):  # a native geometry
            family = GEOMETRY
            if crs is None:
                crs = _crs_key(duckdb_type)
        columns[name] = family
    return columns, crs


def _read_parquet(con: Any, paths: list[Path]
                  ) -> tuple[dict[Path, dict[str, str]], dict[Path, dict], dict[Path, str], bool]:
    """Per file: columns, GeoParquet metadata and the CRS of a native geometry column; and
    whether all files have one schema. One pass over the footers (they stay cached for the
    reads that follow): files are grouped by schema and raw ``geo`` value in SQL, so a
    schema and a ``geo`` value are parsed once however many files share them."""
    listed = "[" + ", ".join(sql_string(str(p)) for p in paths) + "]"
    by_name = {str(p): p for p in paths}
    # a file's schema rows in column order: sorted after the aggregate on their zero-padded
    # column id (cheaper than an ordered aggregate)
    query = (f"WITH schemas AS (SELECT file_name, list_sort(list([lpad(column_id::VARCHAR, 10, "
             f"'0'), name, type, converted_type, logical_type, num_children::VARCHAR, "
             f"duckdb_type])) AS cols FROM parquet_schema({listed}) GROUP BY file_name), "
             f"geo AS ({geo_query(listed)}) "
             f"SELECT list(file_name), any_value(cols), any_value(value) FROM schemas "
             f"LEFT JOIN geo USING (file_name) GROUP BY cols, value")
    try:
        groups = con.execute(query).fetchall()
    except Exception as exc:  # a file that is not Parquet: find which one
        for p in paths:
            try:
                con.execute(f"SELECT 1 FROM parquet_schema({sql_string(str(p))}) LIMIT 1")
            except Exception as inner:
                raise DatasetError(f"{p}: not a readable Parquet file ({inner})",
                                   path=str(p)) from exc
        raise
    geo_by_file: dict[Path, dict] = {}
    parsed: dict[bytes, dict[str, Any]] = {}
    for files, _, value in groups:
        meta = parse_geo(value, parsed)
        if meta is not None:
            geo_by_file.update((by_name.get(f) or Path(f), meta) for f in files)
    columns: dict[Path, dict[str, str]] = {}
    crs_by_file: dict[Path, str] = {}
    schemas: dict[Any, tuple[dict[str, str], str | None]] = {}
    for files, rows, _ in groups:
        key = tuple(map(tuple, rows))
        if key not in schemas:
            schemas[key] = _columns_of([row[1:] for row in rows])
        found, crs = schemas[key]
        for f in files:
            path = by_name.get(f) or Path(f)
            cols = columns[path] = dict(found)
            for name in geo_by_file.get(path, {}).get("columns", {}):
                if cols.get(name) == BINARY:
                    cols[name] = GEOMETRY  # WKB, as the GeoParquet metadata says
            if crs is not None:
                crs_by_file[path] = crs
    return columns, geo_by_file, crs_by_file, len(schemas) == 1


def _read_text(con: Any, path: Path, fmt: str) -> dict[str, str]:
    try:
        described = con.execute(f"DESCRIBE SELECT * FROM {reader_sql([path], fmt)}").fetchall()
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable {fmt.upper()} point table ({exc})",
                           path=str(path)) from exc
    return {name: _duckdb_family(dtype) for name, dtype, *_ in described}


def _crs_key(duckdb_type: str) -> str:
    """``AUTHORITY:CODE`` (or the CRS text) of a DuckDB ``GEOMETRY('<crs>')`` type."""
    inner = duckdb_type.strip()
    inner = inner[inner.find("(") + 1:inner.rfind(")")] if "(" in inner else ""
    inner = inner.strip().strip("'").replace("''", "'")
    if not inner:
        return "OGC:CRS84"
    try:
        crs = json.loads(inner)
    except ValueError:
        return inner
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
    crs_by_file: dict[Path, str] = {}
    geo_by_file: dict[Path, dict] = {}
    uniform = False
    if parquet:
        found, geo_by_file, crs_by_file, uniform = _read_parquet(con, parquet)
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
