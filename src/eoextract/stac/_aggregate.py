"""Running aggregates of a stream of STAC items: extent, summaries and ``item_assets``.

Each accumulator sees one item dict at a time and keeps only what the collection needs,
so a catalogue of any size is described with bounded memory.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from eoextract._util.utc import format_utc, parse_utc

logger = logging.getLogger(__name__)

#: Properties summarised as the set of their values (lists are flattened).
DEFAULT_SET_FIELDS: tuple[str, ...] = (
    "proj:code",
    "platform",
    "constellation",
    "instruments",
    "mission",
    "processing:level",
    "sat:orbit_state",
)
#: Numeric properties summarised as a ``{"minimum", "maximum"}`` range.
DEFAULT_RANGE_FIELDS: tuple[str, ...] = ("gsd", "eo:cloud_cover", "view:off_nadir")
#: Fields of an asset copied into the collection's ``item_assets``.
ITEM_ASSET_FIELDS: tuple[str, ...] = ("title", "description", "type", "roles")
#: Above this many distinct values a set summary (or item_assets) is dropped.
MAX_DISTINCT = 1000

_WORLD = [-180.0, -90.0, 180.0, 90.0]


def _coords(geometry: Any) -> Iterable[tuple[float, float]]:
    """Yield the (x, y) positions of a GeoJSON geometry."""
    if not isinstance(geometry, Mapping):
        return
    if geometry.get("type") == "GeometryCollection":
        for g in geometry.get("geometries") or []:
            yield from _coords(g)
        return
    stack = [geometry.get("coordinates")]
    while stack:
        c = stack.pop()
        if not isinstance(c, (list, tuple)) or not c:
            continue
        if isinstance(c[0], (int, float)):
            if len(c) >= 2:
                yield float(c[0]), float(c[1])
        else:
            stack.extend(c)


def item_bbox(d: Mapping[str, Any]) -> list[float] | None:
    """The 2D bbox of an item dict (from ``bbox``, else from its geometry)."""
    bbox = d.get("bbox")
    if isinstance(bbox, (list, tuple)) and len(bbox) in (4, 6):
        if len(bbox) == 6:
            return [float(bbox[0]), float(bbox[1]), float(bbox[3]), float(bbox[4])]
        return [float(v) for v in bbox]
    xs, ys = [], []
    for x, y in _coords(d.get("geometry")):
        xs.append(x)
        ys.append(y)
    if not xs:
        return None
    return [min(xs), min(ys), max(xs), max(ys)]


class ExtentAccumulator:
    """Union of item bboxes and time ranges."""

    def __init__(self) -> None:
        self.bbox: list[float] | None = None
        self.start: datetime | None = None
        self.end: datetime | None = None

    def add(self, d: Mapping[str, Any]) -> None:
        """Fold one item dict into the extent."""
        bbox = item_bbox(d)
        if bbox is not None and all(math.isfinite(v) for v in bbox):
            if bbox[0] > bbox[2]:  # crosses the antimeridian: take the full longitude range
                bbox = [-180.0, bbox[1], 180.0, bbox[3]]
            if self.bbox is None:
                self.bbox = list(bbox)
            else:
                b = self.bbox
                b[0], b[1] = min(b[0], bbox[0]), min(b[1], bbox[1])
                b[2], b[3] = max(b[2], bbox[2]), max(b[3], bbox[3])
        props = d.get("properties") or {}
        times = [
            t
            for t in (
                parse_utc(props.get("datetime")),
                parse_utc(props.get("start_datetime")),
                parse_utc(props.get("end_datetime")),
            )
            if t is not None
        ]
        if times:
            lo, hi = min(times), max(times)
            self.start = lo if self.start is None else min(self.start, lo)
            self.end = hi if self.end is None else max(self.end, hi)

    def to_dict(self) -> dict[str, Any]:
        """The collection ``extent`` (whole world / open interval when nothing was seen)."""
        return {
            "spatial": {"bbox": [list(self.bbox) if self.bbox is not None else list(_WORLD)]},
            "temporal": {"interval": [[format_utc(self.start), format_utc(self.end)]]},
        }


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


class SummaryAccumulator:
    """Collection ``summaries``: value sets, numeric ranges and band lists."""

    def __init__(
        self,
        set_fields: Iterable[str] = DEFAULT_SET_FIELDS,
        range_fields: Iterable[str] = DEFAULT_RANGE_FIELDS,
    ) -> None:
        self.set_fields = tuple(set_fields)
        self.range_fields = tuple(range_fields)
        self._sets: dict[str, set[Any]] = {}
        self._dropped: set[str] = set()
        self._ranges: dict[str, list[float]] = {}
        self._bands: dict[str, dict[str, dict[str, Any]]] = {"eo:bands": {}, "bands": {}}

    def _add_value(self, field: str, value: Any) -> None:
        if field in self._dropped or value is None:
            return
        values = value if isinstance(value, list) else [value]
        bucket = self._sets.setdefault(field, set())
        for v in values:
            if isinstance(v, (str, int, float, bool)):
                bucket.add(v)
        if len(bucket) > MAX_DISTINCT:
            logger.info("summary of %s dropped: more than %d distinct values", field, MAX_DISTINCT)
            self._dropped.add(field)
            del self._sets[field]

    def _add_bands(self, field: str, bands: Any) -> None:
        if not isinstance(bands, list):
            return
        known = self._bands[field]
        for band in bands:
            if not isinstance(band, Mapping) or not isinstance(band.get("name"), str):
                continue
            if band["name"] not in known and len(known) < MAX_DISTINCT:
                known[band["name"]] = {
                    k: v
                    for k, v in band.items()
                    if k
                    in (
                        "name",
                        "common_name",
                        "description",
                        "center_wavelength",
                        "full_width_half_max",
                        "eo:common_name",
                        "eo:center_wavelength",
                    )
                }

    def _scan(self, fields: Mapping[str, Any]) -> None:
        for field in self.set_fields:
            if field in fields:
                self._add_value(field, fields[field])
        for field in self.range_fields:
            value = fields.get(field)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and math.isfinite(value):
                r = self._ranges.get(field)
                if r is None:
                    self._ranges[field] = [value, value]
                else:
                    r[0], r[1] = min(r[0], value), max(r[1], value)
        for field in ("eo:bands", "bands"):
            if field in fields:
                self._add_bands(field, fields[field])

    def add(self, d: Mapping[str, Any]) -> None:
        """Fold one item dict (its properties and its assets) into the summaries."""
        props = d.get("properties")
        if isinstance(props, Mapping):
            self._scan(props)
        assets = d.get("assets")
        if isinstance(assets, Mapping):
            for asset in assets.values():
                if isinstance(asset, Mapping):
                    self._scan(asset)

    def to_dict(self, extent: ExtentAccumulator) -> dict[str, Any]:
        """The ``summaries`` object (deterministic order)."""
        out: dict[str, Any] = {}
        if extent.start is not None:
            out["datetime"] = {
                "minimum": format_utc(extent.start),
                "maximum": format_utc(extent.end),
            }
        for field in self.set_fields:
            values = self._sets.get(field)
            if values:
                out[field] = sorted(values, key=_sort_key)
        for field in self.range_fields:
            if field in self._ranges:
                lo, hi = self._ranges[field]
                out[field] = {"minimum": lo, "maximum": hi}
        for field, bands in self._bands.items():
            if bands:
                out[field] = list(bands.values())
        return out

    def prefixes(self) -> set[str]:
        """Extension prefixes (``proj``, ``eo``, ...) of the fields summarised."""
        return {k.split(":", 1)[0] for k in self._sets.keys() | self._ranges.keys() if ":" in k} | {
            k.split(":", 1)[0] for k, v in self._bands.items() if v and ":" in k
        }


class ItemAssetsAccumulator:
    """Union of asset keys with the fields every item agrees on (``item_assets``)."""

    def __init__(self) -> None:
        self._assets: dict[str, dict[str, Any]] = {}
        self._conflicts: dict[str, set[str]] = {}
        self._overflow = False

    def add(self, d: Mapping[str, Any]) -> None:
        """Fold the assets of one item dict."""
        if self._overflow:
            return
        assets = d.get("assets")
        if not isinstance(assets, Mapping):
            return
        for key, asset in assets.items():
            if not isinstance(asset, Mapping):
                continue
            known = self._assets.get(key)
            if known is None:
                if len(self._assets) >= MAX_DISTINCT:
                    logger.info("item_assets dropped: more than %d asset keys", MAX_DISTINCT)
                    self._overflow = True
                    self._assets.clear()
                    return
                self._assets[key] = {f: asset[f] for f in ITEM_ASSET_FIELDS if f in asset}
                self._conflicts[key] = set()
                continue
            conflicts = self._conflicts[key]
            for f in ITEM_ASSET_FIELDS:
                if f in conflicts:
                    continue
                if f in known and asset.get(f) != known[f]:
                    del known[f]
                    conflicts.add(f)

    def to_dict(self) -> dict[str, Any]:
        """The ``item_assets`` object; each entry has at least two fields, as STAC requires."""
        out: dict[str, Any] = {}
        for key, fields in self._assets.items():
            entry = dict(fields)
            if len(entry) < 2 and "title" not in entry:
                entry = {"title": key, **entry}
            if len(entry) < 2:
                entry["description"] = f"Asset {key!r} of the items"
            out[key] = entry
        return out
