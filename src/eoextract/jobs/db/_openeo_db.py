"""A :class:`~eoextract.jobs.db.JobDatabase` on top of an openeo ``JobDatabaseInterface``.

openeo's job databases (``CsvJobDatabase``, ``ParquetJobDatabase``, ``STACAPIJobDatabase``, a
user's subclass) keep one row per job with openeo's columns. :class:`OpenEOJobDatabase`
loads those rows once, keeps the job table in memory (as
:class:`~eoextract.jobs.db.FileJobDatabase` does) and writes back, through the wrapped
object's ``persist``, only the rows whose openeo columns changed: ``id``,
``backend_name``, ``status`` (openeo's reading of ours), ``start_time``,
``running_start_time`` (RFC 3339 text), ``costs`` and one column per usage key. The user's
columns are handed back as they were read.

What openeo's interface cannot hold stays in memory for the run: the status history,
attempts and backoff, leases and creation tags. So a restart resumes from openeo's statuses,
and one manager at a time may use such a database (see ``docs/openeo-compat.md``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pandas as pd

from eoextract.errors import ConfigurationError, JobDatabaseError
from eoextract.jobs.db._columns import UserSchema
from eoextract.jobs.db._file_db import FileJobDatabase
from eoextract.jobs.db._file_format import _OPENEO_TEXT, _rfc3339_column
from eoextract.jobs.db._frame import PreparedJobs
from eoextract.jobs.db._interface import OnExists
from eoextract.jobs.db._models import CREATED_BY, SCHEMA_VERSION
from eoextract.jobs.db._usage_columns import USAGE_COLUMNS, usage_key_columns

_log = logging.getLogger(__name__)

#: Every status openeo's manager writes or reads (to load all rows through ``get_by_status``).
_OPENEO_STATUSES = ["not_started", "created", "queued", "queued_for_start", "running", "finished",
                    "error", "skipped", "start_failed", "canceled", "queued_for_start_failed"]
_USAGE = list(USAGE_COLUMNS)


def is_openeo_job_db(obj: Any) -> bool:
    """Whether ``obj`` is an openeo ``JobDatabaseInterface``."""
    try:
        from openeo.extra.job_management import JobDatabaseInterface
    except ImportError:  # pragma: no cover - openeo is a core dependency
        return False
    return isinstance(obj, JobDatabaseInterface)


class OpenEOJobDatabase(FileJobDatabase):
    """Our job database interface over an openeo ``JobDatabaseInterface`` object.

    Args:
        wrapped: The openeo job database (kept and written the way openeo does).
    """

    def __init__(self, wrapped: Any) -> None:  # noqa: D107 - no FileJobDatabase.__init__: no file
        if not is_openeo_job_db(wrapped):
            raise ConfigurationError(f"{wrapped!r} is not an openeo JobDatabaseInterface")
        self.wrapped = wrapped
        self.path = None  # type: ignore[assignment]
        self.is_csv = True
        self.flush_interval = 2.0
        self._lock = threading.RLock()
        self._df = None
        self._schema = UserSchema()
        self._meta = {"created_by": CREATED_BY, "schema_version": SCHEMA_VERSION, "key_column": None,
                      "backends": {}}
        self._pending: list[dict[str, Any]] = []
        self._history: list[dict[str, Any]] = []
        self._dirty = False
        self._last_save = 0.0
        self._save_seconds = 0.0
        self._raw: pd.DataFrame | None = None
        self._labels: dict[str, Any] = {}
        self._written: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.wrapped!r})"

    # -- loading and saving ------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self.wrapped.exists())

    def _read_stored(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        if not self.exists():
            raise JobDatabaseError(f"{self!r} does not exist yet; use initialize_from_df()")
        if callable(getattr(self.wrapped, "read", None)):
            raw = self.wrapped.read()
        else:
            raw = self.wrapped.get_by_status(statuses=_OPENEO_STATUSES)
        self._raw = raw.copy()
        self._labels = {str(label): label for label in raw.index}
        ours = pd.DataFrame(raw).copy()
        geometry = getattr(raw, "geometry", None) if "geometry" in raw.columns else None
        if geometry is not None and getattr(raw, "crs", "") is None:
            import geopandas

            _log.warning("%r: geometry without CRS, taken to be EPSG:4326", self)
            ours = geopandas.GeoDataFrame(ours, geometry="geometry", crs="EPSG:4326")
        elif "geometry" in ours.columns and ours["geometry"].dtype == object and geometry is None:
            ours = ours.rename(columns={"geometry": "geometry_text"})
        ours.index = [str(i) for i in raw.index]
        ours = ours.drop(columns=[c for c in ours.columns if c in _USAGE and ours[c].isna().all()])
        return ours, {}

    def _frame(self) -> pd.DataFrame:
        with self._lock:
            loaded = self._df is None
            df = super()._frame()
            if loaded:
                self._written = self._openeo_view(df)
            return df

    def _openeo_view(self, df: pd.DataFrame) -> pd.DataFrame:
        """The openeo columns of every row, as openeo writes them."""
        view = pd.DataFrame(index=df.index)
        view["id"] = df["id"].astype(object)
        view["backend_name"] = df["backend_name"].astype(object)
        view["status"] = df["status"].map(_OPENEO_TEXT).astype(object)
        view["start_time"] = _rfc3339_column(df["start_time"])
        view["running_start_time"] = _rfc3339_column(df["running_start_time"])
        view["costs"] = df["costs"]
        for name in _USAGE:
            if df[name].notna().any() or (self._raw is not None and name in self._raw.columns):
                view[name] = df[name].astype(object)
        for name, values in usage_key_columns(df["usage"], set(view.columns)).items():
            view[name] = pd.Series(values, index=df.index, dtype=object)
        return view.where(view.notna(), None)

    def _save(self) -> None:
        """Hand the rows whose openeo columns changed to the wrapped database's ``persist``."""
        start = time.monotonic()
        view = self._openeo_view(self._frame())
        before = self._written.reindex(index=view.index, columns=view.columns) \
            if self._written is not None else pd.DataFrame(index=view.index, columns=view.columns)
        same = (view == before) | (view.isna() & before.isna())
        changed = list(view.index[~same.all(axis=1)])
        if changed and self._raw is not None:
            labels = [self._labels[k] for k in changed]
            rows = self._raw.loc[labels].copy()
            for name in view.columns:
                if name not in rows.columns or rows[name].dtype != object:
                    rows[name] = rows[name].astype(object) if name in rows.columns else None
                rows[name] = view.loc[changed, name].to_numpy()
            # no NaN for writers that send JSON (openeo's STACAPIJobDatabase)
            rows = rows.astype(object).where(rows.notna(), None)
            self.wrapped.persist(rows)
            self._raw = self._raw.reindex(columns=list(dict.fromkeys([*self._raw.columns, *rows.columns])))
            for name in rows.columns:
                if self._raw[name].dtype != object:
                    self._raw[name] = self._raw[name].astype(object)
                self._raw.loc[labels, name] = rows[name].to_numpy()
        self._written = view
        self._history += self._pending
        self._pending.clear()
        self._dirty = False
        self._last_save = time.monotonic()
        self._save_seconds = self._last_save - start

    def _write_meta(self) -> None:
        """Nothing: openeo's interface has no place for it."""

    # -- openeo's interface --------------------------------------------------------------------
    def initialize_from_df(self, df: pd.DataFrame, *, on_exists: OnExists = "error",
                           key_column: str | None = None) -> OpenEOJobDatabase:
        """Initialise the wrapped database from ``df`` the way openeo does (an existing one is
        resumed with ``on_exists="skip"``/``"append"``, which adds no rows)."""
        if key_column is not None:
            raise ConfigurationError("an openeo job database is keyed on its dataframe index")
        if self.exists():
            if on_exists == "error":
                raise JobDatabaseError(f"job database {self!r} already exists")
            return self
        init = getattr(self.wrapped, "initialize_from_df", None)
        if callable(init):
            init(df)
        else:
            from openeo.extra.job_management import MultiBackendJobManager

            self.wrapped.persist(MultiBackendJobManager._column_requirements.normalize_df(df))
        self._df = None
        return self

    def _initialize(self, prepared: PreparedJobs, *, exists: bool, key_column: str | None) -> bool:
        raise NotImplementedError  # initialize_from_df is overridden

    def persist(self, df: pd.DataFrame) -> None:
        """Hand ``df`` to the wrapped database and read it again."""
        with self._lock:
            self.flush()
            self.wrapped.persist(df)
            self._df = None

    def _history_rows(self) -> list[dict[str, Any]]:
        """The status changes of this run (openeo's databases keep none)."""
        return self._history + self._pending


