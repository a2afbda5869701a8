"""STAC items of an extraction's output folder: per-job item files or the catalogue.

An extraction keeps the items of every finished job as JSON under
``<output_dir>/.eoextract/items/`` (one file per job), so a catalogue can be rebuilt at any time; once built, the catalogue
(``collection.json``/``catalog.json`` in ``<output_dir>/stac`` or ``<output_dir>``) holds
them too. :func:`iter_output_items` reads whichever is there, :func:`footprints` turns
items into a GeoDataFrame for maps, :func:`build_catalogue_from_item_files` writes a
catalogue from the item files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from eoextract.extract.catalogue import ITEMS_DIR, items_dir

__all__ = [
    "ITEMS_DIR",
    "item_files",
    "find_catalogue",
    "iter_output_items",
    "footprints",
    "build_catalogue_from_item_files",
]

logger = logging.getLogger(__name__)


def item_files(output_dir: str | os.PathLike[str]) -> list[Path]:
    """The per-job item JSON files under ``output_dir`` (sorted)."""
    folder = items_dir(output_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.json") if not p.name.startswith("."))


def _absolute(item: dict[str, Any], base: Path) -> dict[str, Any]:
    """``item`` with relative local asset hrefs made absolute against ``base``."""
    from urllib.parse import urlsplit

    assets = {}
    for key, asset in (item.get("assets") or {}).items():
        href = asset.get("href") if isinstance(asset, Mapping) else None
        if isinstance(href, str) and not urlsplit(href).scheme and not os.path.isabs(href):
            asset = {**asset, "href": os.path.normpath(os.path.join(base, href))}
        assets[key] = asset
    return {**item, "assets": assets}


def _items_in(path: Path, root: Path) -> Iterator[dict[str, Any]]:
    """Items of one JSON file.

    Accepted forms: the extraction manager's per-job document ``{"job_key": ..., "items":
    [...]}`` (asset hrefs relative to the output folder ``root``), or an item, a list of
    items or a FeatureCollection (asset hrefs relative to the file).
    """
    data = orjson.loads(path.read_bytes())
    base = path.parent
    if isinstance(data, Mapping) and isinstance(data.get("items"), list):
        data, base = data["items"], root
    elif isinstance(data, Mapping) and data.get("type") == "FeatureCollection":
        data = data.get("features") or []
    if isinstance(data, Mapping):
        data = [data]
    for item in data:
        if not isinstance(item, Mapping) or item.get("type") != "Feature":
            logger.warning("%s: skipping a non-item entry", path)
            continue
        yield _absolute(dict(item), base.resolve())


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
    files = item_files(output_dir)
    if files:
        for path in files:
            try:
                yield from _items_in(path, Path(output_dir))
            except (OSError, orjson.JSONDecodeError) as exc:
                logger.warning("cannot read items from %s: %s", path, exc)
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


def build_catalogue_from_item_files(
    output_dir: str | os.PathLike[str],
    *,
    catalogue_dir: str | os.PathLike[str] | None = None,
    collection_id: str,
    description: str,
    **kwargs: Any,
) -> tuple[Path, int]:
    """Write a STAC collection of the per-job item files of ``output_dir``.

    Args:
        output_dir: The extraction's output folder.
        catalogue_dir: Where the catalogue goes (default ``<output_dir>/stac``); asset
            hrefs under its parent folder become relative.
        collection_id: Id of the collection.
        description: Its description.
        **kwargs: Passed to :func:`eoextract.stac.build_collection` (title, license,
            layout, ...).

    Returns:
        The ``collection.json`` written and the number of items.

    Raises:
        StacError: No item files, duplicate item ids, or a file that is no item.
    """
    from eoextract.errors import StacError
    from eoextract.stac import build_collection

    files = item_files(output_dir)
    if not files:
        raise StacError(f"no item files under {items_dir(output_dir)}")
    count = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal count
        for path in files:
            for item in _items_in(path, Path(output_dir)):
                count += 1
                yield item

    target = Path(catalogue_dir) if catalogue_dir is not None else Path(output_dir) / "stac"
    root = build_collection(counted(), target, collection_id=collection_id,
                            description=description, **kwargs)
    return root, count
