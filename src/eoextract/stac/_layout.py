"""How a catalogue groups its items into sub-catalogues, and safe file names."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from eoextract.errors import ConfigurationError

#: A layout: a name (see :func:`layout_key`) or a function ``item dict -> group key``.
Layout = str | Callable[[Mapping[str, Any]], str] | None

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def layout_key(layout: Layout) -> Callable[[Mapping[str, Any]], str]:
    """Turn a layout description into a function ``item dict -> group key``.

    Args:
        layout: ``"month"`` (``YYYY-MM`` of ``datetime`` or ``start_datetime``),
            ``"year"``, ``"flat"``/``None`` (one group), ``"property:NAME"`` (value of a
            property, or of a top-level key such as ``id``), ``"property:NAME:SEP"``
            (first part of that value split on ``SEP``), or a callable.

    Returns:
        The key function.

    Raises:
        ConfigurationError: For an unknown layout string.
    """
    if callable(layout):
        return lambda d: str(layout(d))
    if layout is None or layout == "flat":
        return lambda d: "items"
    if layout in ("month", "year"):
        width = 7 if layout == "month" else 4

        def by_time(d: Mapping[str, Any]) -> str:
            props = d.get("properties") or {}
            value = props.get("datetime") or props.get("start_datetime")
            return value[:width] if isinstance(value, str) and len(value) >= width else "undated"

        return by_time
    if isinstance(layout, str) and layout.startswith("property:"):
        name, _, sep = layout[len("property:") :].partition(":")
        if not name:
            raise ConfigurationError(f"layout {layout!r} names no property")

        def by_property(d: Mapping[str, Any]) -> str:
            props = d.get("properties") or {}
            value = props.get(name, d.get(name))
            if value is None:
                return "unknown"
            text = str(value)
            return text.split(sep, 1)[0] if sep else text

        return by_property
    raise ConfigurationError(
        f"unknown layout {layout!r}: use 'month', 'year', 'flat', 'property:NAME[:SEP]' "
        "or a callable"
    )


def safe_name(text: str, *, max_len: int = 120) -> str:
    """A file-system safe name for ``text`` (stable; hashed when it had to be changed)."""
    name = _UNSAFE.sub("_", text).strip(".") or "_"
    if name != text or len(name) > max_len:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        name = f"{name[:max_len]}-{digest}"
    return name
