"""The items of a catalogue as a dataset sees them: where they come from, their projection,
their tile, and a selection of them by property, time, tile or EPSG code.

A *source* is a catalogue on disk (``catalog.json``/``collection.json``, its folder, or an
extraction's output folder with the catalogue in ``stac/``), a stac-geoparquet file
(``.parquet``), or an iterable of item dicts. Asset hrefs come back absolute.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eoextract._util.utc import parse_utc, to_utc
from eoextract.errors import ConfigurationError, DatasetError

#: A catalogue on disk, a stac-geoparquet file or item dicts.
Source = str | os.PathLike[str] | Iterable[Mapping[str, Any]]

#: Item properties naming the Sentinel-2 (MGRS) tile, in the order they are looked at.
TILE_PROPERTIES = ("s2:mgrs_tile", "grid:code", "mgrs:tile", "tileId")


def iter_source_items(source: Source) -> Iterator[dict[str, Any]]:
    """Yield the item dicts of a source, asset hrefs absolute.

    Raises:
        DatasetError: Nothing readable at the path.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".parquet" and path.is_file():
            from eoextract.stac.publish import read_geoparquet_items

            yield from read_geoparquet_items(path)
            return
        from eoextract.stac import iter_catalog_items
        from eoextract.stac.publish import find_root

        try:
            root = find_root(path)
        except FileNotFoundError as exc:
            raise DatasetError(f"no catalogue at {path}: {exc}", path=str(path)) from exc
        yield from iter_catalog_items(root, absolute_hrefs=True)
        return
    for item in source:
        yield dict(item)


def _epsg_from(fields: Mapping[str, Any]) -> int | None:
    code = fields.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:") and code[5:].isdigit():
        return int(code[5:])
    epsg = fields.get("proj:epsg")
    if isinstance(epsg, int) and not isinstance(epsg, bool):
        return epsg
    return None


def item_epsg(item: Mapping[str, Any]) -> int | None:
    """The EPSG code of an item (``proj:code`` or ``proj:epsg``; else its assets' code)."""
    epsg = _epsg_from(item.get("properties") or {})
    if epsg is not None:
        return epsg
    codes = {_epsg_from(a) for a in (item.get("assets") or {}).values() if isinstance(a, Mapping)}
    codes.discard(None)
    return codes.pop() if len(codes) == 1 else None


def require_epsg(item: Mapping[str, Any]) -> int:
    """The EPSG code of an item.

    Raises:
        DatasetError: The item (named) has no projection with an EPSG code.
    """
    epsg = item_epsg(item)
    if epsg is None:
        props = item.get("properties") or {}
        what = "a proj:wkt2 but no EPSG code" if "proj:wkt2" in props else "no proj:code/proj:epsg"
        raise DatasetError(f"item {item.get('id')!r} has {what} (on the item or its assets); "
                           "it cannot be placed in a per-EPSG collection",
                           item_id=str(item.get("id")))
    return epsg


def item_tile(item: Mapping[str, Any]) -> str | None:
    """The Sentinel-2 (MGRS) tile of an item: a tile property, else computed from the
    centre of its bbox (``mgrs``)."""
    props = item.get("properties") or {}
    for name in TILE_PROPERTIES:
        value = props.get(name)
        if isinstance(value, str) and value:
            return value.removeprefix("MGRS-")
    if all(k in props for k in ("mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square")):
        return f"{props['mgrs:utm_zone']}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}"
    bbox = item.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) < 4:
        return None
    import mgrs

    lon, lat = (bbox[0] + bbox[-2]) / 2, (bbox[1] + bbox[-1]) / 2
    return str(mgrs.MGRS().toMGRS(lat, lon, MGRSPrecision=0))


def item_time_range(item: Mapping[str, Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``(start, end)`` of an item (both its ``datetime`` for a single time)."""
    props = item.get("properties") or {}
    when = parse_utc(props.get("datetime"))
    start = parse_utc(props.get("start_datetime")) or when
    end = parse_utc(props.get("end_datetime")) or when
    return start, end


@dataclass(frozen=True)
class Selection:
    """Which items to take.

    Attributes:
        properties: Property name -> a value or a list of accepted values.
        start: Items ending before this time are left out.
        end: Items starting after this time are left out.
        tiles: Sentinel-2 tiles to keep.
        epsg: EPSG codes to keep.
        collections: Collection ids to keep.
    """

    properties: Mapping[str, Any] = field(default_factory=dict)
    start: Any = None
    end: Any = None
    tiles: Sequence[str] | None = None
    epsg: Sequence[int] | None = None
    collections: Sequence[str] | None = None

    def __post_init__(self) -> None:
        bounds = {}
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                bounds[name] = to_utc(value)
                if bounds[name] is None:
                    raise ConfigurationError(f"{name} is not a date or time: {value!r}")
        if len(bounds) == 2 and bounds["start"] > bounds["end"]:
            raise ConfigurationError(f"start ({self.start}) is after end ({self.end})")

    def matches(self, item: Mapping[str, Any]) -> bool:
        """Whether an item is selected."""
        props = item.get("properties") or {}
        for name, wanted in self.properties.items():
            value = props.get(name, item.get(name))
            accepted = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
            if value not in accepted:
                return False
        if self.collections is not None and item.get("collection") not in self.collections:
            return False
        if self.start is not None or self.end is not None:
            lo, hi = item_time_range(item)
            if self.start is not None and (hi is None or hi < to_utc(self.start)):
                return False
            if self.end is not None and (lo is None or lo > to_utc(self.end)):
                return False
        if self.epsg is not None and item_epsg(item) not in {int(e) for e in self.epsg}:
            return False
        if self.tiles is not None and item_tile(item) not in set(self.tiles):
            return False
        return True


def select_items(source: Source, selection: Selection | None = None, **criteria: Any
                 ) -> Iterator[dict[str, Any]]:
    """Yield the items of ``source`` that a :class:`Selection` (or its fields given as
    keyword arguments: ``properties``, ``start``, ``end``, ``tiles``, ``epsg``,
    ``collections``) accepts."""
    chosen = selection or Selection(**criteria)
    for item in iter_source_items(source):
        if chosen.matches(item):
            yield item
