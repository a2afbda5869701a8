"""Requests as every job database stores them: statuses parsed, managed fields coerced to
their column's type, free text (messages, tracebacks) redacted.

:meth:`~eoextract.jobs.db.JobDatabase.transition_many` checks every change of a poll here
before the database sees it, so the common values take short paths: a status that is
already a :class:`~eoextract.jobs.status.JobStatus`, a missing value, text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eoextract._util.redact import redact
from eoextract.jobs.db._frame import MANAGED_KINDS, coerce_managed
from eoextract.jobs.db._records import UPDATABLE_FIELDS, Transition
from eoextract.jobs.status import JobStatus

#: Fields holding free text, redacted as they are written (as history messages are).
FREE_TEXT: frozenset[str] = frozenset(
    name for name in UPDATABLE_FIELDS if name.endswith("message") or "traceback" in name)


def redacted(text: Any) -> Any:
    """Text with its credentials masked; anything else as it is."""
    return redact(text) if isinstance(text, str) else text


def status(value: JobStatus | str) -> JobStatus:
    """``value`` as a :class:`JobStatus`."""
    return value if type(value) is JobStatus else JobStatus(value)


def coerce_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Managed ``fields`` as stored (see :func:`~eoextract.jobs.db._frame.coerce_managed`),
    free text redacted.

    Raises:
        ValueError: a name not in :data:`UPDATABLE_FIELDS`, or a value that does not fit.
    """
    unknown = fields.keys() - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"cannot set {sorted(unknown)!r}; settable fields: "
                         f"{sorted(UPDATABLE_FIELDS)!r}")
    values = {}
    for name, value in fields.items():
        if value is None:
            values[name] = 0 if name == "attempt" else None
        elif type(value) is str and MANAGED_KINDS[name] == "str":
            values[name] = (redact(value) if name in FREE_TEXT else value) if value.strip() else None
        else:
            value = coerce_managed(name, value)
            values[name] = redacted(value) if name in FREE_TEXT else value
    return values


def checked(change: Transition) -> Transition:
    """``change`` as the databases apply it: statuses parsed, fields coerced, message
    redacted.

    Raises:
        ValueError: a field that cannot be set or a value that does not fit.
    """
    return Transition(change.job_key, status(change.new),
                      redacted(change.message),
                      None if change.expect is None else status(change.expect),
                      coerce_fields(change.fields))
