"""Lossless storage of the user's columns of a job dataframe.

:class:`UserSchema` records the dtype of each user column so that values stored as JSON
(SQL) or text (CSV) read back with the dtype they had: ints stay ``int64``, dates
``datetime64``, bools ``bool``, geometry a ``GeoSeries`` with its CRS.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from eoextract._util.lazy import lazy_module
from eoextract.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
else:  # imported on first use: commands reading a few columns never need them
    np = lazy_module("numpy", globals(), "np")
    pd = lazy_module("pandas", globals(), "pd")


def isna(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if type(value).__module__.partition(".")[0] not in ("pandas", "numpy"):
        return False  # neither pandas nor numpy is needed to tell
    if value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return math.isnan(value)
    if isinstance(value, np.datetime64 | np.timedelta64):
        return bool(np.isnat(value))
    return False



def _crs_text(crs: Any) -> str:
    authority = crs.to_authority(min_confidence=100)
    return f"{authority[0]}:{authority[1]}" if authority else crs.to_wkt()


def _json_safe(value: Any) -> Any:
    if isna(value):
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
        values = [v for v in s if not isna(v)]
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
            return [None if isna(v) else v.isoformat() for v in values]
        if kind == "timedelta":
            return [None if isna(v) else int(pd.Timedelta(v).value) for v in values]
        if kind == "int":
            return [None if isna(v) else int(v) for v in values]
        if kind == "bool":
            return [None if isna(v) else bool(v) for v in values]
        if kind == "string":
            return [None if isna(v) else str(v) for v in values]
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
        """One stored value restored (for :class:`~eoextract.jobs.db.JobRecord` rows)."""
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


def parse_as_column(spec: Any, old: Any, value: Any) -> Any:
    """A text ``value`` parsed as the type of its column (``spec``, a :class:`ColumnSpec`
    or None; else the type of the current value ``old``): dates, times, numbers and
    booleans. Anything else as given.

    Raises:
        ValueError: text that does not parse as the column's type.
    """
    if not isinstance(value, str):
        return value
    kind = getattr(spec, "kind", None)
    dtype = str(getattr(spec, "dtype", None) or "")
    if kind == "datetime" or (kind is None and isinstance(old, pd.Timestamp | dt.datetime)):
        parsed = pd.Timestamp(value)
        aware = ", " in dtype or getattr(old, "tzinfo", None) is not None
        if aware and parsed.tzinfo is None:
            parsed = parsed.tz_localize("UTC")
        elif not aware and parsed.tzinfo is not None:
            parsed = parsed.tz_convert("UTC").tz_localize(None)
        return parsed
    if kind == "date" or (kind is None and isinstance(old, dt.date)):
        return dt.date.fromisoformat(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if value.strip().lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{value!r} is not a boolean")
        return value.strip().lower() in ("true", "1")
    return value
