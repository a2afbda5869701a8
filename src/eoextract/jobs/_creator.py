"""Create jobs from a parameterised openEO process, one per row of the job dataframe.

:class:`ProcessBasedJobCreator` drops into ``run_jobs(start_job=...)`` as is: process
parameters are filled from the row's columns of the same name (or as mapped by
``parameter_column_map``); a single GeoJSON parameter is linked to the single geometry
column; remaining parameters take ``parameter_defaults``, then the process's own default.
``job_options`` are passed to every created job.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import numpy as np
import openeo
import pandas as pd
import shapely.geometry
import shapely.geometry.base
from openeo.internal.processes.parse import Parameter, Process, parse_remote_process_definition
from openeo.rest.job import BatchJob

from eoextract.errors import ConfigurationError

_log = logging.getLogger(__name__)


def _json_value(value: Any) -> Any:
    """Row values as JSON-ready process arguments."""
    if isinstance(value, shapely.geometry.base.BaseGeometry):
        return shapely.geometry.mapping(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class ProcessBasedJobCreator:
    """A ``start_job`` callable creating one job per row from a parameterised process.

    Args:
        process_id: id of the process (a user-defined process of the connection's user, or
            a process in the remote definition at ``namespace``).
        namespace: URL of a remote process definition, or ``None`` for the user's own UDP.
        parameter_defaults: values for parameters that have no column in the row.
        parameter_column_map: process parameter name → dataframe column name.
        job_options: backend job options for every job (e.g. memory settings).
        title: job title, or a format string over the row (``"crop {job_key}"``); a row's
            own ``title`` column wins.
    """

    def __init__(
        self,
        *,
        process_id: str | None = None,
        namespace: str | None = None,
        parameter_defaults: Mapping[str, Any] | None = None,
        parameter_column_map: Mapping[str, str] | None = None,
        job_options: Mapping[str, Any] | None = None,
        title: str | None = None,
    ) -> None:
        if process_id is None and namespace is None:
            raise ConfigurationError("give process_id, namespace or both")
        self.process_id = process_id
        self.namespace = namespace
        self.parameter_defaults = dict(parameter_defaults or {})
        self.parameter_column_map = dict(parameter_column_map) if parameter_column_map is not None else None
        self.job_options = dict(job_options) if job_options else None
        self.title = title
        self._definitions: dict[tuple, Process] = {}
        self._lock = threading.Lock()

    def _definition(self, connection: openeo.Connection) -> Process:
        remote = isinstance(self.namespace, str) and re.match(r"https?://", self.namespace)
        key = ("remote", self.namespace, self.process_id) if remote else ("udp", connection.root_url, self.process_id)
        with self._lock:
            if key not in self._definitions:
                if remote:
                    self._definitions[key] = parse_remote_process_definition(
                        namespace=self.namespace, process_id=self.process_id)
                elif self.namespace is None:
                    self._definitions[key] = Process.from_dict(
                        connection.user_defined_process(self.process_id).describe())
                else:
                    raise ConfigurationError(
                        f"unsupported process source: process_id={self.process_id!r} namespace={self.namespace!r}")
            return self._definitions[key]

    def _column_map(self, parameters: list[Parameter], row: pd.Series) -> dict[str, str]:
        if self.parameter_column_map is not None:
            return self.parameter_column_map
        geo_params = [p.name for p in parameters if p.schema.accepts_geojson()]
        geo_columns = [c for c, v in row.items() if isinstance(v, shapely.geometry.base.BaseGeometry)]
        if not geo_params or not geo_columns:
            return {}
        if len(geo_params) == 1 and len(geo_columns) == 1:
            return {geo_params[0]: geo_columns[0]}
        if all(p in geo_columns for p in geo_params):
            return {p: p for p in geo_params}
        raise ConfigurationError(
            f"cannot link geometry columns {geo_columns} to GeoJSON parameters {geo_params}: "
            "give parameter_column_map")

    def arguments(self, row: pd.Series, connection: openeo.Connection) -> dict[str, Any]:
        """The process arguments for one row."""
        process = self._definition(connection)
        parameters = list(process.parameters or [])
        column_map = self._column_map(parameters, row)
        arguments: dict[str, Any] = {}
        for parameter in parameters:
            column = column_map.get(parameter.name, parameter.name)
            cell = row[column] if column in row.index else None
            if cell is not None and not (np.isscalar(cell) and pd.isna(cell)):  # empty: default
                value = cell
            elif parameter.name in self.parameter_defaults:
                value = self.parameter_defaults[parameter.name]
            elif parameter.has_default():
                value = parameter.default
            elif parameter.optional:
                continue
            else:
                raise ConfigurationError(
                    f"no value for required parameter {parameter.name!r} of process {process.id!r}: "
                    f"add a column {column!r} or a parameter default")
            arguments[parameter.name] = _json_value(value)
        return arguments

    def start_job(self, row: pd.Series, connection: openeo.Connection, **_: Any) -> BatchJob:
        """Create (not start) the job of one row."""
        process = self._definition(connection)
        arguments = self.arguments(row, connection)
        cube = connection.datacube_from_process(process_id=process.id, namespace=self.namespace, **arguments)
        title = row.get("title")
        if not isinstance(title, str) or not title:
            if self.title:
                title = self.title.format(**{str(k): v for k, v in row.items()}, job_key=row.name)
            else:
                title = f"{process.id} {row.name}"
        description = row.get("description")
        if not isinstance(description, str):
            description = f"Process {process.id!r} (namespace {self.namespace}) for row {row.name}"
        return connection.create_job(cube, title=title, description=description, job_options=self.job_options)

    def __call__(self, *args: Any, **kwargs: Any) -> BatchJob:
        return self.start_job(*args, **kwargs)
