"""Portable column types for the job database (SQLite and PostgreSQL with one schema).

* :class:`UTCDateTime` stores aware datetimes: ``timestamptz`` on PostgreSQL, naive UTC on
  SQLite (which has no time zones), and always hands back aware UTC datetimes.
* :data:`JSONType` is ``JSONB`` on PostgreSQL and SQLAlchemy's JSON (text) elsewhere.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from eoextract._util.utc import as_utc


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as an aware UTC :class:`~datetime.datetime`.

    Naive datetimes given as parameters are taken to be UTC. On SQLite the value is stored
    as naive UTC text, so values compare and sort correctly in SQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
        if hasattr(value, "to_pydatetime"):  # pandas.Timestamp
            value = value.to_pydatetime()
        value = as_utc(value)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


#: JSON column: ``JSONB`` on PostgreSQL, JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
