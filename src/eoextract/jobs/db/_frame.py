"""Job dataframes: input checks and the split into managed and user columns.

Used by every job database. A job dataframe carries the user's columns and, optionally,
managed columns (openeo's files carry ``id``, ``status``, ``backend_name``, ``start_time``,
...). :func:`prepare_job_frame` checks it and splits it; the user columns' dtypes are
recorded by :class:`~eoextract.jobs.db._columns.UserSchema`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eoextract._util.lazy import lazy_module
from eoextract._util.utc import to_utc
from eoextract.errors import ConfigurationError
from eoextract.jobs.db._columns import UserSchema, isna
from eoextract.jobs.db._records import MANAGED_COLUMNS
from eoextract.jobs.status import OPENEO_STATUS, JobStatus

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
else:  # imported on first use: commands reading a few columns never need them
    np = lazy_module("numpy", globals(), "np")
    pd = lazy_module("pandas", globals(), "pd")

_log = logging.getLogger(__name__)


#: Kind of every managed column but ``job_key`` (``str``, ``int``, ``float``, ``datetime``, ``status``).
MANAGED_KINDS: dict[str, str] = {
    "id": "str",
    "backend_name": "str",
    "status": "status",
    "backend_status": "str",
    "attempt": "int",
    "next_attempt_at": "datetime",
    "create_tag": "str",
    "error_class": "str",
    "error_message": "str",
    "created_at": "datetime",
    "start_time": "datetime",
    "running_start_time": "datetime",
    "end_time": "datetime",
    "updated_at": "datetime",
    "cpu": "str",
    "memory": "str",
    "duration": "str",
    "costs": "float",
    "usage": "str",
    "output_dir": "str",
    "input_published_at": "datetime",
    "output_published_at": "datetime",
    "claimed_by": "str",
    "lease_until": "datetime",
}
assert set(MANAGED_KINDS) == set(MANAGED_COLUMNS) - {"job_key"}

#: Column of our CSV/Parquet files holding the exact status when ``status`` holds openeo's.
EXACT_STATUS_COLUMN = "eoextract_status"

#: Ad-hoc statuses openeo's manager writes, read as ours.
_OPENEO_ALIASES: dict[str, JobStatus] = {
    "queued_for_start": JobStatus.QUEUED,
    "queued_for_start_failed": JobStatus.START_FAILED,
}


def parse_status(value: Any) -> JobStatus:
    """Our status for a value of a ``status`` column (ours or openeo's); missing → ``not_started``.

    Raises:
        ValueError: when the value is no known status.
    """
    if isna(value):
        return JobStatus.NOT_STARTED
    if isinstance(value, JobStatus):
        return value
    text = str(value).strip().lower()
    if text in _OPENEO_ALIASES:
        return _OPENEO_ALIASES[text]
    try:
        return JobStatus(text)
    except ValueError:
        raise ValueError(f"{reprlib.repr(value)} is not a job status") from None


def status_values(statuses: Iterable[Any]) -> list[str]:
    """The stored values of ``statuses`` (ours or openeo's); what is no status is left out."""
    values = []
    for status in statuses:
        try:
            values.append(parse_status(status).value)
        except ValueError:
            _log.debug("Ignoring unknown status %r", status)
    return values


def resolve_status(status: Any, exact: Any) -> JobStatus:
    """The status of a file row: ``eoextract_status`` when ``status`` still agrees with it.

    Our files keep openeo's reading of a status in ``status`` and the exact one in
    ``eoextract_status``; when openeo's manager moved a job on, ``status`` wins.
    """
    seen = parse_status(status)
    if isna(exact):
        return seen
    try:
        ours = parse_status(exact)
    except ValueError:
        return seen
    return ours if parse_status(OPENEO_STATUS[ours]) is seen else seen


def _to_utc(value: Any) -> dt.datetime | None:
    """:func:`~eoextract._util.utc.to_utc` of text, a datetime, a date or a datetime64, which
    refuses what is no time (``to_utc`` returns ``None`` for it); blank text and text
    such as ``NaT`` are missing."""
    if isna(value) or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str | dt.datetime | dt.date | np.datetime64):
        raise ValueError(f"{reprlib.repr(value)} is not a date/time")
    stamp = to_utc(value)
    if stamp is None:
        pd.Timestamp(value)  # raises ValueError for what is no time; NaT stays missing
    return stamp


def _int64(value: int) -> int:
    """``value``, when a 64-bit integer column (SQL ``BIGINT``, ``int64``) can hold it."""
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{reprlib.repr(value)} does not fit a 64-bit integer")
    return value


def coerce_managed(name: str, value: Any) -> Any:
    """A managed column's value as stored (``None`` when missing).

    Raises:
        ValueError: when the value does not fit the column (e.g. ``attempt=1.5``).
    """
    kind = MANAGED_KINDS[name]
    if kind == "status":
        return parse_status(value)
    if isna(value):
        return 0 if name == "attempt" else None
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "str":
        if isinstance(value, str):
            return value if value.strip() else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{reprlib.repr(value)} is not text")
    if kind == "int":
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return _int64(int(value))
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{reprlib.repr(value)} is not an integer")
        if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
            raise ValueError(f"{reprlib.repr(value)} is not an integer")
        return _int64(int(value))
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"{reprlib.repr(value)} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{reprlib.repr(value)} is not a number") from None
    try:
        return _to_utc(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{reprlib.repr(value)} is not a date/time") from exc


def managed_series(name: str, values: Sequence[Any], index: pd.Index | None = None) -> pd.Series:
    """A managed column as returned by ``read()`` (UTC datetimes, ``int64``, ``float64``, text)."""
    kind = MANAGED_KINDS[name]
    if kind == "datetime":
        return pd.Series(
            pd.to_datetime(list(values), utc=True) if len(values) else [],
            index=index, name=name, dtype="datetime64[ns, UTC]",
        )
    if kind == "int":
        return pd.Series([0 if v is None else v for v in values], index=index, name=name,
                         dtype="int64")
    if kind == "float":
        return pd.Series([np.nan if v is None else v for v in values], index=index, name=name,
                         dtype="float64")
    if kind == "status":
        values = [str(v) for v in values]
    return pd.Series(list(values), index=index, name=name, dtype=object)


# -- job dataframes ------------------------------------------------------------------------
@dataclass
class PreparedJobs:
    """A checked job dataframe, split into keys, user columns and managed values.

    Attributes:
        keys: ``job_key`` of each row, in order.
        user: the user's columns, indexed by ``keys``.
        managed: coerced values of the managed columns present in the input.
        schema: the dtypes of the user columns.
    """

    keys: list[str]
    user: pd.DataFrame
    managed: dict[str, list[Any]]
    schema: UserSchema

    def managed_row(self, i: int) -> dict[str, Any]:
        return {name: values[i] for name, values in self.managed.items()}


def _missing_keys(values: Sequence[Any], where: str) -> ConfigurationError:
    """The error for missing key values (``NaN``, ``None``, ``NaT``), naming their rows."""
    rows = [i for i, v in enumerate(values) if isna(v)]
    shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
    return ConfigurationError(
        f"{len(rows)} missing job key(s) in {where} (NaN/None) at row position(s) {shown}; "
        f"every job needs a key: fill them, or give a key_column")


def _keys_of(df: pd.DataFrame, key_column: str | None) -> list[str]:
    if key_column is not None:
        if key_column not in df.columns:
            raise ConfigurationError(f"key_column {key_column!r} is not a column of the dataframe")
        values = df[key_column]
        if values.isna().any():
            raise _missing_keys(values.astype(object).tolist(), f"column {key_column!r}")
        keys = [str(v.item() if isinstance(v, np.generic) else v) for v in values]
    else:
        index = df.index.tolist()
        if any(isna(v) for v in index):  # str() would make them the keys 'nan' / 'None'
            raise _missing_keys(index, "the index")
        keys = [str(v) for v in index]
    if "" in keys:  # a CSV file cannot tell an empty key from a missing one
        where = f"column {key_column!r}" if key_column else "the index"
        raise ConfigurationError(f"empty job key in {where}; every job needs a non-empty key")
    counts = pd.Series(keys).value_counts()
    dupes = counts[counts > 1]
    if len(dupes):
        where = f"column {key_column!r}" if key_column else "the index"
        raise ConfigurationError(
            f"duplicate job keys in {where}: {', '.join(map(repr, dupes.index[:5]))}"
            + (" ..." if len(dupes) > 5 else ""))
    return keys


def _reserved(name: str, key: str, value: Any, exc: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"column {name!r} is reserved for eoextract ({MANAGED_KINDS[name]}), but row {key!r} "
        f"holds {reprlib.repr(value)}: {exc}; rename the column")


def _all_text(s: pd.Series) -> bool:
    return all(isinstance(v, str) for v in s)


def _coerce_column(name: str, s: pd.Series, exact: pd.Series | None, keys: Sequence[str]) -> list[Any]:
    """:func:`coerce_managed` over a column, vectorised where the dtype allows it."""
    kind = MANAGED_KINDS[name]
    n = len(s)
    if kind == "status":
        values = s.astype(object).tolist()
        others = exact.astype(object).tolist() if exact is not None else [None] * n
        cache: dict[tuple[Any, Any], JobStatus] = {}
        out = []
        for i, pair in enumerate(zip(values, others, strict=True)):
            pair = tuple(None if isna(v) else v for v in pair)
            try:
                if pair not in cache:
                    cache[pair] = resolve_status(*pair)
            except (ValueError, TypeError) as exc:  # TypeError also for unhashable cells
                raise _reserved(name, keys[i], pair[0], exc) from None
            out.append(cache[pair])
        return out
    notna = s.notna()
    if not notna.any():
        return [0 if name == "attempt" else None] * n
    dtype = s.dtype
    obj = s.astype(object)
    if kind == "datetime":
        conv = None
        if pd.api.types.is_datetime64_any_dtype(dtype):
            conv = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
        elif _all_text(obj[notna]):
            text = obj.where(notna, None)
            text = text.where(text.isna() | (text.str.strip() != ""), None)
            try:
                conv = pd.to_datetime(text, utc=True, format="ISO8601")
            except (ValueError, TypeError):
                conv = None
        if conv is not None:
            return conv.astype(object).where(conv.notna(), None).tolist()
    elif kind == "str" and (dtype == object or isinstance(dtype, pd.StringDtype)):
        present = obj[notna]
        if _all_text(present):
            keep = notna.to_numpy().copy()  # by position: the index may repeat labels
            keep[np.flatnonzero(keep)] = (present.str.strip() != "").to_numpy()
            return obj.where(keep, None).tolist()
    elif kind == "int" and pd.api.types.is_signed_integer_dtype(dtype) and bool(notna.all()):
        return [int(v) for v in s.tolist()]
    elif kind == "float" and (pd.api.types.is_float_dtype(dtype)
                              or (pd.api.types.is_integer_dtype(dtype) and bool(notna.all()))):
        return [None if math.isnan(v) else v for v in s.astype("float64").tolist()]
    out = []
    for i, value in enumerate(obj.tolist()):
        try:
            out.append(coerce_managed(name, value))
        except ValueError as exc:
            raise _reserved(name, keys[i], value, exc) from None
    return out


def prepare_job_frame(df: pd.DataFrame, key_column: str | None = None) -> PreparedJobs:
    """Check a job dataframe and split it into keys, user columns and managed values.

    ``job_key`` is ``str(index)`` by default, the ``key_column`` value when given, or the
    ``job_key`` column when the dataframe has one. Managed columns (openeo's ``id``,
    ``status``, ``backend_name``, ``start_time``, ...) are taken as managed values when
    their content fits. An empty dataframe is allowed.

    Raises:
        ConfigurationError: duplicate keys, non-text or empty column names, a managed column with
            values that do not fit it, or a geometry column without CRS.
    """
    if not isinstance(df, pd.DataFrame):
        raise ConfigurationError(f"expected a pandas DataFrame, got {type(df).__name__}")
    bad = [c for c in df.columns if not isinstance(c, str) or not c]
    if bad:  # an empty name does not survive a CSV file (it comes back as "Unnamed: 0")
        raise ConfigurationError(f"column names must be non-empty text, got {bad[:5]!r}")
    if df.columns.has_duplicates:
        raise ConfigurationError(
            f"duplicate column names: {sorted(set(df.columns[df.columns.duplicated()]))!r}")
    if key_column is None and "job_key" in df.columns:
        key_column = "job_key"
    keys = _keys_of(df, key_column)

    exact = df[EXACT_STATUS_COLUMN] if EXACT_STATUS_COLUMN in df.columns else None
    managed = {name: _coerce_column(name, df[name], exact if name == "status" else None, keys)
               for name in MANAGED_KINDS if name in df.columns}
    if "status" not in managed and exact is not None:  # only our exact status is left
        managed["status"] = _coerce_column("status", exact, None, keys)

    drop = set(MANAGED_KINDS) | {EXACT_STATUS_COLUMN}
    if key_column == "job_key":
        drop.add("job_key")
    user_cols = [c for c in df.columns if c not in drop]
    user = df[user_cols]
    if not isinstance(user, pd.DataFrame):  # pragma: no cover
        user = user.to_frame()
    user = user.copy()
    user.index = pd.Index(keys, name="job_key")
    schema = UserSchema.infer(user)
    return PreparedJobs(keys, user, managed, schema)


def build_frame(
    user: pd.DataFrame,
    managed: Mapping[str, Sequence[Any]],
    schema: UserSchema,
) -> pd.DataFrame:
    """The dataframe ``read()`` returns: user columns then managed ones, indexed by ``job_key``.

    Args:
        user: restored user columns, indexed by ``job_key``.
        managed: values of every managed column (as stored), aligned with ``user``.
        schema: the user schema (for the active geometry column).

    Returns:
        A DataFrame, or a GeoDataFrame when the schema has a geometry column.
    """
    index = pd.Index(user.index, name="job_key", dtype=object)
    cols: dict[str, pd.Series] = {name: user[name].set_axis(index) for name in user.columns}
    for name in MANAGED_KINDS:
        cols[name] = managed_series(name, managed.get(name, [None] * len(index)), index)
    frame = pd.DataFrame(cols, index=index)
    geometry = schema.geometry
    if geometry is None:
        geometry = next((c.name for c in schema.columns if c.kind == "geometry"), None)
    if geometry is not None:
        import geopandas

        frame = geopandas.GeoDataFrame(frame, geometry=geometry, crs=schema.spec(geometry).crs)
    return frame

