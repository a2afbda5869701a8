"""Job databases: SQL (SQLite default, PostgreSQL) and openeo-compatible CSV / Parquet files.

:func:`get_job_db` and :func:`create_job_db` (openeo's names) pick the implementation from
the file extension or URL scheme:

=======================================================  ====================================
``.db``, ``.sqlite``, ``.sqlite3``, ``sqlite:///...``    :class:`SqlJobDatabase` (SQLite)
``postgresql://...``, ``postgresql+psycopg://...``       :class:`SqlJobDatabase` (psycopg 3)
``.csv``, ``.parquet``, ``.geoparquet``                  :class:`FileJobDatabase`
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


def get_job_db(path_or_url: str | Path | JobDatabase) -> JobDatabase:
    """The job database at a path or URL, its type guessed from the extension or scheme.

    Nothing is created: a database that does not exist yet reports ``exists() == False``.

    Args:
        path_or_url: a file path (``jobs.db``, ``jobs.csv``, ``jobs.parquet``) or a database
            URL (``sqlite:///jobs.db``, ``postgresql://...``); a :class:`JobDatabase` is
            returned as is.

    Raises:
        ConfigurationError: the type cannot be guessed.
        JobDatabaseError: the database cannot be used (folder missing, another tool's file,
            newer schema).
    """
    if isinstance(path_or_url, JobDatabase):
        return path_or_url
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
    path_or_url: str | Path | JobDatabase,
    df: pd.DataFrame,
    *,
    on_exists: OnExists = "error",
    key_column: str | None = None,
) -> JobDatabase:
    """Create a job database at a path or URL from a job dataframe.

    Args:
        path_or_url: see :func:`get_job_db`.
        df: the jobs, one per row; the index (or ``key_column``) gives each job's key.
        on_exists: ``"error"`` (default) raises when the database exists, ``"skip"`` uses
            it as it is, ``"append"`` adds the rows whose key it does not hold yet.
        key_column: column holding stable job keys (default: the dataframe index).

    Returns:
        The initialised database.

    Raises:
        ConfigurationError: bad job dataframe; checked before anything is written.
        JobDatabaseError: the database exists (``on_exists="error"``) or cannot be used.
    """
    db = get_job_db(path_or_url)
    return db.initialize_from_df(df, on_exists=on_exists, key_column=key_column)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
