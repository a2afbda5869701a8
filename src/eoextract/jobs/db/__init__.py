"""Job databases: SQL (SQLite default, PostgreSQL) and openeo-compatible CSV / Parquet files.

:func:`get_job_db` and :func:`create_job_db` (openeo's names) pick the implementation from
the file extension or URL scheme:

=======================================================  ====================================
``.db``, ``.sqlite``, ``.sqlite3``, ``sqlite:///...``    :class:`SqlJobDatabase` (SQLite)
``postgresql://...``, ``postgresql+psycopg://...``       :class:`SqlJobDatabase` (psycopg 3)
``.csv``, ``.parquet``, ``.geoparquet``                  :class:`FileJobDatabase`
an openeo ``JobDatabaseInterface`` object                wrapped (``_openeo_db``)
=======================================================  ====================================
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from eoextract.errors import ConfigurationError
from eoextract.jobs.db._interface import JobDatabase, OnExists
from eoextract.jobs.db._records import MANAGED_COLUMNS, UPDATABLE_FIELDS, JobRecord, StatusChange, Transition
from eoextract.jobs.db._rules import ADOPTABLE

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from eoextract.jobs.db._file_db import FileJobDatabase
    from eoextract.jobs.db._sql_db import SqlJobDatabase

__all__ = [
    "JobDatabase",
    "JobRecord",
    "StatusChange",
    "Transition",
    "ADOPTABLE",
    "MANAGED_COLUMNS",
    "UPDATABLE_FIELDS",
    "SqlJobDatabase",
    "FileJobDatabase",
    "get_job_db",
    "create_job_db",
]

_FILE_SUFFIXES = {".csv", ".parquet", ".geoparquet"}


def __getattr__(name: str) -> Any:
    if name == "SqlJobDatabase":
        from eoextract.jobs.db._sql_db import SqlJobDatabase

        return SqlJobDatabase
    if name == "FileJobDatabase":
        from eoextract.jobs.db._file_db import FileJobDatabase

        return FileJobDatabase
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_job_db(path_or_url: str | Path | JobDatabase | None = None, *,
               path: str | Path | None = None) -> JobDatabase:
    """The job database at a path or URL, its type guessed from the extension or scheme.

    Nothing is created: a database that does not exist yet reports ``exists() == False``.

    Args:
        path_or_url: a file path (``jobs.db``, ``jobs.csv``, ``jobs.parquet``) or a database
            URL (``sqlite:///jobs.db``, ``postgresql://...``); a :class:`JobDatabase` is
            returned as is; an openeo ``JobDatabaseInterface`` (``CsvJobDatabase``, ...) is
            wrapped so that the state stays in it, written the way openeo does.
        path: openeo's name of the argument (``get_job_db(path=...)``).

    Raises:
        ConfigurationError: the type cannot be guessed.
        JobDatabaseError: the database cannot be used (folder missing, another tool's file,
            newer schema).
    """
    path_or_url = _location(path_or_url, path)
    if isinstance(path_or_url, JobDatabase):
        return path_or_url
    if not isinstance(path_or_url, (str, Path)):  # (openeo is imported only for objects)
        from eoextract.jobs.db._openeo_db import OpenEOJobDatabase, is_openeo_job_db

        if is_openeo_job_db(path_or_url):
            return OpenEOJobDatabase(path_or_url)
    from eoextract.jobs.db._connection import is_sql_location
    from eoextract.jobs.db._sql_db import SqlJobDatabase

    if is_sql_location(path_or_url):
        return SqlJobDatabase(path_or_url)
    text = str(path_or_url)
    if "://" not in text and Path(text).suffix.lower() in _FILE_SUFFIXES:
        from eoextract.jobs.db._file_db import FileJobDatabase

        return FileJobDatabase(text)
    raise ConfigurationError(
        f"cannot guess the job database type of {text!r}; use a .db/.sqlite/.sqlite3, .csv, "
        f".parquet/.geoparquet path or a sqlite:// or postgresql:// URL")


def create_job_db(
    path_or_url: str | Path | JobDatabase | None = None,
    df: pd.DataFrame | None = None,
    *,
    on_exists: OnExists = "error",
    key_column: str | None = None,
    path: str | Path | None = None,
) -> JobDatabase:
    """Create a job database at a path or URL from a job dataframe.

    Args:
        path_or_url: see :func:`get_job_db`.
        df: the jobs, one per row; the index (or ``key_column``) gives each job's key.
        on_exists: ``"error"`` (default) raises when the database exists, ``"skip"`` uses
            it as it is, ``"append"`` adds the rows whose key it does not hold yet.
        key_column: column holding stable job keys (default: the dataframe index).
        path: openeo's name of ``path_or_url`` (``create_job_db(path=..., df=...)``).

    Returns:
        The initialised database.

    Raises:
        ConfigurationError: bad job dataframe; checked before anything is written.
        JobDatabaseError: the database exists (``on_exists="error"``) or cannot be used.
    """
    if df is None:
        raise ConfigurationError("create_job_db needs the job dataframe (df)")
    db = get_job_db(_location(path_or_url, path))
    return db.initialize_from_df(df, on_exists=on_exists, key_column=key_column)


def _location(path_or_url: Any, path: Any) -> Any:
    """The location given either way (``path`` is openeo's name for it)."""
    if path is not None and path_or_url is not None:
        raise ConfigurationError("give the location once: path_or_url or path")
    if path is None and path_or_url is None:
        raise ConfigurationError("no job database location given")
    return path if path is not None else path_or_url


def open_for_run(df: pd.DataFrame | None, job_db: Any) -> JobDatabase:
    """The :class:`~eoextract.jobs.db.JobDatabase` that ``run_jobs(df, ..., job_db)`` works on.

    Accepts a path or URL (``df`` rows are added), one of our job databases, or an openeo
    ``JobDatabaseInterface`` (wrapped; with ``df``, initialised as openeo does when it does
    not exist yet).

    Raises:
        ConfigurationError: ``job_db`` is none of these.
    """
    from eoextract.jobs.db._openeo_db import OpenEOJobDatabase, is_openeo_job_db

    if job_db is None:
        raise ConfigurationError("run_jobs needs a job_db: a path such as 'jobs.db', a JobDatabase "
                                 "or an openeo JobDatabaseInterface")
    if is_openeo_job_db(job_db):
        job_db = OpenEOJobDatabase(job_db)
        if df is not None and not job_db.exists():
            job_db.initialize_from_df(df)
        return job_db
    if isinstance(job_db, JobDatabase):
        if df is not None:
            job_db.initialize_from_df(df, on_exists="append")
        return job_db
    if not isinstance(job_db, (str, Path)):
        raise ConfigurationError(
            f"job_db must be a path or URL (.db/.sqlite, .csv, .parquet, sqlite://, postgresql://), "
            f"an eoextract JobDatabase or an openeo JobDatabaseInterface (CsvJobDatabase, "
            f"ParquetJobDatabase, ...), not {type(job_db).__name__}")
    if df is not None:
        return create_job_db(job_db, df, on_exists="append")
    return get_job_db(job_db)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
