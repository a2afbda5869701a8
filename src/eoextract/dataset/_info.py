"""Counts of a catalogue as training data: items per collection, EPSG code and label, time
range and bytes, from the items alone (no data file is opened)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eoextract.dataset._selection import Selection, Source, item_epsg, item_time_range, select_items


@dataclass
class DatasetInfo:
    """What :func:`dataset_info` counted.

    Attributes:
        n_items: Items.
        per_collection: Items per collection id.
        per_epsg: Items per EPSG code (``None``: without one).
        per_label: Items per value of the label property (empty without a label).
        start: Earliest time of any item.
        end: Latest time of any item.
        n_files: Distinct asset files.
        total_bytes: Their ``file:size`` summed (files without one are counted in ``n_unsized``).
        n_unsized: Asset files without ``file:size``.
    """

    n_items: int = 0
    per_collection: Counter[str] = field(default_factory=Counter)
    per_epsg: Counter[int | None] = field(default_factory=Counter)
    per_label: Counter[Any] = field(default_factory=Counter)
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    n_files: int = 0
    total_bytes: int = 0
    n_unsized: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "n_items": self.n_items,
            "per_collection": dict(self.per_collection),
            "per_epsg": {("none" if k is None else str(k)): v for k, v in self.per_epsg.items()},
            "per_label": {str(k): v for k, v in self.per_label.items()},
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "n_files": self.n_files,
            "total_bytes": self.total_bytes,
            "n_unsized": self.n_unsized,
        }


def dataset_info(source: Source, *, label: str | None = None,
                 selection: Selection | None = None, **criteria: Any) -> DatasetInfo:
    """Count the items of a catalogue (or a selection of them, see :func:`select_items`).

    Args:
        source: A catalogue, a stac-geoparquet file or item dicts.
        label: An item property whose values are counted.
        selection: Which items; or its fields as keyword arguments.
    """
    info = DatasetInfo()
    seen: set[str] = set()
    for item in select_items(source, selection, **criteria):
        info.n_items += 1
        info.per_collection[str(item.get("collection") or "(none)")] += 1
        info.per_epsg[item_epsg(item)] += 1
        if label is not None:
            info.per_label[(item.get("properties") or {}).get(label)] += 1
        lo, hi = item_time_range(item)
        if lo is not None:
            info.start = lo if info.start is None else min(info.start, lo)
        if hi is not None:
            info.end = hi if info.end is None else max(info.end, hi)
        for asset in (item.get("assets") or {}).values():
            href = asset.get("href") if isinstance(asset, Mapping) else None
            if not isinstance(href, str) or href in seen:
                continue
            seen.add(href)
            info.n_files += 1
            size = asset.get("file:size")
            if isinstance(size, int) and not isinstance(size, bool):
                info.total_bytes += size
            else:
                info.n_unsized += 1
    return info
