"""A catalogue on disk as the publication targets read it.

:func:`walk_catalog` yields its documents as files (children before their parents, for
uploads); :func:`api_documents` gives the collection and its items as a STAC API or a
database holds them (no local links, absolute asset hrefs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import orjson

from eoextract._util.hrefs import is_url, resolve_local
from eoextract._util.redact import redact_data
from eoextract.errors import StacError
from eoextract.stac._idset import CompactStringSet
from eoextract.stac.publish._publish_result import PublishError


@dataclass(frozen=True)
class CatalogEntry:
    """One JSON document of a catalogue on disk.

    Attributes:
        path: Absolute path of the file.
        kind: ``"item"``, ``"catalog"`` or ``"collection"``.
        data: The parsed document.
        is_root: Whether it is the catalogue's root document.
        raw: The file's bytes as read.
    """

    path: Path
    kind: Literal["item", "catalog", "collection"]
    data: dict[str, Any] = field(repr=False)
    is_root: bool = False
    raw: bytes = field(default=b"", repr=False)


def find_root(path: str | os.PathLike[str]) -> Path:
    """The root document of a catalogue: ``path`` itself or the root JSON in that folder.

    A folder may hold ``collection.json`` or ``catalog.json``, or be an extraction's output
    folder with the catalogue in ``stac/``.

    Raises:
        FileNotFoundError: No catalogue there.
    """
    p = Path(path)
    if p.is_file():
        return Path(os.path.abspath(p))
    for folder in (p, p / "stac"):
        for name in ("collection.json", "catalog.json"):
            if (folder / name).is_file():
                return Path(os.path.abspath(folder / name))
    raise FileNotFoundError(f"no collection.json or catalog.json in {p} (or {p / 'stac'})")


def walk_catalog(path: str | os.PathLike[str]) -> Iterator[CatalogEntry]:
    """Yield every document of a catalogue on disk, children before their parents.

    Follows relative ``child`` and ``item`` links from the root. Items come first in
    link order, then the catalogue that links them, so the root comes last: writing the
    documents in this order never publishes a link to a document not written yet.

    Args:
        path: The root document or the folder holding it (see :func:`find_root`).

    Yields:
        One :class:`CatalogEntry` per document.

    Raises:
        StacError: For a link to a missing or unreadable document.
    """
    root = find_root(path)
    seen: set[Path] = set()  # catalogues
    seen_items = CompactStringSet()  # a few bytes per item, for catalogues of millions

    def load(file: Path) -> tuple[dict[str, Any], bytes]:
        try:
            raw = file.read_bytes()
            data = orjson.loads(raw)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StacError(f"cannot read {file}: {exc}") from exc
        if not isinstance(data, dict):
            raise StacError(f"{file} is not a STAC document")
        return data, raw

    def visit(file: Path, loaded: tuple[dict[str, Any], bytes]) -> Iterator[CatalogEntry]:
        data, raw = loaded
        seen.add(file)
        children: list[Path] = []
        for link in data.get("links") or []:
            href, rel = link.get("href"), link.get("rel")
            if rel not in ("child", "item") or not isinstance(href, str) or is_url(href):
                continue
            target = Path(os.path.normpath(file.parent / href))
            if rel == "child":
                if target not in seen:
                    children.append(target)
                continue
            if not seen_items.add(str(target)):
                continue
            item, item_raw = load(target)
            yield CatalogEntry(target, "item", item, raw=item_raw)
        for child in children:
            if child not in seen:
                yield from visit(child, load(child))
        kind: Literal["catalog", "collection"] = (
            "collection" if data.get("type") == "Collection" else "catalog")
        yield CatalogEntry(file, kind, data, is_root=file == root, raw=raw)

    yield from visit(root, load(root))


def strip_structural_links(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a document without its local links (root, parent, child, item, ...).

    Links to URLs are kept; a STAC API or a database makes its own structural links.
    """
    out = dict(doc)
    out["links"] = [
        link for link in doc.get("links") or []
        if isinstance(link, Mapping) and isinstance(link.get("href"), str)
        and is_url(link["href"]) and link.get("rel") not in ("self", "root", "parent")
    ]
    return out


def item_asset_paths(item_file: Path, item: Mapping[str, Any]) -> dict[str, str]:
    """Local files the assets of an item point at (asset key -> normalised absolute path).

    Assets whose href is a URL (other than ``file:``) are left out.
    """
    out: dict[str, str] = {}
    for key, asset in (item.get("assets") or {}).items():
        href = asset.get("href") if isinstance(asset, Mapping) else None
        if not isinstance(href, str) or not href:
            continue
        path = resolve_local(href, item_file.parent)
        if path is not None:
            out[key] = path
    return out


