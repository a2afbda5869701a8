"""Portable column types for the job database (SQLite and PostgreSQL with one schema).

* :class:`UTCDateTime` stores aware datetimes: ``timestamptz`` on PostgreSQL, naive UTC on
  SQLite (which has no time zones), and always hands back aware UTC datetimes.
* :data:`JSONType` is ``JSONB`` on PostgreSQL and SQLAlchemy's JSON (text) elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from eoextract._util.utc import UTC, as_utc


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

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """:meth:`process_bind_param`, then the dialect's own processing; on SQLite an aware
        UTC datetime (what the job database writes all the time) goes straight to the text
        SQLAlchemy stores (``YYYY-MM-DD HH:MM:SS.ffffff``), without the two steps."""
        general = super().bind_processor(dialect)
        if dialect.name != "sqlite" or general is None:
            return general

        def process(value: Any) -> Any:
            if type(value) is datetime and value.tzinfo is UTC:
                return value.replace(tzinfo=None).isoformat(" ", "microseconds")
            return general(value)

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


#: JSON column: ``JSONB`` on PostgreSQL, JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
