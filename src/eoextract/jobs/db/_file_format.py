"""Reading and writing job tables as openeo-compatible CSV and (Geo)Parquet files.

The file layout is described in :mod:`eoextract.jobs.db._file_db`; this module only turns a
job table into a file and back, writes atomically and keeps the sidecar files.
"""

from __future__ import annotations

import csv
import json
import logging
import mmap
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eoextract._util.files import atomic_path, atomic_write
from eoextract.errors import JobDatabaseError, SchemaVersionError
from eoextract.jobs.db._columns import UserSchema
from eoextract.jobs.db._frame import EXACT_STATUS_COLUMN, MANAGED_KINDS
from eoextract.jobs.db._models import CREATED_BY, SCHEMA_VERSION
from eoextract.jobs.db._records import StatusChange
from eoextract.jobs.db._usage_columns import USAGE_COLUMNS, usage_key_columns
from eoextract.jobs.status import OPENEO_STATUS, JobStatus

_log = logging.getLogger(__name__)


#: The columns openeo 0.53 writes after the user's, in its order; usage columns (one per
#: usage key) follow once a job reported them.
_OPENEO_COLUMNS = ["id", "backend_name", "status", "start_time", "running_start_time", "costs"]
_USAGE_COLUMNS = list(USAGE_COLUMNS)
HISTORY_FIELDS = ["job_key", "old", "new", "at", "manager_id", "message", "backend_job_id"]
#: openeo's ``read_csv`` dtypes (its ``_column_requirements``).
_OPENEO_CSV_DTYPES = {"id": "str", "backend_name": "str", "status": "str", "start_time": "str",
                      "running_start_time": "str", "costs": "float64"}


_OPENEO_TEXT = {s.value: text for s, text in OPENEO_STATUS.items()}


def _rfc3339_column(col: pd.Series) -> pd.Series:
    """UTC timestamps as RFC 3339 text (``2024-03-07T14:32:38Z``, as openeo writes them)."""
    present = col.notna()
    if not present.any():
        return pd.Series([None] * len(col), index=col.index, dtype=object)
    naive = col.dt.tz_convert("UTC").dt.tz_localize(None)
    unit = "s" if bool((naive[present].dt.microsecond == 0).all()) else "us"
    text = np.char.add(np.datetime_as_string(naive.to_numpy(dtype="datetime64[us]"), unit=unit), "Z")
    return pd.Series(text, index=col.index, dtype=object).where(present, None)


def read_meta(path: Path) -> dict[str, Any]:
    """The sidecar ``.meta.json`` (empty when there is none: a file written by openeo)."""
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobDatabaseError(f"unreadable job database metadata {str(path)!r}: {exc}") from exc
    if meta.get("created_by") != CREATED_BY:
        raise JobDatabaseError(f"{str(path)!r} was not written by eoextract")
    if int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
        raise SchemaVersionError(f"{str(path)!r} has schema version {meta['schema_version']}, "
                                 f"this eoextract knows up to {SCHEMA_VERSION}; upgrade eoextract")
    return meta


def write_meta(path: Path, meta: Mapping[str, Any]) -> None:
    """Write the sidecar ``.meta.json`` atomically."""
    atomic_write(path, json.dumps(meta, indent=1))


def read_table(path: Path, schema: UserSchema | None) -> pd.DataFrame:
    """A job file as a dataframe: user columns restored to ``schema``'s dtypes when given,
    managed columns as found (text in CSV).

    Raises:
        JobDatabaseError: the file cannot be read.
    """
    is_csv = path.suffix.lower() == ".csv"
    try:
        if is_csv:
            return _read_csv(path, schema)
        import pyarrow.parquet

        if b"geo" in (pyarrow.parquet.read_metadata(path).metadata or {}):
            import geopandas

            raw = geopandas.read_parquet(path)
        else:
            raw = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise JobDatabaseError(f"cannot read job database {str(path)!r}: {exc}") from exc
    if schema is not None:
        for spec in schema.columns:
            if spec.name in raw.columns and spec.kind == "object":
                raw[spec.name] = [None if v is None or v is pd.NA else json.loads(v)
                                  for v in raw[spec.name].astype(object)]
    return raw


def csv_dialect(path: Path) -> dict[str, str]:
    """``read_csv`` options for a job CSV file as a spreadsheet may save it: a UTF-8 byte
    order mark is dropped, and ``;`` or tab is the separator when the header line uses it
    instead of ``,``."""
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        header = fh.readline()
    sep = ","
    if "," not in header:
        counts = {c: header.count(c) for c in (";", "\t")}
        best = max(counts, key=counts.__getitem__)
        if counts[best]:
            sep = best
            _log.info("%s: columns separated by %r", path, sep)
    return {"sep": sep, "encoding": "utf-8-sig"}


