"""The ``usage`` a backend reports for a job, as columns.

The job database keeps every usage key as JSON in the ``usage`` column, and ``cpu``,
``memory`` and ``duration`` also as text columns of their own. Files are written the way
openeo 0.53 writes them: one column per usage key, holding ``"<value> <unit>"``.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Usage keys that are managed columns of their own.
USAGE_COLUMNS = ("cpu", "memory", "duration")


def usage_text(entry: Any) -> str | None:
    """``"<value> <unit>"`` of one usage entry (``{"value": 12, "unit": "cpu-seconds"}``)."""
    if isinstance(entry, Mapping):
        return f"{entry.get('value', 0)} {entry.get('unit', '')}".strip()
    return None if entry is None else str(entry)


def usage_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    """The ``usage`` (JSON), ``cpu``/``memory``/``duration`` and ``costs`` fields of a job's
    metadata (a listing item or a job description)."""
    fields: dict[str, Any] = {}
    usage = item.get("usage")
    if isinstance(usage, Mapping) and usage:
        fields["usage"] = json.dumps(usage, default=str)
        for key in USAGE_COLUMNS:
            if isinstance(usage.get(key), Mapping):
                fields[key] = usage_text(usage[key])
    if item.get("costs") is not None:
        fields["costs"] = item["costs"]
    return fields


def usage_key_columns(usage: pd.Series, taken: Container[str]) -> dict[str, list[str | None]]:
    """One column per usage key found in a ``usage`` JSON column (``"<value> <unit>"``, in
    the order the keys first appear), leaving out :data:`USAGE_COLUMNS` and the names in
    ``taken`` (openeo skips keys that collide with its own columns the same way)."""
    parsed: list[Mapping[str, Any]] = []
    keys: dict[str, None] = {}
    for value in usage:
        entry = _loads(value)
        parsed.append(entry)
        keys.update(dict.fromkeys(k for k in entry if k not in USAGE_COLUMNS and k not in taken))
    return {k: [usage_text(entry.get(k)) for entry in parsed] for k in keys}


def _loads(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, str) or not value:
        return {}
    try:
        loaded = json.loads(value)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, Mapping) else {}