@dataclass(frozen=True)
class ApiItemMaker:
    """Turns an item file of a catalogue into the item a STAC API or a database holds.

    Picklable, so worker processes can prepare items too.

    Attributes:
        collection_id: Written into each item's ``collection``.
        base: Folder local asset paths are taken relative to (with ``base_url``).
        base_url: URL those relative paths are appended to; None keeps absolute paths.
    """

    collection_id: str
    base: str
    base_url: str | None = None

    def __call__(self, path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
        """The API form of the item ``data`` read from ``path``."""
        item = strip_structural_links(data)
        item["collection"] = self.collection_id
        paths = item_asset_paths(path, data)
        if paths:
            base_prefix = self.base.rstrip(os.sep) + os.sep
            assets = dict(item.get("assets") or {})
            for name, asset_path in paths.items():
                if self.base_url is not None:
                    if not asset_path.startswith(base_prefix):
                        raise PublishError(f"asset {asset_path} lies outside {self.base}")
                    rel = asset_path[len(base_prefix):].replace(os.sep, "/")
                    href = f"{self.base_url}/{quote(rel)}"
                else:
                    href = asset_path
                assets[name] = {**assets[name], "href": href}
            item["assets"] = assets
        return redact_data(item)

    def from_file(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """:meth:`__call__` on the item file ``path``.

        Raises:
            StacError: The file cannot be read or is no JSON object.
        """
        file = Path(path)
        try:
            data = orjson.loads(file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StacError(f"cannot read {file}: {exc}") from exc
        if not isinstance(data, dict):
            raise StacError(f"{file} is not a STAC document")
        return self(file, data)


def item_files(path: str | os.PathLike[str]) -> Iterator[str]:
    """The item files of a catalogue on disk, each once, in link order, without reading them.

    Raises:
        StacError: For a catalogue document that cannot be read.
    """
    seen: set[str] = set()
    items = CompactStringSet()
    stack = [str(find_root(path))]
    while stack:
        file = stack.pop()
        if file in seen:
            continue
        seen.add(file)
        try:
            data = orjson.loads(Path(file).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StacError(f"cannot read {file}: {exc}") from exc
        folder = os.path.dirname(file)
        children: list[str] = []
        for link in data.get("links") or [] if isinstance(data, dict) else []:
            href, rel = link.get("href"), link.get("rel")
            if rel not in ("child", "item") or not isinstance(href, str) or is_url(href):
                continue
            target = os.path.normpath(os.path.join(folder, href))
            if rel == "child":
                children.append(target)
            elif items.add(target):
                yield target
        stack.extend(reversed(children))


def api_documents(
    catalog_dir: str | os.PathLike[str],
    *,
    asset_base_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The collection and (lazily) the items of a catalogue, as a database holds them.

    Local structural links are dropped and each item's ``collection`` is set. Relative
    asset hrefs mean nothing in a database, so they become absolute.

    Args:
        catalog_dir: The catalogue (root document or folder).
        asset_base_url: URL that local asset paths relative to ``base_dir`` are appended
            to; without it, asset hrefs become absolute local paths.
        base_dir: Folder the asset paths are taken relative to (default: the parent of
            the catalogue's folder, as for uploads to object storage).

    Returns:
        The collection dict and an iterator over item dicts.

    Raises:
        PublishError: If the root is not a collection.
    """
    collection, maker = api_collection(catalog_dir, asset_base_url=asset_base_url,
                                       base_dir=base_dir)
    root = find_root(catalog_dir)

    def items() -> Iterator[dict[str, Any]]:
        for entry in walk_catalog(root):
            if entry.kind == "item":
                yield maker(entry.path, entry.data)

    return collection, items()


def api_collection(
    catalog_dir: str | os.PathLike[str],
    *,
    asset_base_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], ApiItemMaker]:
    """The collection of a catalogue as a database holds it, and the maker of its items
    (see :func:`api_documents`).

    Raises:
        PublishError: If the root is not a collection.
    """
    root = find_root(catalog_dir)
    collection = orjson.loads(root.read_bytes())
    if collection.get("type") != "Collection":
        raise PublishError(f"{root} is not a STAC collection (a STAC API and pgstac hold "
                           "items in collections)")
    collection = redact_data(strip_structural_links(collection))
    base = os.path.abspath(base_dir) if base_dir is not None else str(root.parent.parent)
    base_url = asset_base_url.rstrip("/") if asset_base_url else None
    return collection, ApiItemMaker(collection["id"], base, base_url)