def _read_csv(path: Path, schema: UserSchema | None) -> pd.DataFrame:
    if schema is None:  # a file of openeo's: read it as openeo does
        raw = pd.read_csv(path, dtype=_OPENEO_CSV_DTYPES, **csv_dialect(path))
        if "geometry" in raw.columns and raw["geometry"].dtype == object:
            import geopandas
            import shapely

            text = raw["geometry"]
            geoms = shapely.from_wkt(text.where(text.notna(), None).to_numpy(), on_invalid="ignore")
            if text.notna().any() and not np.any(pd.isna(geoms) & text.notna().to_numpy()):
                _log.warning("%s: WKT geometry without CRS, taken to be EPSG:4326", path)
                raw = geopandas.GeoDataFrame(raw.drop(columns="geometry"),
                                             geometry=geopandas.GeoSeries(geoms, index=raw.index),
                                             crs="EPSG:4326")[list(raw.columns)]
        return raw
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], **csv_dialect(path))
    for spec in schema.columns:
        if spec.name not in raw.columns:
            continue
        values = [None if pd.isna(v) else v for v in raw[spec.name]]
        if spec.kind == "geometry":
            import shapely

            wkb = shapely.to_wkb(shapely.from_wkt(np.asarray(values, dtype=object)), hex=True)
            raw[spec.name] = spec.decode(list(wkb), raw.index)
            continue
        raw[spec.name] = spec.decode(_csv_values(spec.kind, values), raw.index)
    return raw


def _csv_values(kind: str, values: list[Any]) -> list[Any]:
    """CSV text turned into the values :meth:`ColumnSpec.decode` takes."""
    if kind == "int":
        return [None if v is None else int(float(v)) if "." in v or "e" in v else int(v)
                for v in values]
    if kind == "bool":
        return [None if v is None else v.strip().lower() in ("true", "1") for v in values]
    if kind == "timedelta":
        return [None if v is None else int(pd.Timedelta(v).value) for v in values]
    if kind == "datetime":
        return [None if v is None else pd.Timestamp(v).isoformat() for v in values]
    if kind == "object":
        return [None if v is None else json.loads(v) for v in values]
    return values


def export_table(df: pd.DataFrame, schema: UserSchema, *, csv_file: bool,
                 key_column: str | None) -> pd.DataFrame:
    """The table as written to a file: user columns, openeo's columns and statuses, ours.

    Args:
        df: the job table (as ``read()`` returns it).
        schema: its user columns.
        csv_file: whether the target is CSV (geometry as WKT) rather than GeoParquet.
        key_column: the key column, if keys come from a user column (else, and when it is
            ``job_key`` itself, ``job_key`` is written).
    """
    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for spec in schema.columns:
        col = df[spec.name].reset_index(drop=True)
        if spec.kind == "object" or (csv_file and spec.kind == "date"):
            col = pd.Series(spec.encode(col), dtype=object)
            if spec.kind == "object":
                col = col.map(lambda v: None if v is None else json.dumps(v))
        elif spec.kind == "geometry" and csv_file:
            import shapely

            col = pd.Series(shapely.to_wkt(np.asarray(col.values, dtype=object),
                                           rounding_precision=-1), dtype=object)
        out[spec.name] = col
    exact = df["status"].reset_index(drop=True)
    order = _OPENEO_COLUMNS + _USAGE_COLUMNS + [n for n in MANAGED_KINDS
                                                if n not in _OPENEO_COLUMNS + _USAGE_COLUMNS]
    for name in order:
        col = df[name].reset_index(drop=True)
        if name == "status":
            col = exact.map(_OPENEO_TEXT).astype(object)
        elif MANAGED_KINDS[name] == "datetime":
            col = _rfc3339_column(col)
        out[name] = col
    out[EXACT_STATUS_COLUMN] = exact
    if key_column not in schema.names:  # None, or job_key: kept with the managed columns
        out["job_key"] = list(df.index)
    extra_usage = usage_key_columns(out["usage"], {*schema.names, *out.columns})
    for name, values in extra_usage.items():
        out[name] = pd.Series(values, dtype=object)
    geometry = schema.geometry
    if geometry is not None and not csv_file:
        import geopandas

        out = geopandas.GeoDataFrame(out, geometry=geometry, crs=df[geometry].crs)
    out.attrs["usage_columns"] = list(extra_usage)
    return out


