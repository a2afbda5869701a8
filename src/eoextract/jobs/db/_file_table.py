"""The in-memory job table of a file database.

The table is the dataframe ``read()`` returns: indexed by ``job_key``, the user's columns
(restored to their dtypes) then every managed column. This module reads records from it,
writes cells, adds and merges rows, and lets the rules of :mod:`~eoextract.jobs.db._rules`
run on it; :mod:`~eoextract.jobs.db._file_db` holds the table and saves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from eoextract.jobs.db._columns import UserSchema
from eoextract.jobs.db._file_format import history_row
from eoextract.jobs.db._frame import MANAGED_KINDS, PreparedJobs, build_frame
from eoextract.jobs.db._records import JobRecord
from eoextract.jobs.status import JobStatus

_RECORD_FIELDS = [n for n in MANAGED_KINDS if n != "status"]


def plain(value: Any, *, timestamps: bool = False) -> Any:
    """A plain Python value (``None`` for missing; ``datetime`` unless ``timestamps``)."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value if timestamps else value.to_pydatetime()
    if isinstance(value, np.generic):
        value = value.item()
        return None if isinstance(value, float) and np.isnan(value) else value
    return value


def cell(name: str, value: Any) -> Any:
    """A managed column's stored value as the table holds it (``NaT``/``NaN`` for missing)."""
    if MANAGED_KINDS[name] == "datetime":
        return pd.NaT if value is None else pd.Timestamp(value)
    if MANAGED_KINDS[name] == "float" and value is None:
        return np.nan
    return value


class FrameColumns:
    """The table as pandas series (:class:`~eoextract.jobs.db._rules.Columns`)."""

    def __init__(self, table: pd.DataFrame):
        self._table = table

    def __getitem__(self, name: str) -> pd.Series:
        return self._table[name]

    def is_null(self, column: pd.Series) -> pd.Series:
        return column.isna()

    def is_in(self, column: pd.Series, values: Any) -> pd.Series:
        return column.isin(list(values))


def records(table: pd.DataFrame, rows: pd.DataFrame, schema: UserSchema) -> list[JobRecord]:
    """Records of ``rows`` (a selection of ``table``); ``pk`` is the row's position plus one."""
    positions = table.index.get_indexer(rows.index)
    user_names = schema.names
    found = []
    for pos, key, row in zip(positions, rows.index, rows.to_dict("records"), strict=True):
        fields = {n: plain(row[n]) for n in _RECORD_FIELDS}
        fields["attempt"] = int(fields["attempt"] or 0)
        found.append(JobRecord(pk=int(pos) + 1, job_key=str(key), status=JobStatus(row["status"]),
                               fields=fields,
                               row={n: plain(row[n], timestamps=True) for n in user_names}))
    return found


def set_values(table: pd.DataFrame, where: Any, values: Mapping[str, Any]) -> None:
    """Write managed ``values`` to the rows ``where`` selects (keys or a boolean mask)."""
    for name, value in values.items():
        table.loc[where, name] = cell(name, value)


def append(table: pd.DataFrame, prepared: PreparedJobs, schema: UserSchema, now: datetime
           ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The table with the rows of ``prepared`` whose key is new, and their history rows.

    ``schema`` is extended by new user columns; ``table`` itself may gain them (empty).
    """
    new = [i for i, key in enumerate(prepared.keys) if key not in table.index]
    if not new:
        return table, []
    schema.extend(prepared.user)
    managed: dict[str, list[Any]] = {}
    for name in MANAGED_KINDS:
        values = prepared.managed.get(name)
        managed[name] = [None if values is None else values[i] for i in new]
    managed["created_at"] = [v or now for v in managed["created_at"]]
    managed["updated_at"] = [now] * len(new)
    managed["status"] = [v or JobStatus.NOT_STARTED for v in managed["status"]]
    user = prepared.user.iloc[new]
    for spec in schema.columns:
        if spec.name not in user.columns:
            user = user.assign(**{spec.name: table[spec.name].iloc[:0].reindex(user.index)})
    added = build_frame(user[schema.names], managed, schema)
    for name in schema.names:
        if name not in table.columns:
            table[name] = added[name].iloc[:0].reindex(table.index)
    history = [history_row(key, None, status, now, None, "added", backend_job_id)
               for key, status, backend_job_id in zip(added.index, added["status"], added["id"],
                                                      strict=True)]
    return _concat(table[schema.names + list(MANAGED_KINDS)], added, schema), history


def _concat(table: pd.DataFrame, added: pd.DataFrame, schema: UserSchema) -> pd.DataFrame:
    cols = list(table.columns)
    if len(table) == 0:
        return added[cols]
    frame = pd.concat([table, added[cols]])
    geometry = schema.geometry
    if geometry is not None:
        import geopandas

        frame = geopandas.GeoDataFrame(frame, geometry=geometry, crs=schema.spec(geometry).crs)
    return frame


def merge(table: pd.DataFrame, prepared: PreparedJobs, schema: UserSchema, now: datetime
          ) -> list[dict[str, Any]]:
    """Write the rows of ``prepared`` whose key the table holds, in place; returns the
    history rows of their changed statuses (message ``"persist"``, not checked against the
    status model). ``schema`` must already know ``prepared``'s user columns."""
    known = [k for k in prepared.keys if k in table.index]
    pos = {k: i for i, k in enumerate(prepared.keys)}
    history = []
    for name in prepared.user.columns:
        if name not in table.columns:
            table[name] = prepared.user[name].iloc[:0].reindex(table.index)
        spec = schema.spec(name)
        restored = spec.decode(spec.encode(prepared.user[name]), prepared.user.index)
        if known:
            table.loc[known, name] = restored.loc[known].to_numpy()
    for name, values in prepared.managed.items():
        for key in known:
            value = values[pos[key]]
            if name == "status":
                old = JobStatus(table.at[key, "status"])
                if value is not old:
                    history.append(history_row(key, old, value, now, None, "persist",
                                               plain(table.at[key, "id"])))
                value = value.value
            table.at[key, name] = cell(name, value)
    for key in known:
        table.at[key, "updated_at"] = pd.Timestamp(now)
    return history
