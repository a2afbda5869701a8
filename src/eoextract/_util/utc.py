"""Aware UTC datetimes from whatever names a time (ISO strings, datetimes, numpy, pandas, cftime),
and durations as people read them."""

from __future__ import annotations

import datetime as dt
from typing import Any

UTC = dt.UTC


def utc_now() -> dt.datetime:
    """Now, as an aware UTC datetime."""
    return dt.datetime.now(UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """An aware UTC datetime; naive values are taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_utc(value: Any) -> dt.datetime | None:
    """An aware UTC datetime from an RFC 3339 / ISO 8601 string (``Z`` or ``z`` allowed) or a
    datetime; None when absent or not a time. Naive times are taken to be UTC."""
    if isinstance(value, dt.datetime):
        return as_utc(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        return as_utc(dt.datetime.fromisoformat(text))
    except ValueError:
        return None


#: Years strictly between these fit a pandas timestamp (1677-09-21 to 2262-04-11).
_PANDAS_YEARS = (1677, 2262)


def to_utc(value: Any) -> dt.datetime | None:
    """An aware UTC datetime from a datetime64, Timestamp, date, cftime date or ISO string;
    None for NaT, missing values, numbers (an undecoded time axis) and what is not a time."""
    if type(value) is dt.datetime and _PANDAS_YEARS[0] < value.year < _PANDAS_YEARS[1]:
        return as_utc(value)  # what the pandas way below gives, without its cost
    import numpy as np
    import pandas as pd

    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.number)) and not isinstance(value, np.datetime64):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        try:
            stamp = pd.Timestamp(value.isoformat())
        except (AttributeError, TypeError, ValueError):
            return None
    if stamp is pd.NaT or pd.isna(stamp):
        return None
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime(warn=False)


def format_utc(value: dt.datetime | None, *, timespec: str = "auto") -> str | None:
    """RFC 3339 text with a ``Z`` (naive values taken as UTC); None for None.

    ``timespec`` is that of :meth:`datetime.datetime.isoformat` (``"seconds"``,
    ``"milliseconds"``, ...).
    """
    value = as_utc(value)
    if value is None:
        return None
    return value.isoformat(timespec=timespec).replace("+00:00", "Z")


def format_duration(seconds: float | None) -> str:
    """``2d 03h``, ``3h 05m``, ``4m 10s``, ``12s``; ``-`` for None, NaN or infinity."""
    if seconds is None or seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "-"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"