def split_export(out: pd.DataFrame, schema: UserSchema) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An exported table split into what openeo writes (the user's columns, openeo's columns,
    usage columns that hold a value) and our extra state (``job_key``, the exact status,
    attempts, leases, ...), which goes to the ``.state.csv`` sidecar, row for row."""
    usage = [n for n in _USAGE_COLUMNS if out[n].notna().any()] + out.attrs.get("usage_columns", [])
    main_cols = [*schema.names, *_OPENEO_COLUMNS, *usage]
    main = out[main_cols]
    extras = pd.DataFrame({n: out[n] for n in out.columns if n not in main_cols}, index=out.index)
    return main, extras


def join_state(raw: pd.DataFrame, state_path: Path) -> pd.DataFrame:
    """A file's table with its ``.state.csv`` sidecar's columns, row for row (rows the
    sidecar lacks get none; a sidecar written just before a crash is cut to the file)."""
    if not state_path.exists():
        return raw
    try:
        state = pd.read_csv(state_path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise JobDatabaseError(f"cannot read {str(state_path)!r}: {exc}") from exc
    state = state.iloc[:len(raw)].reindex(range(len(raw)))
    state.index = raw.index
    extra = [c for c in state.columns if c not in raw.columns]
    if not extra:
        return raw
    joined = pd.concat([raw, state[extra]], axis=1)
    if hasattr(raw, "geometry") and raw.__class__ is not pd.DataFrame:
        import geopandas

        joined = geopandas.GeoDataFrame(joined, geometry=raw.geometry.name, crs=raw.crs)
    return joined


def _special_characters(path: Path) -> set[str]:
    """Which of NUL and carriage return occur in a written file (a fast byte search)."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return set()
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return {ch for ch in ("\x00", "\r") if data.find(ch.encode()) >= 0}


def write_table(path: Path, out: pd.DataFrame) -> None:
    """Write an exported table atomically (CSV or Parquet by the file's extension)."""
    with atomic_path(path) as tmp:
        if path.suffix.lower() == ".csv":
            out.to_csv(tmp, index=False, lineterminator="\n")
            special = _special_characters(tmp)
            if "\x00" in special:  # pandas' CSV reader would cut the text there, silently
                raise JobDatabaseError(f"cannot write {str(path)!r}: a CSV file cannot hold NUL "
                                       "characters (found in the job table); use a .db or .parquet "
                                       "job database")
            if "\r" in special:
                # Python's csv writer quotes a carriage return only when the line terminator
                # holds one: a value with a bare "\r" would split its row when read back.
                out.to_csv(tmp, index=False, lineterminator="\r\n")
        else:
            out.to_parquet(tmp, index=False)


def append_history(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append status changes to the history sidecar (fsynced)."""
    if not rows:
        return
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())


def history_row(job_key: str, old: str | None, new: str, at: datetime, manager_id: str | None,
                message: str | None, backend_job_id: str | None) -> dict[str, Any]:
    """A row of the history sidecar (statuses as their values, ``at`` as ISO 8601 text)."""
    return dict(job_key=job_key, old=None if old is None else str(old), new=str(new),
                at=at.isoformat(), manager_id=manager_id, message=message,
                backend_job_id=backend_job_id)


def history_changes(rows: Iterable[Mapping[str, Any]]) -> list[StatusChange]:
    """Status changes of history rows (as :func:`read_history` or :func:`history_row` give them)."""

    def _opt(value: Any) -> Any:
        return None if value in (None, "") else value

    return [StatusChange(job_key=r["job_key"], old=JobStatus(r["old"]) if _opt(r["old"]) else None,
                         new=JobStatus(r["new"]), at=datetime.fromisoformat(r["at"]),
                         manager_id=_opt(r["manager_id"]), message=_opt(r["message"]),
                         backend_job_id=_opt(r["backend_job_id"])) for r in rows]


def read_history(path: Path) -> list[dict[str, Any]]:
    """The history sidecar's rows, in the order written (empty strings for missing values)."""
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def history_by_job(rows: Iterable[Mapping[str, Any]], keys: Iterable[str] | None = None
                   ) -> dict[str, list[StatusChange]]:
    """History rows as status changes per job, in the order of ``rows`` (only the jobs of
    ``keys`` when given)."""
    wanted = None if keys is None else {str(k) for k in keys}
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if wanted is None or row["job_key"] in wanted:
            grouped.setdefault(row["job_key"], []).append(row)
    return {key: history_changes(group) for key, group in grouped.items()}
