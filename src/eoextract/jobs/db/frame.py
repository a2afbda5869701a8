"""Job dataframes: input checks, managed/user column split, and lossless user-column dtypes.

Used by every job database. A job dataframe carries the user's columns and, optionally,
managed columns (openeo's files carry ``id``, ``status``, ``backend_name``, ``start_time``,
...). :func:`prepare_job_frame` checks it and splits it; :class:`UserSchema` records the
dtype of each user column so that values stored as JSON (SQL) or text (CSV) read back with
the dtype they had: ints stay ``int64``, dates ``datetime64``, geometry a ``GeoSeries``
with its CRS.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from eoextract.errors import ConfigurationError
from eoextract.jobs.db.base import MANAGED_COLUMNS
from eoextract.jobs.status import OPENEO_STATUS, JobStatus

_log = logging.getLogger(__name__)

__all__ = [
    "MANAGED_KINDS",
    "ColumnSpec",
    "UserSchema",
    "PreparedJobs",
    "prepare_job_frame",
    "parse_status",
    "resolve_status",
    "coerce_managed",
    "managed_series",
    "build_frame",
]

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


def _isna(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    return False


def parse_status(value: Any) -> JobStatus:
    """Our status for a value of a ``status`` column (ours or openeo's); missing → ``not_started``.

    Raises:
        ValueError: when the value is no known status.
    """
    if _isna(value):
        return JobStatus.NOT_STARTED
    if isinstance(value, JobStatus):
        return value
    text = str(value).strip().lower()
    if text in _OPENEO_ALIASES:
        return _OPENEO_ALIASES[text]
    try:
        return JobStatus(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a job status") from None


def resolve_status(status: Any, exact: Any) -> JobStatus:
    """The status of a file row: ``eoextract_status`` when ``status`` still agrees with it.

    Our files keep openeo's reading of a status in ``status`` and the exact one in
    ``eoextract_status``; when openeo's manager moved a job on, ``status`` wins.
    """
    seen = parse_status(status)
    if _isna(exact):
        return seen
    try:
        ours = parse_status(exact)
    except ValueError:
        return seen
    return ours if parse_status(OPENEO_STATUS[ours]) is seen else seen


def _to_utc(value: Any) -> dt.datetime | None:
    if _isna(value) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str | dt.datetime | dt.date | np.datetime64):
        ts = pd.Timestamp(value)
    else:
        raise ValueError(f"{value!r} is not a date/time")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime(warn=False)


def coerce_managed(name: str, value: Any) -> Any:
    """A managed column's value as stored (``None`` when missing).

    Raises:
        ValueError: when the value does not fit the column (e.g. ``attempt=1.5``).
    """
    kind = MANAGED_KINDS[name]
    if kind == "status":
        return parse_status(value)
    if _isna(value):
        return 0 if name == "attempt" else None
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "str":
        if isinstance(value, str):
            return value if value.strip() else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{value!r} is not text")
    if kind == "int":
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{value!r} is not an integer")
        if value != int(value):
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number") from None
    try:
        return _to_utc(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{value!r} is not a date/time") from exc


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


# -- user columns ------------------------------------------------------------------------
def _crs_text(crs: Any) -> str:
    authority = crs.to_authority(min_confidence=100)
    return f"{authority[0]}:{authority[1]}" if authority else crs.to_wkt()


def _json_safe(value: Any) -> Any:
    if _isna(value):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if isinstance(value, dt.date | dt.datetime | pd.Timestamp):
        return value.isoformat()
    return str(value)


def _is_geometry(value: Any) -> bool:
    import shapely

    return isinstance(value, shapely.Geometry)


@dataclass
class ColumnSpec:
    """How one user column is stored and restored.

    Attributes:
        name: column name.
        kind: ``int``, ``float``, ``bool``, ``datetime``, ``timedelta``, ``date``, ``string``,
            ``category``, ``geometry`` or ``object`` (any JSON value).
        dtype: the pandas dtype to restore (e.g. ``int64``, ``datetime64[ns, UTC]``).
        crs: CRS of a geometry column (``EPSG:4326`` or WKT).
        categories: categories of a ``category`` column.
        ordered: whether those categories are ordered.
    """

    name: str
    kind: str
    dtype: str | None = None
    crs: str | None = None
    categories: list[Any] | None = None
    ordered: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, False)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        return cls(**{k: data[k] for k in ("name", "kind", "dtype", "crs", "categories",
                                           "ordered") if k in data})

    @classmethod
    def infer(cls, name: str, s: pd.Series) -> ColumnSpec:
        """Spec of a column; raises :class:`ConfigurationError` for geometry without CRS."""
        dtype = s.dtype
        if getattr(dtype, "name", None) == "geometry":
            crs = getattr(s, "crs", None) or getattr(s.array, "crs", None)
            if crs is None:
                raise ConfigurationError(
                    f"geometry column {name!r} has no CRS; set one, e.g. gdf.set_crs(4326)")
            return cls(name, "geometry", "geometry", crs=_crs_text(crs))
        if isinstance(dtype, pd.CategoricalDtype):
            cats = [_json_safe(c) for c in dtype.categories]
            if all(isinstance(c, str | int | float) for c in cats):
                return cls(name, "category", "category", categories=cats,
                           ordered=bool(dtype.ordered))
            return cls(name, "object", "object")
        if pd.api.types.is_bool_dtype(dtype):
            return cls(name, "bool", str(dtype))
        if pd.api.types.is_integer_dtype(dtype):
            return cls(name, "int", str(dtype))
        if pd.api.types.is_float_dtype(dtype):
            return cls(name, "float", str(dtype))
        if pd.api.types.is_datetime64_any_dtype(dtype):
            return cls(name, "datetime", str(dtype))
        if pd.api.types.is_timedelta64_dtype(dtype):
            return cls(name, "timedelta", str(dtype))
        if isinstance(dtype, pd.StringDtype):
            return cls(name, "string", str(dtype))
        values = [v for v in s if not _isna(v)]
        if any(_is_geometry(v) for v in values):
            raise ConfigurationError(
                f"column {name!r} holds geometries without a CRS; pass a GeoDataFrame with a CRS")
        if values and all(isinstance(v, str) for v in values):
            return cls(name, "string", "object")
        if values and all(isinstance(v, bool | np.bool_) for v in values):
            return cls(name, "bool", "object")
        if values and all(isinstance(v, dt.date) and not isinstance(v, dt.datetime)
                          for v in values):
            return cls(name, "date", "object")
        return cls(name, "object", "object")

    # -- values ----------------------------------------------------------------------------
    def encode(self, s: pd.Series) -> list[Any]:
        """JSON-safe values of a column (``None`` for missing)."""
        kind = self.kind
        if kind == "geometry":
            import shapely

            wkb = shapely.to_wkb(np.asarray(s.values, dtype=object), hex=True)
            return [None if w is None else str(w) for w in wkb]
        values = s.astype(object).tolist()
        if kind in ("datetime", "date"):
            return [None if _isna(v) else v.isoformat() for v in values]
        if kind == "timedelta":
            return [None if _isna(v) else int(pd.Timedelta(v).value) for v in values]
        if kind == "int":
            return [None if _isna(v) else int(v) for v in values]
        if kind == "bool":
            return [None if _isna(v) else bool(v) for v in values]
        if kind == "string":
            return [None if _isna(v) else str(v) for v in values]
        return [_json_safe(v) for v in values]

    def decode(self, values: Sequence[Any], index: pd.Index) -> pd.Series:
        """A column restored from :meth:`encode`'s values."""
        kind, name = self.kind, self.name
        values = list(values)
        if kind == "geometry":
            import geopandas
            import shapely

            geoms = shapely.from_wkb(np.asarray(values, dtype=object))
            return geopandas.GeoSeries(geoms, index=index, name=name, crs=self.crs)
        if kind == "int":
            dtype = self.dtype or "int64"
            if any(v is None for v in values) and dtype[0] != "I":
                dtype = "Int64"
            return pd.Series(values, index=index, name=name, dtype=object).astype(dtype)
        if kind == "float":
            floats = [np.nan if v is None else float(v) for v in values]
            s = pd.Series(floats, index=index, name=name, dtype="float64")
            if self.dtype and self.dtype[0] == "F":  # nullable Float64
                s = pd.Series([pd.NA if v is None else float(v) for v in values], index=index,
                              name=name, dtype=self.dtype)
            return s.astype(self.dtype or "float64")
        if kind == "bool":
            dtype = self.dtype or "bool"
            if dtype == "bool" and any(v is None for v in values):
                dtype = "boolean"
            return pd.Series(values, index=index, name=name, dtype=object).astype(dtype)
        if kind == "datetime":
            dtype = self.dtype or "datetime64[ns]"
            aware = "," in dtype
            parsed = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601",
                                    utc=aware)
            return parsed.set_axis(index).rename(name).astype(dtype)
        if kind == "timedelta":
            parsed = pd.to_timedelta(pd.Series(values, dtype=object), unit="ns")
            return parsed.set_axis(index).rename(name).astype(self.dtype or "timedelta64[ns]")
        if kind == "date":
            dates = [None if v is None else dt.date.fromisoformat(v) for v in values]
            return pd.Series(dates, index=index, name=name, dtype=object)
        if kind == "category":
            cat = pd.CategoricalDtype(self.categories, ordered=self.ordered)
            return pd.Series(values, index=index, name=name, dtype=object).astype(cat)
        s = pd.Series(values, index=index, name=name, dtype=object)
        if kind == "string" and self.dtype not in (None, "object"):
            s = s.astype(self.dtype)
        return s

    def decode_value(self, value: Any) -> Any:
        """One stored value restored (for :class:`~eoextract.jobs.db.base.JobRecord` rows)."""
        if value is None:
            return None
        kind = self.kind
        if kind == "geometry":
            import shapely

            return shapely.from_wkb(value)
        if kind == "datetime":
            ts = pd.Timestamp(value)
            dtype = self.dtype or ""
            return ts.tz_convert(dtype.split(", ", 1)[1].rstrip("]")) if ", " in dtype else ts
        if kind == "timedelta":
            return pd.Timedelta(int(value), unit="ns")
        if kind == "date":
            return dt.date.fromisoformat(value)
        if kind == "float":
            return float(value)
        return value