def openeo_arguments(df: Any, start_job: Any, job_db: Any, status_callback: Any,
                     kwargs: dict[str, Any], default_start_job: Any) -> tuple[Any, Any, Any, Any]:
    """``run_jobs``' arguments in the forms openeo and WorldCereal scripts use, as
    ``(df, start_job, job_db, status_callback)``: the deprecated ``output_file`` keyword
    (a ``DeprecationWarning``), and ``run_jobs(start_job, job_db, status_callback)``.

    Raises:
        ConfigurationError: both ``output_file`` and ``job_db``; a status_callback that
            cannot be called.
        TypeError: other unexpected keywords.
    """
    import warnings

    if "output_file" in kwargs:
        if job_db is not None:
            raise ConfigurationError("give only one of 'output_file' and 'job_db'")
        warnings.warn("'output_file' is deprecated, use 'job_db'", DeprecationWarning, stacklevel=3)
        job_db = kwargs.pop("output_file")
    if kwargs:
        raise TypeError(f"unexpected keyword arguments: {sorted(kwargs)}")
    if df is not None and not isinstance(df, pd.DataFrame) and callable(df):
        if job_db is not None and start_job is not default_start_job:
            status_callback = job_db
        df, start_job, job_db = None, df, (None if start_job is default_start_job else start_job)
    if status_callback is not None and not callable(status_callback):
        raise ConfigurationError("status_callback must be callable")
    return df, start_job, job_db, status_callback
