"""Point tables: many per-job point files (GeoParquet, CSV, JSON records) merged into one
Hive-partitioned GeoParquet dataset with DuckDB, deduplicated on a key, typed (UTC
timestamps, bands as compact integers with a nodata value), replaced partition by
partition, with a completeness report that can refuse the merge."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from eoextract.dataset._completeness import (
    CompletenessReport,
    counts_query,
    expected_samples,
    measure,
)
from eoextract.dataset._partitions import (
    discard_staging,
    recover,
    replace_partitions,
    staging_dir,
)
from eoextract.dataset._schema import (
    NUMBER,
    STRING,
    TIME,
    FileSchemas,
    read_schemas,
    reader_sql,
    sql_name,
    sql_string,
)
from eoextract.dataset._sources import file_format, find_point_files
from eoextract.errors import ConfigurationError, DatasetError

#: Integer types a band may be stored as, and their ranges.
BAND_TYPES = {"uint8": ("UTINYINT", 0, 255), "int8": ("TINYINT", -128, 127),
              "uint16": ("USMALLINT", 0, 65535), "int16": ("SMALLINT", -32768, 32767),
              "uint32": ("UINTEGER", 0, 2**32 - 1), "int32": ("INTEGER", -2**31, 2**31 - 1)}
#: The derived partition columns: name -> SQL over the time column.
_DERIVED = {"year": "year({t})", "month": "strftime({t}, '%Y-%m')"}
_FILE = "__eoextract_file"
#: Parquet compressions a merge may write with.
COMPRESSIONS = ("snappy", "zstd", "lz4_raw", "gzip", "brotli", "uncompressed")
#: Parquet format versions a merge may write: ``v2`` (data pages v2, delta encodings) or
#: ``v1`` for readers that predate them.
PARQUET_VERSIONS = ("v1", "v2")
#: Distinct values up to which a column of a v2 file is dictionary-encoded: labels and
#: partition-like ids are; bands and sample ids, whose values barely repeat within a row
#: group, are delta-encoded instead (smaller and cheaper to write than their dictionaries).
_DICTIONARY_LIMIT = 1024
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # DuckDB's folder for an empty partition value


def _connect(threads: int | None, temp: Path) -> Any:
    try:
        import duckdb
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ConfigurationError("merging point tables needs DuckDB: pip install "
                                 "'eoextract[dataset]'") from exc
    major, minor = (int(x) for x in duckdb.__version__.split(".")[:2])
    if (major, minor) < (1, 5):  # GEOMETRY (and GeoParquet metadata written) from 1.5 on
        raise ConfigurationError(f"merging point tables needs DuckDB >= 1.5, not "
                                 f"{duckdb.__version__}: pip install 'eoextract[dataset]'")
    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    # no parquet_metadata_cache: the footers are read by pyarrow before, and caching them
    # during the COPY measured slower than parsing them in it
    con.execute("SET enable_geoparquet_conversion = false")  # WKB written as it was read
    con.execute(f"SET temp_directory = {sql_string(str(temp))}")
    return con


def _relation(paths: Sequence[Path], *, by_name: bool, with_file: bool) -> str:
    """All files as one relation (columns matched by name when their columns differ),
    with the file of each row when ``with_file``."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(file_format(p), []).append(p)
    parts = []
    for fmt, group in groups.items():
        reader = reader_sql(group, fmt, by_name=by_name or len(groups) > 1)
        if with_file:
            reader = reader.removesuffix(")") + ", filename = true)"
            parts.append(f"SELECT * EXCLUDE (filename), filename AS {_FILE} FROM {reader}")
        else:
            parts.append(f"SELECT * FROM {reader}")
    return "(" + " UNION ALL BY NAME ".join(parts) + ")"


def _select_list(schemas: FileSchemas, *, partition_by: str, time_column: str | None,
                 bands: Sequence[str], band_type: str, nodata: int | None) -> list[str]:
    sql_type, low, high = BAND_TYPES[band_type]
    out = []
    for name, family in schemas.union.items():
        col = sql_name(name)
        if name == time_column:
            if family not in (TIME, STRING):
                raise DatasetError(f"time column {name!r} holds {family} values, not times")
            out.append(f"CAST({col} AS TIMESTAMPTZ) AS {col}")
        elif name in bands:
            if family != NUMBER:
                raise DatasetError(f"band {name!r} holds {family} values, not numbers")
            fill = "NULL" if nodata is None else str(int(nodata))
            out.append(f"CASE WHEN {col} IS NULL OR isnan({col}) THEN {fill} "
                       f"ELSE CAST(round({col}) AS {sql_type}) END::{sql_type} AS {col}")
        else:
            out.append(col)
    if partition_by not in schemas.union:
        out.append(f"{_DERIVED[partition_by].format(t=sql_name(time_column or ''))} "
                   f"AS {sql_name(partition_by)}")
    return out