@dataclass
class UserSchema:
    """The user's columns, in order, and the active geometry column.

    Attributes:
        columns: one :class:`ColumnSpec` per user column.
        geometry: name of the active geometry column of a GeoDataFrame, if any.
    """

    columns: list[ColumnSpec] = field(default_factory=list)
    geometry: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def spec(self, name: str) -> ColumnSpec | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [c.to_dict() for c in self.columns], "geometry": self.geometry}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> UserSchema:
        data = data or {}
        return cls([ColumnSpec.from_dict(c) for c in data.get("columns", [])],
                   data.get("geometry"))

    @classmethod
    def infer(cls, df: pd.DataFrame) -> UserSchema:
        """Schema of every column of ``df`` (which holds user columns only)."""
        geometry = None
        if hasattr(df, "geometry") and getattr(df, "_geometry_column_name", None) in df.columns:
            geometry = df._geometry_column_name
        return cls([ColumnSpec.infer(str(n), df[n]) for n in df.columns], geometry)

    def extend(self, df: pd.DataFrame) -> list[str]:
        """Add the columns of ``df`` not known yet; returns their names."""
        added = []
        for name in df.columns:
            if self.spec(name) is None:
                self.columns.append(ColumnSpec.infer(name, df[name]))
                added.append(name)
        if self.geometry is None:
            self.geometry = UserSchema.infer(df.iloc[:0]).geometry
        return added

    def encode_records(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        """One JSON-safe dict per row of ``df`` (its user columns known to this schema)."""
        encoded = {c.name: c.encode(df[c.name]) for c in self.columns if c.name in df.columns}
        names = list(encoded)
        return [dict(zip(names, row, strict=True)) for row in zip(*encoded.values(), strict=True)] \
            if names else [{} for _ in range(len(df))]

    def decode_records(self, records: Sequence[Mapping[str, Any]], index: pd.Index) -> pd.DataFrame:
        """User columns restored from :meth:`encode_records` dicts."""
        cols = {c.name: c.decode([r.get(c.name) for r in records], index) for c in self.columns}
        return pd.DataFrame(cols, index=index)

    def decode_row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """One row's user values (geometry as a shapely geometry)."""
        return {c.name: c.decode_value(record.get(c.name)) for c in self.columns}


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


def _keys_of(df: pd.DataFrame, key_column: str | None) -> list[str]:
    if key_column is not None:
        if key_column not in df.columns:
            raise ConfigurationError(f"key_column {key_column!r} is not a column of the dataframe")
        values = df[key_column]
        if values.isna().any():
            raise ConfigurationError(f"key_column {key_column!r} has missing values")
        keys = [str(v.item() if isinstance(v, np.generic) else v) for v in values]
    else:
        keys = [str(v) for v in df.index]
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
        f"holds {value!r}: {exc}; rename the column")


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
            pair = tuple(None if _isna(v) else v for v in pair)
            if pair not in cache:
                try:
                    cache[pair] = resolve_status(*pair)
                except (ValueError, TypeError) as exc:
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
            blank = present.str.strip() == ""
            keep = notna.copy()
            keep[blank[blank].index] = False
            return obj.where(keep, None).tolist()
    elif kind == "int" and pd.api.types.is_integer_dtype(dtype) and bool(notna.all()):
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
        ConfigurationError: duplicate keys, non-text column names, a managed column with
            values that do not fit it, or a geometry column without CRS.
    """
    if not isinstance(df, pd.DataFrame):
        raise ConfigurationError(f"expected a pandas DataFrame, got {type(df).__name__}")
    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad:
        raise ConfigurationError(f"column names must be text, got {bad[:5]!r}")
    if df.columns.has_duplicates:
        raise ConfigurationError(
            f"duplicate column names: {sorted(set(df.columns[df.columns.duplicated()]))!r}")
    if key_column is None and "job_key" in df.columns:
        key_column = "job_key"
    keys = _keys_of(df, key_column)

    exact = df[EXACT_STATUS_COLUMN] if EXACT_STATUS_COLUMN in df.columns else None
    managed = {name: _coerce_column(name, df[name], exact if name == "status" else None, keys)
               for name in MANAGED_KINDS if name in df.columns}

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

