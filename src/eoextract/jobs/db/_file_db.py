"""Job databases in openeo-compatible CSV and Parquet files.

The files read and write the columns openeo's ``CsvJobDatabase`` / ``ParquetJobDatabase``
use (``id`` = backend job id, ``status``, ``backend_name``, ``start_time``,
``running_start_time``, ``cpu``, ``memory``, ``duration``, ``costs``, geometry as WKT in
CSV and GeoParquet in Parquet), so either tool reads the other's files.

* ``status`` holds openeo's reading of our status (:data:`~eoextract.jobs.status.OPENEO_STATUS`:
  ``creating`` reads as ``not_started``, ``downloading`` as ``running``, ...) and
  ``eoextract_status`` the exact one. When ``status`` no longer agrees with
  ``eoextract_status`` (openeo's manager moved the job on), ``status`` wins.
* Dtypes of the user columns, the key column, the CRS of the geometry and the registered
  backends go to a sidecar ``<file>.meta.json``; the status history is appended to
  ``<file>.history.csv``. A file without sidecar (written by openeo) is read the way
  openeo reads it; WKT geometry in such a CSV is taken to be EPSG:4326 (with a warning).
* The whole table lives in memory. Each save rewrites the file atomically (temporary file
  in the same folder, fsync, rename), so a crash leaves the previous version. Saves are
  batched: :meth:`~FileJobDatabase.transition`, :meth:`~FileJobDatabase.update` and
  :meth:`~FileJobDatabase.claim` mark the table dirty and it is written by
  :meth:`~FileJobDatabase.flush`, when ``flush_interval`` seconds (at least ten times
  the last save's duration) have passed since the last save, and on
  :meth:`~FileJobDatabase.close`. :meth:`~FileJobDatabase.persist`
  (openeo's call) writes at once.
* Claims and leases hold within one process only: two processes must not share a file
  database (use SQLite or PostgreSQL for that).
* CSV keeps values as text: empty strings read back as missing, and WKT keeps about 16
  significant digits of coordinates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from eoextract._util.utc import utc_now
from eoextract.errors import ConfigurationError, InvalidTransition, JobDatabaseError, JobError
from eoextract.jobs.db import _file_table as table
from eoextract.jobs.db import _rules as rules
from eoextract.jobs.db._columns import UserSchema
from eoextract.jobs.db._file_format import (
    append_history,
    export_table,
    history_by_job,
    history_row,
    join_state,
    read_history,
    read_meta,
    read_table,
    split_export,
    write_meta,
    write_table,
)
from eoextract.jobs.db._frame import (
    MANAGED_KINDS,
    PreparedJobs,
    build_frame,
    parse_status,
    prepare_job_frame,
    status_values,
)
from eoextract.jobs.db._interface import JobDatabase
from eoextract.jobs.db._models import CREATED_BY, SCHEMA_VERSION
from eoextract.jobs.db._records import JobRecord, StatusChange, Transition
from eoextract.jobs.status import ACTIVE, JobStatus

_log = logging.getLogger(__name__)


_CSV_SUFFIXES = {".csv"}
_PARQUET_SUFFIXES = {".parquet", ".geoparquet"}
_EARLIEST = pd.Timestamp.min.tz_localize("UTC")


class FileJobDatabase(JobDatabase):
    """Jobs in a CSV or (Geo)Parquet file that openeo's job databases also read and write.

    Args:
        path: a ``.csv``, ``.parquet`` or ``.geoparquet`` file.
        flush_interval: seconds after which a batched change is written without waiting
            for :meth:`flush`.

    Raises:
        ConfigurationError: unsupported extension.
        JobDatabaseError: the folder does not exist.
    """

    def __init__(self, path: str | Path, *, flush_interval: float = 2.0):
        self.path = Path(path).expanduser()
        suffix = self.path.suffix.lower()
        if suffix not in _CSV_SUFFIXES | _PARQUET_SUFFIXES:
            raise ConfigurationError(f"{str(self.path)!r}: a file job database is .csv, .parquet "
                                     f"or .geoparquet")
        if not self.path.parent.is_dir():
            raise JobDatabaseError(f"cannot use job database {str(self.path)!r}: folder "
                                   f"{str(self.path.parent)!r} does not exist")
        self.is_csv = suffix in _CSV_SUFFIXES
        self.flush_interval = flush_interval
        self.meta_path = self.path.with_name(self.path.name + ".meta.json")
        self.history_path = self.path.with_name(self.path.name + ".history.csv")
        self.state_path = self.path.with_name(self.path.name + ".state.csv")
        self._lock = threading.RLock()
        self._df: pd.DataFrame | None = None
        self._schema = UserSchema()
        self._meta: dict[str, Any] = {}
        self._pending: list[dict[str, Any]] = []
        self._dirty = False
        self._last_save = 0.0
        self._save_seconds = 0.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def schema(self) -> UserSchema:
        """Dtypes of the user columns."""
        if self.exists():
            self._frame()
        return self._schema

    @property
    def key_column(self) -> str | None:
        """The column whose values are the job keys (``None``: the dataframe index)."""
        self._frame()
        return self._meta.get("key_column")

    # -- loading ---------------------------------------------------------------------------
    def _frame(self) -> pd.DataFrame:
        """The in-memory table, loaded on first use."""
        with self._lock:
            if self._df is not None:
                return self._df
            raw, meta = self._read_stored()
            schema = UserSchema.from_dict(meta["user_columns"]) if meta else None
            key_column = meta.get("key_column") if meta else None
            try:
                prepared = prepare_job_frame(raw, key_column)
            except ConfigurationError as exc:
                raise JobDatabaseError(f"{self!r} cannot be read as a job database: {exc}") from exc
            if schema is None:
                schema = prepared.schema
            else:
                missing = [n for n in schema.names if n not in prepared.user.columns]
                if missing:  # e.g. a header edited by hand
                    raise JobDatabaseError(f"{self!r} cannot be read as a job database: column(s) "
                                           f"{missing!r} of {self.meta_path.name} are missing")
                schema.extend(prepared.user)
            managed = {name: prepared.managed.get(name, [None] * len(prepared.keys))
                       for name in MANAGED_KINDS}
            if "status" not in prepared.managed:  # a table of jobs without statuses: all new
                managed["status"] = [JobStatus.NOT_STARTED] * len(prepared.keys)
            self._schema = schema
            self._meta = meta or {"created_by": CREATED_BY, "schema_version": SCHEMA_VERSION,
                                  "key_column": None, "backends": {}}
            self._df = build_frame(prepared.user[schema.names], managed, schema)
            self._last_save = time.monotonic()
            return self._df

    def _read_stored(self) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The stored table and its sidecar metadata (empty for a file of openeo's)."""
        if not self.path.exists():
            raise JobDatabaseError(f"{self!r} does not exist yet; use initialize_from_df() "
                                   f"or create_job_db()")
        meta = read_meta(self.meta_path)
        schema = UserSchema.from_dict(meta["user_columns"]) if meta else None
        raw = read_table(self.path, schema)
        if meta:  # the usage key columns are written from the ``usage`` column
            raw = raw.drop(columns=[c for c in meta.get("usage_columns", []) if c in raw.columns])
        return (join_state(raw, self.state_path) if meta else raw), meta

    # -- saving ----------------------------------------------------------------------------
    def _write_meta(self) -> None:
        meta = dict(self._meta, user_columns=self._schema.to_dict(),
                    geometry_column=self._schema.geometry)
        geometry = self._schema.spec(self._schema.geometry) if self._schema.geometry else None
        meta["crs"] = geometry.crs if geometry else None
        write_meta(self.meta_path, meta)
        self._meta = meta

    def _save(self) -> None:
        """Write meta, pending history and the table (atomically); caller holds the lock."""
        start = time.monotonic()
        out = export_table(self._frame(), self._schema, csv_file=self.is_csv,
                           key_column=self._meta.get("key_column"))
        self._meta["usage_columns"] = out.attrs["usage_columns"]
        self._write_meta()
        append_history(self.history_path, self._pending)
        self._pending.clear()
        main, state = split_export(out, self._schema)
        write_table(self.state_path, state)  # first: a crash between the two leaves it ahead
        write_table(self.path, main)
        self._dirty = False
        self._last_save = time.monotonic()
        self._save_seconds = self._last_save - start

    def flush(self) -> None:
        """Write batched changes now (atomically)."""
        with self._lock:
            if self._dirty:
                self._save()

    def close(self) -> None:
        self.flush()

    def _touched(self) -> None:
        """Mark the table dirty; save when the interval has passed.

        The interval is at least ten times the last save's duration, so that rewriting a
        large file never takes more than about a tenth of the time.
        """
        self._dirty = True
        interval = max(self.flush_interval, 10 * self._save_seconds)
        if time.monotonic() - self._last_save >= interval:
            self._save()

    # -- openeo's interface ------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> pd.DataFrame:
        with self._lock:
            return self._frame().copy()

    def _initialize(self, prepared: PreparedJobs, *, exists: bool, key_column: str | None) -> bool:
        """Create the file (or add the new rows to it) and write it at once (see
        :meth:`JobDatabase.initialize_from_df`)."""
        if not exists:
            self._schema = prepared.schema
            self._meta = {"created_by": CREATED_BY, "schema_version": SCHEMA_VERSION,
                          "created_at": utc_now().isoformat(), "key_column": key_column,
                          "backends": {}}
            self._df = build_frame(prepared.user.iloc[:0], {}, self._schema)
        self._add(prepared)
        self._save()
        return True

    def _add(self, prepared: PreparedJobs) -> None:
        """Append the rows of ``prepared`` whose key is new; caller holds the lock."""
        self._df, history = table.append(self._frame(), prepared, self._schema, utc_now())
        if history:
            self._pending += history
            self._dirty = True

    def persist(self, df: pd.DataFrame) -> None:
        """Insert or update the given rows and write the file at once (openeo's call).

        Managed columns in ``df`` are taken as given (a changed ``status`` is recorded in
        the history with message ``"persist"``, not checked against the status model).
        """
        with self._lock:
            key_column = self.key_column
            prepared = prepare_job_frame(df, key_column if key_column in df.columns else None)
            self._schema.extend(prepared.user)
            self._pending += table.merge(self._frame(), prepared, self._schema, utc_now())
            self._add(prepared)
            self._save()

    def count_by_status(self, statuses: Iterable[str] = ()) -> dict[str, int]:
        wanted = {parse_status(s).value for s in statuses}
        with self._lock:
            counts = self._frame()["status"].value_counts().to_dict()
        return {s: int(n) for s, n in counts.items() if not wanted or s in wanted}

    def get_by_status(self, statuses: Iterable[str], max: int | None = None) -> pd.DataFrame:
        with self._lock:
            df = self._frame()
            found = df[df["status"].isin(status_values(statuses))]
            return (found.head(max) if max is not None else found).copy()

    def get_by_indices(self, indices: Iterable[Any]) -> pd.DataFrame:
        with self._lock:
            df = self._frame()
            keys = [str(i) for i in indices]
            return df.loc[[k for k in keys if k in df.index]].copy()

    # -- the manager's interface ---------------------------------------------------------------
    def _records(self, rows: pd.DataFrame) -> list[JobRecord]:
        return table.records(self._frame(), rows, self._schema)

    def _jobs(self, statuses: list[str] | None, backend_name: str | None,
              keys: list[str] | None, *, limit: int | None = None,
              latest_first: bool = False) -> list[JobRecord]:
        with self._lock:
            df = self._frame()
            mask = pd.Series(True, index=df.index)
            if statuses is not None:
                mask &= df["status"].isin(statuses)
            if backend_name is not None:
                mask &= df["backend_name"] == backend_name
            if keys is not None:
                mask &= df.index.isin(keys)
            found = df[mask]
            if latest_first:
                found = found.sort_values("updated_at", ascending=False, kind="stable",
                                          na_position="last")
            return self._records(found if limit is None else found.head(limit))

    def get(self, job_key: str) -> JobRecord:
        with self._lock:
            df = self._frame()
            if job_key not in df.index:
                raise JobError(f"unknown job {job_key!r} in {self!r}", job_key=job_key)
            return self._records(df.loc[[job_key]])[0]

    def _claim(self, claim: rules.Claim) -> list[JobRecord]:
        """Claim jobs (see :meth:`JobDatabase.claim`); within this process only."""
        with self._lock:
            df = self._frame()
            t = table.FrameColumns(df)
            limit = claim.limit
            if claim.max_active is not None:
                used = (rules.active_on(t, claim.backend_name)
                        | rules.claimed_for(t, claim.backend_name, claim.now))
                limit = claim.capped_limit(int(used.sum()))
            if limit <= 0:
                return []
            mask = (rules.claimable(t, claim.manager_id, claim.now)
                    & (rules.never_due(t) | rules.due(t, claim.now)))
            if claim.backend_name is not None:
                registered = list(self._meta.get("backends") or {})
                none_other = all(n == claim.backend_name for n in registered)
                mask &= ~rules.pinned_elsewhere(t, claim.backend_name, registered, none_other)
            # never-due jobs first, then by next_attempt_at; ties in table order
            order = df.loc[mask, "next_attempt_at"].fillna(_EARLIEST).sort_values(kind="stable")
            return self._take(list(order.index[:limit]), claim.values)

    def _take(self, keys: list[str], values: Mapping[str, Any]) -> list[JobRecord]:
        """Write ``values`` to the rows of ``keys`` and return their records; caller holds the lock."""
        if not keys:
            return []
        table.set_values(self._frame(), keys, values)
        self._touched()
        return self._records(self._frame().loc[keys])

    def _adopt(self, adoption: rules.Adoption) -> list[JobRecord]:
        """Take over jobs whose lease expired (see :meth:`JobDatabase.adopt_expired`).

        A file database has one manager at a time, so this only matters when a manager
        resumes a file another manager left behind.
        """
        if adoption.limit is not None and adoption.limit <= 0:
            return []
        with self._lock:
            df = self._frame()
            found = rules.adoptable(table.FrameColumns(df), adoption.manager_id, adoption.now,
                                    adoption.backend_names)
            return self._take(list(df.index[found])[:adoption.limit], adoption.values)

    def _apply_transitions(
        self, changes: Sequence[Transition], *, manager_id: str | None, user_retry: bool
    ) -> list[StatusChange | InvalidTransition]:
        """Apply transitions (see :meth:`JobDatabase.transition`); saved with the next flush."""
        results: list[StatusChange | InvalidTransition] = []
        with self._lock:
            df = self._frame()
            for change in changes:
                try:
                    results.append(self._apply_transition(df, change, manager_id, user_retry))
                except InvalidTransition as exc:
                    results.append(exc)
            if any(isinstance(r, StatusChange) for r in results):
                self._touched()
        return results

    def _apply_transition(self, df: pd.DataFrame, change: Transition, manager_id: str | None,
                          user_retry: bool) -> StatusChange:
        key = change.job_key
        if key not in df.index:
            raise JobError(f"unknown job {key!r}", job_key=key)
        old = JobStatus(df.at[key, "status"])
        backend_job_id = None if "id" in change.fields else table.plain(df.at[key, "id"])
        values, result = rules.plan_transition(change, old, backend_job_id, manager_id=manager_id,
                                               user_retry=user_retry, now=utc_now())
        for name, value in values.items():
            df.at[key, name] = table.cell(name, value)
        self._pending.append(history_row(key, old, result.new, result.at, manager_id,
                                         change.message, result.backend_job_id))
        return result

    def _update(self, job_key: str, values: dict[str, Any]) -> None:
        with self._lock:
            df = self._frame()
            if job_key not in df.index:
                raise JobError(f"unknown job {job_key!r}", job_key=job_key)
            values["updated_at"] = utc_now()
            for name, value in values.items():
                df.at[job_key, name] = table.cell(name, value)
            self._touched()

    def history(self, job_key: str) -> list[StatusChange]:
        return self.histories([job_key]).get(job_key, [])

    def histories(self, keys: Iterable[str] | None = None) -> dict[str, list[StatusChange]]:
        with self._lock:
            rows = self._history_rows()
            if keys is None:  # the table's jobs (a sidecar may outlive a table made anew)
                keys = self._frame().index
        return history_by_job(rows, keys)

    def _history_rows(self) -> list[dict[str, Any]]:
        """Every history row, those not yet written to the sidecar last."""
        return read_history(self.history_path) + self._pending

    def active_counts(self) -> dict[str, int]:
        with self._lock:
            df = self._frame()
            active = df[df["status"].isin([s.value for s in ACTIVE])]
            return {str(k): int(v) for k, v in active["backend_name"].value_counts().items()}

    def _renew(self, manager_id: str, values: Mapping[str, Any]) -> int:
        with self._lock:
            df = self._frame()
            mask = rules.renewable(table.FrameColumns(df), manager_id)
            if mask.any():
                table.set_values(df, mask, values)
                self._touched()
            return int(mask.sum())

    def release(self, manager_id: str) -> None:
        if not self.exists() and self._df is None:
            return
        with self._lock:
            df = self._frame()
            mask = rules.held_by(table.FrameColumns(df), manager_id)
            if mask.any():
                table.set_values(df, mask, rules.RELEASED)
                self._touched()

    def register_backend(self, name: str, url: str | None) -> None:
        from eoextract.jobs.db._connection import strip_credentials

        with self._lock:
            self._frame()
            backends = dict(self._meta.get("backends") or {})
            backends[name] = strip_credentials(url)
            self._meta["backends"] = backends
            self._dirty = True
            self._save()

    def backend_state(self) -> dict[str, Any]:
        if not self.exists():
            return {}
        with self._lock:
            self._frame()
            return dict(self._meta.get("backend_state") or {})

    def save_backend_state(self, state: Mapping[str, Any]) -> None:
        with self._lock:
            self._frame()
            self._meta["backend_state"] = dict(state)
            self._dirty = True

    def backends(self) -> dict[str, str | None]:
        if not self.exists():
            return {}
        with self._lock:
            self._frame()
            return dict(self._meta.get("backends") or {})
