"""STAC items of an extraction's output folder, for the report's map.

:func:`iter_output_items` reads the items stored per job (the extraction's item store) or,
when there are none, the catalogue's (``collection.json``/``catalog.json`` in
``<output_dir>/stac`` or ``<output_dir>``); :func:`footprints` turns items into a
GeoDataFrame.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from eoextract.extract import ItemStore

logger = logging.getLogger(__name__)


def find_catalogue(output_dir: str | os.PathLike[str]) -> Path | None:
    """The root file of the catalogue in ``output_dir`` (``stac/`` or the folder itself)."""
    base = Path(output_dir)
    for folder in (base / "stac", base):
        for name in ("collection.json", "catalog.json"):
            if (folder / name).is_file():
                return folder / name
    return None


def iter_output_items(output_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Item dicts of an output folder: its per-job item files, else its catalogue's items.

    Yields nothing when the folder holds neither.
    """
    store = ItemStore(output_dir)
    if store:
        yield from store.iter_items(skip_unreadable=True)
        return
    root = find_catalogue(output_dir)
    if root is not None:
        from eoextract.stac import iter_catalog_items

        yield from iter_catalog_items(root)


def footprints(items: Iterable[Mapping[str, Any]]) -> Any:
    """A GeoDataFrame (EPSG:4326) of item footprints: ``id``, ``datetime``, ``geometry``.

    Items without geometry are left out; an item with only a ``bbox`` gets its box.
    """
    import geopandas as gpd
    from shapely.geometry import box, shape

    rows: list[dict[str, Any]] = []
    for item in items:
        geom = None
        if item.get("geometry"):
            try:
                geom = shape(item["geometry"])
            except (ValueError, TypeError, AttributeError):
                geom = None
        if geom is None and item.get("bbox") and len(item["bbox"]) >= 4:
            b = item["bbox"]
            geom = box(b[0], b[1], b[-2 if len(b) == 6 else 2], b[-1])
        if geom is None:
            continue
        props = item.get("properties") or {}
        rows.append({"id": item.get("id"), "datetime": props.get("datetime") or props.get("start_datetime"),
                     "geometry": geom})
    return gpd.GeoDataFrame(rows, columns=["id", "datetime", "geometry"], geometry="geometry", crs="EPSG:4326")