#: Key hashes held in memory at once by the search for repeated keys (8 bytes each); more
#: rows are searched in slices of the hash range, one scan each.
_HASHES_PER_SCAN = 1 << 24


def _repeated_hashes(con: Any, table: str, key: Sequence[str], partition_by: str,
                     rows: int) -> list[int]:
    """The 64-bit hashes of ``key`` seen more than once in ``table`` (the staged output of
    ``rows`` rows): one narrow scan of the key columns, the hashes sorted in memory (sorting
    a million of them costs milliseconds; a hash table of as many groups, a hundred). The
    partition column is left out of the hash (rows of one key in two partitions still count
    as repeated)."""
    import numpy as np

    columns = [k for k in key if k != partition_by] or list(key)
    hashed = f"hash({', '.join(sql_name(k) for k in columns)})"
    slices = max(1, -(-rows // _HASHES_PER_SCAN))
    repeated: list[int] = []
    for part in range(slices):
        where = f" WHERE {hashed} % {slices} = {part}" if slices > 1 else ""
        hashes = con.sql(f"SELECT {hashed} AS h FROM {table}{where}").fetchnumpy()["h"]
        hashes = np.asarray(hashes, dtype=np.uint64)
        hashes.sort()
        again = hashes[1:][hashes[1:] == hashes[:-1]]
        repeated.extend(np.unique(again).tolist())
    return repeated


def _deduplicated(con: Any, select: str, paths: Sequence[Path], key: Sequence[str],
                  partition_by: str, by_name: bool, repeated_hashes: list[int]) -> str:
    """The query of the merged rows, one per ``key`` (the row of the last file wins).

    Rows whose (typed) key hash is unique are kept as they are; only rows of a repeated
    hash (true duplicates and the rare collision) go through the exact window on the key.
    """
    import pyarrow as pa

    columns = [k for k in key if k != partition_by] or list(key)
    hashed = ", ".join(sql_name(k) for k in columns)
    keys = ", ".join(sql_name(k) for k in key)
    con.register("_eoextract_hashes", pa.table({"h": pa.array(repeated_hashes, pa.uint64())}))
    repeated = f"hash({hashed}) IN (SELECT h FROM _eoextract_hashes)"
    plain = _relation(paths, by_name=by_name, with_file=False)
    with_file = _relation(paths, by_name=by_name, with_file=True)
    return (f"SELECT * FROM (SELECT {select} FROM {plain}) WHERE NOT {repeated} UNION ALL "
            f"SELECT * EXCLUDE ({_FILE}) FROM (SELECT {select}, {_FILE} FROM {with_file}) "
            f"WHERE {repeated} QUALIFY row_number() OVER (PARTITION BY {keys} "
            f"ORDER BY {_FILE} DESC) = 1")


def _checked(con: Any, paths: Sequence[Path], key: Sequence[str], **options: Any
             ) -> tuple[FileSchemas, str | None]:
    """The files' schemas, checked against the options; and the time column (``None``
    when no file has it)."""
    schemas = read_schemas(con, paths)
    time_column = options.pop("time_column")
    if time_column is not None and time_column not in schemas.union:
        time_column = None
    _check_options(schemas, key=key, time_column=time_column, **options)
    return schemas, time_column


def _writer_options(compression: str, parquet_version: str) -> str:
    """The Parquet options of the ``COPY`` of a merge."""
    if compression not in COMPRESSIONS:
        raise ConfigurationError(f"compression must be one of {', '.join(COMPRESSIONS)}, "
                                 f"not {compression!r}")
    if parquet_version not in PARQUET_VERSIONS:
        raise ConfigurationError(f"parquet_version must be one of {', '.join(PARQUET_VERSIONS)}"
                                 f", not {parquet_version!r}")
    if parquet_version == "v1":  # DuckDB's defaults: dictionaries, or plain values
        return f"COMPRESSION {compression}"
    return (f"COMPRESSION {compression}, PARQUET_VERSION V2, "
            f"DICTIONARY_SIZE_LIMIT {_DICTIONARY_LIMIT}")


def _copy(con: Any, query: str, target: Path, partition_by: str, writer: str,
          geo: dict[str, Any] | None, explain: Any) -> int:
    """Write ``query`` as Hive partitions below ``target`` (with ``geo`` as their GeoParquet
    metadata); the rows written."""
    metadata = f", KV_METADATA {{geo: {sql_string(json.dumps(geo))}}}" if geo else ""
    try:
        return int(con.execute(
            f"COPY ({query}) TO {sql_string(str(target))} (FORMAT parquet, "
            f"PARTITION_BY ({sql_name(partition_by)}), {writer}{metadata})"
        ).fetchall()[0][0])
    except Exception as exc:
        raise explain(exc) from exc


def _check_options(schemas: FileSchemas, *, partition_by: str, key: Sequence[str],
                   time_column: str | None, bands: Sequence[str], band_type: str,
                   nodata: int | None, attributes: Sequence[str]) -> None:
    if band_type not in BAND_TYPES:
        raise ConfigurationError(f"band_type must be one of {', '.join(BAND_TYPES)}, "
                                 f"not {band_type!r}")
    _, low, high = BAND_TYPES[band_type]
    if nodata is not None and not low <= nodata <= high:
        raise ConfigurationError(f"nodata {nodata} does not fit {band_type} ({low}..{high})")
    if partition_by in schemas.union:
        schemas.require([partition_by], "partition")
    elif partition_by in _DERIVED and time_column in schemas.union:
        schemas.require([time_column], "time")
    else:
        hint = f" (or one of {', '.join(_DERIVED)}, derived from the time column)"
        raise DatasetError(f"no file has the partition column {partition_by!r}{hint}")
    schemas.require(key, "key")
    unknown = [b for b in [*bands, *attributes] if b not in schemas.union]
    if unknown:
        raise DatasetError(f"no file has the column(s) {', '.join(map(repr, unknown))}")


def merge_points(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    partition_by: str,
    key: Sequence[str] = ("sample_id", "timestamp"),
    time_column: str | None = "timestamp",
    bands: Sequence[str] = (),
    band_type: str = "uint16",
    nodata: int | None = None,
    attributes: Sequence[str] = (),
    sample_column: str | None = "sample_id",
    expected: Iterable[str] | str | os.PathLike[str] | Any | None = None,
    max_missing_fraction: float | None = None,
    max_without_attributes_fraction: float | None = None,
    threads: int | None = None,
    compression: str = "snappy",
    parquet_version: str = "v2",
) -> CompletenessReport:
    """Merge per-job point files into one Hive-partitioned GeoParquet dataset.

    Rows are read from every file by column name (a column missing from a file is empty
    there), deduplicated on ``key`` (the row of the last file in path order wins), typed,
    and written as ``output/<partition_by>=<value>/*.parquet``. Only the partitions present
    in this merge are replaced; the others stay. Nothing is moved into ``output`` until the
    whole merge is written and its completeness checked.

    Args:
        sources: Point files, output folders or a catalogue (see
            :func:`~eoextract.dataset.find_point_files`).
        output: The dataset's folder.
        partition_by: The partition column (e.g. ``ref_id``, a tile column), or ``year``
            / ``month`` derived from ``time_column``.
        key: The columns that identify a row; duplicates on them are dropped.
        time_column: Stored as a UTC timestamp (naive times are read as UTC, strings with
            an offset are converted); ``None`` when the table has none.
        bands: Columns stored as ``band_type`` integers (rounded; empty or NaN values
            become ``nodata``, or stay empty without one).
        band_type: ``uint8``, ``int8``, ``uint16``, ``int16``, ``uint32`` or ``int32``.
        nodata: The value of an empty band value.
        attributes: Label columns; a row with all of them empty counts as without attributes.
        sample_column: The sample id column, for the count of samples found and missing.
        expected: The samples expected: ids, or a job database (object, path or URL) read
            with :func:`~eoextract.dataset.expected_samples`.
        max_missing_fraction: Refuse the merge when more of the expected samples are missing.
        max_without_attributes_fraction: Refuse the merge when more rows lack attributes.
        threads: DuckDB threads (default: all cores).
        compression: Parquet compression of the written files (``snappy``, ``zstd``, ``brotli``,
            ``lz4_raw``, ``gzip``, ``uncompressed``).
        parquet_version: ``v2`` (data pages v2; integer bands delta-encoded) or ``v1``
            (for readers that predate Parquet 2 encodings; integer bands dictionary-encoded).

    Returns:
        The :class:`~eoextract.dataset.CompletenessReport` of what was written.

    Raises:
        DatasetError: A file without a required column, schemas that differ between files,
            a band value that does not fit ``band_type`` (names the file when it can).
        IncompleteDataset: A threshold exceeded; nothing was written.
        ConfigurationError: ``output`` is a file, an unknown ``compression`` or ``parquet_version``.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigurationError(f"{output} is a file; the dataset is a folder of partitions "
                                 "(give a folder name)")
    writer = _writer_options(compression, parquet_version)
    paths = find_point_files(sources)
    bands, attributes, key = list(bands), list(attributes), list(key)
    if isinstance(expected, (str, os.PathLike)) or hasattr(expected, "read"):
        expected = expected_samples(expected, sample_column or "sample_id")
    recover(output)
    staging = staging_dir(output)
    try:
        con = _connect(threads, staging / ".spill")
        try:
            report, data = _merge(con, paths, staging, partition_by=partition_by, key=key,
                                  time_column=time_column, bands=bands, band_type=band_type,
                                  nodata=nodata, attributes=attributes,
                                  sample_column=sample_column, expected=expected,
                                  writer=writer)
        finally:
            con.close()
        report.check(max_missing_fraction, max_without_attributes_fraction)
        if report.rows:
            replace_partitions(data, output, partition_by, staging)
        return report
    finally:
        discard_staging(staging, output)


def _copy_while_checking(con: Any, paths: Sequence[Path], key: Sequence[str],
                         typed_copy: Any, data: Path, **options: Any
                         ) -> tuple[FileSchemas, str | None, str, int, Path]:
    """The checked schemas of all files, and the typed ``COPY`` of their rows below ``data``
    (its select list, rows and folder of partitions). The copy starts as soon as the first
    file's footer is checked, typed by that file's schema, while the other footers are read
    beside it (the ``COPY`` runs without the GIL); it is kept only when every file has that
    schema and GeoParquet metadata, else it is interrupted and written again from all the
    schemas. A check that fails interrupts it too, and raises."""
    first = None
    if len(paths) > 1 and all(file_format(p) == "parquet" for p in paths):
        try:
            first = _checked(con, paths[:1], key, **dict(options))
        except (DatasetError, ConfigurationError):
            first = None  # the checks of all files say why, in file order
    if first is None:
        schemas, time_column = _checked(con, paths, key, **dict(options))
        return schemas, time_column, *typed_copy(schemas, time_column, data), data
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["copy"] = typed_copy(*first, data)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    copying = threading.Thread(target=run, name="eoextract-merge-copy")
    copying.start()
    try:
        schemas, time_column = _checked(con, paths, key, **dict(options))
    except BaseException:
        con.interrupt()
        copying.join()
        raise
    if schemas.uniform and schemas.geo == first[0].geo:
        copying.join()
        if "error" in outcome:
            raise outcome["error"]
        return schemas, time_column, *outcome["copy"], data
    con.interrupt()  # the files differ: typed again from all their schemas
    copying.join()
    for part in _written_folders(data, options["partition_by"]):
        shutil.rmtree(part)
    again = data / "merged"
    return schemas, time_column, *typed_copy(schemas, time_column, again), again


def _merge(con: Any, paths: Sequence[Path], staging: Path, *, partition_by: str,
           key: Sequence[str], sample_column: str | None, expected: Any, writer: str,
           **options: Any) -> tuple[CompletenessReport, Path]:
    """Write the merge below ``staging``: every row typed in one pass; when the written
    rows repeat a key, once more from the files with the duplicates dropped. Returns the
    report and the folder of the partitions."""
    bands, band_type = options["bands"], options["band_type"]
    explain = lambda exc: _explain(exc, con, paths, bands, band_type)  # noqa: E731

    def typed_copy(schemas: FileSchemas, time_column: str | None, folder: Path
                   ) -> tuple[str, int]:
        select = ", ".join(_select_list(schemas, partition_by=partition_by,
                                        time_column=time_column, bands=bands,
                                        band_type=band_type, nodata=options["nodata"]))
        relation = _relation(paths, by_name=not schemas.uniform, with_file=False)
        return select, _copy(con, f"SELECT {select} FROM {relation}", folder, partition_by,
                             writer, schemas.geo, explain)

    # the partitions' folders go straight into staging, beside DuckDB's spill folder
    schemas, time_column, select, rows, data = _copy_while_checking(
        con, paths, key, typed_copy, staging, partition_by=partition_by, **options)
    by_name = not schemas.uniform
    rows_read = rows
    written = _partitions_written(data, partition_by)
    if _NULL_PARTITION in written:
        raise _empty_partition(con, paths, partition_by, schemas)
    staged = _staged(data)

    sample = sample_column if sample_column in schemas.union else None

    def report_of(connection: Any, rows: int, written: list[str],
                  counts: Sequence[int] | None = None) -> CompletenessReport:
        return measure(connection, _staged(data) if rows else None, sample_column=sample,
                       attributes=options["attributes"], expected=expected, rows=rows,
                       rows_read=rows_read, partitions=written, counts=counts)

    if not rows:
        return report_of(con, rows, written), data
    # the report's counts on a second cursor, beside the search for repeated keys (which
    # sorts its hashes in numpy, without the GIL)
    counting = con.cursor()
    with ThreadPoolExecutor(max_workers=1) as pool:
        counts = pool.submit(lambda: counting.execute(counts_query(
            staged, sample_column=sample, attributes=options["attributes"])).fetchall()[0])
        try:
            repeated = _repeated_hashes(con, staged, key, partition_by, rows)
        finally:
            counted = counts.result()
            counting.close()
    if not repeated:
        return report_of(con, rows, written, counted), data
    # duplicates: written again, the last file's row of each key kept
    for part in _written_folders(data, partition_by):
        shutil.rmtree(part)
    data = staging / "deduplicated"
    query = _deduplicated(con, select, paths, key, partition_by, by_name, repeated)
    rows = _copy(con, query, data, partition_by, writer, schemas.geo, explain)
    return report_of(con, rows, _partitions_written(data, partition_by)), data


def _staged(data: Path) -> str:
    """The written partitions of ``data`` as a DuckDB relation."""
    return f"read_parquet({sql_string(str(data / '*' / '*.parquet'))}, hive_partitioning = true)"


def _written_folders(data: Path, partition_by: str) -> list[Path]:
    """The partition folders DuckDB wrote in ``data``."""
    prefix = f"{partition_by}="
    return [p for p in data.iterdir() if p.name.startswith(prefix)] if data.is_dir() else []


def _partitions_written(data: Path, partition_by: str) -> list[str]:
    return sorted(unquote(p.name.split("=", 1)[1]) for p in _written_folders(data, partition_by))


def _empty_partition(con: Any, paths: Sequence[Path], partition_by: str,
                     schemas: FileSchemas) -> DatasetError:
    """A :class:`DatasetError` naming a file with rows whose partition value is empty."""
    column = partition_by if partition_by in schemas.union else None
    for p in paths:
        if column is None or column not in schemas.columns[p]:
            continue
        reader = reader_sql([p], file_format(p))
        (empty,), = con.execute(f"SELECT count(*) FROM {reader} WHERE {sql_name(column)} IS NULL"
                                ).fetchall()
        if empty:
            return DatasetError(f"{p}: {empty} row(s) without a value of the partition column "
                                f"{column!r}; nothing written", path=str(p))
    return DatasetError(f"rows without a value of the partition column {partition_by!r} "
                        f"(no time?); nothing written")


def _explain(exc: Exception, con: Any, paths: Sequence[Path], bands: Sequence[str],
             band_type: str) -> Exception:
    """A :class:`DatasetError` for a failed merge, naming the file when it can be found."""
    text = str(exc).splitlines()[0]
    if "Conversion" in type(exc).__name__ or "out of range" in text.lower():
        sql_type, low, high = BAND_TYPES[band_type]
        for b in bands:
            col = sql_name(b)
            for p in paths:
                try:
                    bad = con.execute(
                        f"SELECT {col} FROM {reader_sql([p], file_format(p))} WHERE "
                        f"NOT isnan({col}) AND (round({col}) < {low} OR round({col}) > {high}) "
                        f"LIMIT 1").fetchall()
                except Exception:
                    continue
                if bad:
                    return DatasetError(f"{p}: band {b!r} holds {bad[0][0]}, outside {band_type} "
                                        f"({low}..{high}); choose a wider band_type",
                                        path=str(p))
    return DatasetError(f"merge failed, nothing written: {text}")
