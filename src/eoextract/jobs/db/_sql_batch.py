"""Many rows of one statement, handed to the database driver's ``executemany`` directly.

For each row of an ``executemany``, SQLAlchemy builds the parameters generically (a
dictionary per row, then each value through the column type's bind processor), which on
SQLite costs more than the database's own work on short rows: about 12 µs per row, a fifth of
the run loop's time when it applies a poll's status changes. :class:`BatchStatement`
compiles a statement once per dialect, keeps the bind processors of its parameters (the
same bind processors of the dialect's types SQLAlchemy calls, so values are stored exactly as
SQLAlchemy stores them) and passes plain tuples (or dictionaries, for drivers with named
parameters) to :meth:`~sqlalchemy.engine.Connection.exec_driver_sql`, which runs in the
caller's transaction with its events.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect


@dataclass(frozen=True)
class BatchStatement:
    """A statement compiled for one dialect: its SQL, its parameter names in order and their
    bind processors (``None``: the value goes to the driver as it is)."""

    sql: str
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    positional: bool

    @staticmethod
    @functools.lru_cache(maxsize=128)
    def of(stmt: sa.Executable, dialect: Dialect, column_keys: tuple[str, ...] | None = None) -> BatchStatement:
        """``stmt`` compiled for ``dialect`` (``column_keys``: the columns an INSERT sets)."""
        compiled = stmt.compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None)
        if compiled.positional:
            names = tuple(compiled.positiontup or ())
        else:
            names = tuple(compiled.binds)
        processors = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
        return BatchStatement(compiled.string, names, processors, compiled.positional)

    def execute_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per row (each row maps every parameter name to its value)."""
        if not rows:
            return
        pairs = tuple(zip(self.names, self.processors))
        if self.positional:
            params: list[Any] = [tuple(row[name] if process is None else process(row[name])
                                       for name, process in pairs) for row in rows]
        else:
            params = [{name: row[name] if process is None else process(row[name]) for name, process in pairs}
                      for row in rows]
        conn.exec_driver_sql(self.sql, params)
