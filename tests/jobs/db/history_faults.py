"""Fault injection for job-database tests: status history that cannot be written.

A plain module (not a ``conftest``), so test modules that spawned processes import again
can use it too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def failing_history_writes(db) -> Iterator[None]:
    """Within the block, every insert of status history into ``db`` raises RuntimeError."""
    from sqlalchemy import event

    def fail_on_history(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO job_status_changes"):
            raise RuntimeError("disk gone")

    event.listen(db.engine, "before_cursor_execute", fail_on_history)
    try:
        yield
    finally:
        event.remove(db.engine, "before_cursor_execute", fail_on_history)
