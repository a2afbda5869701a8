"""The user callbacks and inputs of an extraction, checked up front: how each callback
will be called, and whether there are jobs to run (:func:`check_job_inputs`).

* ``create_datacube_fn(row, connection, provider=None, connection_provider=None)``, called
  with those keywords it declares (:func:`check_start_job`);
* ``post_job_action`` in openeo-gfmap's form ``(job_items, row, parameters)`` or in ESA
  WorldCereal's ``(job_items, row)`` (:func:`post_job_action_arity`). WorldCereal binds its
  own settings with ``functools.partial(action, extract_value=1, ...)``, which leaves two
  positional parameters.

The ``output_path_generator`` forms are checked by
:class:`~eoextract.extract._placement.OutputPathGenerator`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from eoextract.errors import ConfigurationError
from eoextract.extract._placement import check_signature

#: Parameters ``post_job_action`` is called with, positionally (openeo-gfmap's form).
POST_JOB_PARAMETERS = ("job_items", "row", "parameters")
#: WorldCereal's form of ``post_job_action``: no parameters dict.
POST_JOB_PARAMETERS_SHORT = ("job_items", "row")
#: Keyword arguments the manager passes to ``create_datacube_fn`` (those it declares).
START_JOB_KEYWORDS = ("row", "connection", "connection_provider", "provider")


def check_start_job(fn: Any) -> None:
    """Check ``create_datacube_fn`` can be called as the manager calls it.

    Raises:
        ConfigurationError: Not callable, or without parameters ``row`` and ``connection``.
    """
    name = "create_datacube_fn"
    if not callable(fn):
        raise ConfigurationError(f"{name} must be a function like {name}(row, connection, provider=None, "
                                 f"connection_provider=None), got {type(fn).__name__}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        passed = list(START_JOB_KEYWORDS)
    else:
        passed = [k for k in START_JOB_KEYWORDS if k in params]
    missing = [k for k in ("row", "connection") if k not in passed]
    if missing:
        label = getattr(fn, "__qualname__", repr(fn))
        raise ConfigurationError(
            f"{name} {label}{inspect.signature(fn)} must take parameters named 'row' and 'connection' "
            f"(it is called as {name}(row=..., connection=..., provider=..., connection_provider=...), "
            f"with those of them it declares); missing: {', '.join(missing)}"
        )
    check_signature(fn, (), name=name, keywords=passed)


def post_job_action_arity(fn: Any) -> int:
    """How many positional arguments ``post_job_action`` takes: 3 for
    ``(job_items, row, parameters)``, 2 for ``(job_items, row)``.

    A callback that can take both (e.g. ``(job_items, row, parameters=None)``) gets three.

    Raises:
        ConfigurationError: It takes neither form; the message names both.
    """
    try:
        check_signature(fn, POST_JOB_PARAMETERS, name="post_job_action")
        return 3
    except ConfigurationError as long_form:
        try:
            check_signature(fn, POST_JOB_PARAMETERS_SHORT, name="post_job_action")
        except ConfigurationError:
            raise ConfigurationError(
                f"{long_form}; post_job_action must take (job_items, row, parameters) or "
                f"(job_items, row) positionally (further parameters need defaults)") from None
        return 2


def check_job_inputs(df: Any, job_db: Any, required_columns: Sequence[str] = ()) -> None:
    """Refuse a run that has no jobs: a ``df`` that is not a DataFrame, lacks a required
    column or is empty, unless ``job_db`` already holds jobs to resume (a database object,
    eoextract's or an openeo ``JobDatabaseInterface``; a file; a database URL).

    Raises:
        ConfigurationError: Saying what is wrong with ``df``.
    """
    if df is not None:
        if not isinstance(df, pd.DataFrame):
            hint = ("; split_job_hex and split_job_s2grid give one GeoDataFrame of samples per "
                    "job: make one row per group (e.g. its samples as GeoJSON in a 'geometry' "
                    "column, as examples/extract_s2_croptype.py does)"
                    if isinstance(df, (list, tuple)) else "")
            raise ConfigurationError(
                f"the job dataframe must be a pandas DataFrame, not {type(df).__name__}{hint}")
        missing = [c for c in required_columns if c not in df.columns]
        if missing:
            raise ConfigurationError(
                f"the job dataframe lacks required column(s) {missing}; it has {list(df.columns)}")
        if len(df) > 0:
            return
    if isinstance(job_db, (str, os.PathLike)):
        if "://" in str(job_db):
            return  # a database server: resuming its jobs
        if Path(job_db).is_file():
            return  # resuming: the database holds the jobs (checked when it is opened)
    elif callable(getattr(job_db, "exists", None)) and job_db.exists() \
            and sum(job_db.count_by_status().values()):
        return  # a database object holding jobs
    what = "is empty" if df is not None else "was not given"
    raise ConfigurationError(f"the job dataframe {what} and there is no job database with jobs to resume")
