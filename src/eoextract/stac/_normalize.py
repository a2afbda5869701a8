"""Items as a catalogue holds them: an editable dict, its own structural links, relative hrefs.

:func:`item_dict` turns a :class:`pystac.Item` or an item dict into a dict the builder may
change; :class:`ItemRelinker` replaces the item's structural links with those of its place
in the catalogue and makes local hrefs inside the catalogue's base folder relative to the
item file, so the catalogue can be moved or uploaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from eoextract._util.hrefs import is_url, local_path
from eoextract.errors import StacError

logger = logging.getLogger(__name__)

_JSON = "application/json"
#: Link relations a catalogue writes itself (those an item brings along are dropped).
STRUCTURAL_RELS = frozenset({"self", "root", "parent", "collection", "child", "item"})


def relative_href(target: str, start: str) -> str:
    """``target`` relative to the folder ``start``, with ``/`` separators."""
    return os.path.relpath(target, start).replace(os.sep, "/")


def _relative_normalized(target: str, start: str) -> str:
    """:func:`relative_href` for normalised absolute POSIX paths, without system calls."""
    if os.sep != "/" or target == start:
        return relative_href(target, start)
    up = 0
    folder = start
    while folder != "/" and target != folder and not target.startswith(folder + "/"):
        folder = folder.rpartition("/")[0] or "/"
        up += 1
    rest = target[len(folder):].lstrip("/")
    if not rest:
        return "/".join([".."] * up)
    return "../" * up + rest


def item_dict(item: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A shallow, editable dict of an item; pystac assets get absolute hrefs when known.

    Raises:
        StacError: For something that is not an item.
    """
    if isinstance(item, Mapping):
        if item.get("type") not in ("Feature", None):
            raise StacError(f"not a STAC item: type {item.get('type')!r}")
        return dict(item)
    if hasattr(item, "to_dict") and hasattr(item, "assets"):
        d = item.to_dict(include_self_link=True, transform_hrefs=False)
        assets = d.get("assets") or {}
        for key, asset in item.assets.items():
            href = asset.get_absolute_href()
            if href is not None and key in assets:
                assets[key] = {**assets[key], "href": href}
        return d
    raise StacError(f"not a STAC item: {type(item).__name__}")


def _absolute_local_path(href: Any) -> str | None:
    """The absolute local path an href names (a path or a ``file:`` URL), or None."""
    if not isinstance(href, str):
        return None
    path = local_path(href)
    return path if path is not None and os.path.isabs(path) else None


class ItemRelinker:
    """Places items in a catalogue whose files lie under ``base``.

    Args:
        base: Folder local hrefs are made relative within (the catalogue folder's parent);
            an href outside it keeps its absolute path (with one warning).
        collection_id: Id written into each item's ``collection`` field.
    """

    def __init__(self, base: str, collection_id: str) -> None:
        self.base = base
        self.collection_id = collection_id
        self._warned_outside = False

    def relink(self, d: dict[str, Any], final_dir: str) -> dict[str, Any]:
        """Give ``d`` the links of an item file in ``final_dir`` and relative local hrefs."""
        self_href = None
        kept: list[Any] = []
        for link in d.get("links") or []:
            if not isinstance(link, Mapping):
                continue
            rel = link.get("rel")
            if rel == "self":
                self_href = _absolute_local_path(link.get("href"))
            if rel in STRUCTURAL_RELS:
                continue
            href = link.get("href")
            if isinstance(href, str):
                new = self.relative(href, final_dir, None)
                if new != href:
                    link = {**link, "href": new}
            kept.append(link)
        kept[:0] = [
            {"rel": "root", "href": "../collection.json", "type": _JSON},
            {"rel": "parent", "href": "./catalog.json", "type": _JSON},
            {"rel": "collection", "href": "../collection.json", "type": _JSON},
        ]
        d["links"] = kept
        assets = d.get("assets")
        if isinstance(assets, Mapping):
            new_assets = {}
            for key, asset in assets.items():
                if isinstance(asset, Mapping) and isinstance(asset.get("href"), str):
                    href = self.relative(asset["href"], final_dir, self_href)
                    if href != asset["href"]:
                        asset = {**asset, "href": href}
                new_assets[key] = asset
            d["assets"] = new_assets
        d["collection"] = self.collection_id
        return d

    def relative(self, href: str, final_dir: str, self_href: str | None) -> str:
        """``href`` relative to ``final_dir`` when it names a file under the base folder.

        A relative href is taken against the folder of ``self_href`` (the item's former
        absolute location) when there is one; URLs are left alone.
        """
        path = _absolute_local_path(href)
        if path is None:
            if self_href is None or is_url(href):
                return href
            path = os.path.normpath(os.path.join(os.path.dirname(self_href), href))
        if not os.path.isabs(path):
            return href
        path = os.path.normpath(path)
        if path == self.base or path.startswith(self.base.rstrip(os.sep) + os.sep):
            return _relative_normalized(path, os.path.normpath(final_dir))
        if not self._warned_outside:
            self._warned_outside = True
            logger.warning(
                "asset %s lies outside %s; its absolute href is kept, so the catalogue "
                "cannot be moved without it",
                path,
                self.base,
            )
        return path
