"""Reading the items of a catalogue back, and extending a collection with new items."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from eoextract._util.hrefs import is_url
from eoextract.errors import StacError
from eoextract.stac._collection import MANAGED_FIELDS, CollectionBuilder, extension_prefix
from eoextract.stac._normalize import STRUCTURAL_RELS

logger = logging.getLogger(__name__)


def iter_catalog_items(
    path: str | os.PathLike[str], *, absolute_hrefs: bool = True
) -> Iterator[dict[str, Any]]:
    """Yield the item dicts of a catalogue on disk, following child and item links.

    Args:
        path: A ``collection.json``/``catalog.json`` or the folder holding it.
        absolute_hrefs: Make relative asset hrefs absolute (so the items can be written
            elsewhere) and drop the structural links.

    Yields:
        One dict per item, in link order.
    """
    root = Path(path)
    if root.is_dir():
        root = (
            root / "collection.json"
            if (root / "collection.json").is_file()
            else root / "catalog.json"
        )
    stack = [root.resolve()]
    seen: set[Path] = set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        d = _read_json(current)
        children = []
        for link in d.get("links") or []:
            href, rel = link.get("href"), link.get("rel")
            if not isinstance(href, str) or is_url(href) or rel not in ("child", "item"):
                continue
            target = (current.parent / href).resolve()
            if rel == "child":
                children.append(target)
                continue
            item = _read_json(target)
            if absolute_hrefs:
                item["links"] = [
                    lk for lk in item.get("links") or [] if lk.get("rel") not in STRUCTURAL_RELS
                ]
                for key, asset in (item.get("assets") or {}).items():
                    href_a = asset.get("href")
                    if isinstance(href_a, str) and not is_url(href_a) and not os.path.isabs(href_a):
                        item["assets"][key] = {
                            **asset,
                            "href": os.path.normpath(os.path.join(target.parent, href_a)),
                        }
            yield item
        stack.extend(reversed(children))



def _read_json(path: Path) -> dict[str, Any]:
    """One STAC JSON document.

    Raises:
        StacError: The file is not a JSON object (named).
    """
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise StacError(f"{path} is not a STAC JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise StacError(f"{path} is not a STAC JSON file (not a JSON object)")
    return data

def extend_collection(
    existing_collection_json: str | os.PathLike[str],
    items: Iterable[Mapping[str, Any] | Any],
    *,
    output_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Path:
    """Add items to an existing collection by rebuilding it with old and new items.

    New items come first; an existing item with the id of a new one is replaced. The
    existing collection's metadata (id, description, title, license, providers,
    keywords, other fields) is kept unless given in ``options``.

    Args:
        existing_collection_json: Path of the existing ``collection.json`` (or its folder).
        items: New items (pystac or dicts), consumed once.
        output_dir: Where to write; default: the existing catalogue's folder (replaced
            atomically once the new catalogue is complete).
        **options: Keyword arguments of :class:`CollectionBuilder` (``layout``,
            ``max_links_per_catalog``, ``summary_fields``, ...), also to change the
            metadata taken from the existing collection.

    Returns:
        Path of the written ``collection.json``.
    """
    path = Path(existing_collection_json)
    if path.is_dir():
        path = path / "collection.json"
    existing = orjson.loads(path.read_bytes())
    if existing.get("type") != "Collection":
        raise StacError(f"{path} is not a STAC collection")
    kwargs: dict[str, Any] = {
        "collection_id": existing["id"],
        "description": existing.get("description", ""),
        "title": existing.get("title"),
        "license": existing.get("license", "proprietary"),
        "providers": existing.get("providers"),
        "keywords": existing.get("keywords"),
        "extra_fields": {k: v for k, v in existing.items() if k not in MANAGED_FIELDS},
        "stac_extensions": [
            u
            for u in existing.get("stac_extensions") or []
            if extension_prefix(u) not in {"projection", "proj", "eo", "raster", "file"}
        ],
    }
    kwargs.update(options)
    target = Path(output_dir) if output_dir is not None else path.parent
    with CollectionBuilder(target, **kwargs) as builder:
        builder.add_items(items)
        n_new = builder.n_items
        for old in iter_catalog_items(path):
            if old.get("id") not in builder:
                builder.add(old)
    logger.info("extended %s with %d new item(s)", path, n_new)
    return builder.output_dir / "collection.json"
