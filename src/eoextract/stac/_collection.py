"""Streaming STAC collection builder.

Items are consumed in one pass: each item's JSON is written as soon as it arrives and
only the collection's extent, summaries, ``item_assets`` and the link lists of the
sub-catalogues are kept, so memory stays small for any number of items. The output is
a self-contained catalogue whose hrefs are all relative (it can be moved or uploaded)::

    stac/
      collection.json               children: one sub-catalogue per group and part
      2021-03/catalog.json          up to ``max_links_per_catalog`` links
      2021-03/<item id>.json
      2021-03-part2/catalog.json    the next items of the same group
      _index/1-0001/catalog.json    only when there are too many sub-catalogues

Items are grouped by a *layout* key (year-month of their datetime by default) and each
group is cut into numbered parts so that no JSON file holds more than
``max_links_per_catalog`` links. A part's ``catalog.json`` is written as soon as the part is
full; when the parts being filled hold more than ``OPEN_LINKS_BUDGET`` links together
(layouts with very many groups), they are all written and their groups go on in new
parts. Item ids are checked for duplicates in a :class:`CompactStringSet` (8 bytes per
id), so a build keeps a few bytes per item at most (see ``docs/catalogue-layout.md``).
The catalogue is built in a temporary folder next to
``output_dir`` and swapped in at the end: a rebuild replaces the previous catalogue
whole (no stale item file survives) and gives the same bytes for the same items.

STAC requires ``self`` links to be absolute, which would pin the catalogue to one
place; like pystac's self-contained catalogues, no ``self`` links are written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import orjson

from eoextract._util.redact import redact_data
from eoextract.errors import ConfigurationError, StacError
from eoextract.stac._aggregate import (
    ExtentAccumulator,
    ItemAssetsAccumulator,
    SummaryAccumulator,
)
from eoextract.stac._idset import CompactStringSet
from eoextract.stac._layout import Layout, layout_key, safe_name
from eoextract.stac._normalize import ItemRelinker, item_dict
from eoextract.stac._normalize import relative_href as _rel
from eoextract.stac._swap import swap_in

logger = logging.getLogger(__name__)

STAC_VERSION = "1.1.0"
DEFAULT_MAX_LINKS = 2000
_JSON = "application/json"
_GEOJSON = "application/geo+json"
_INDEX_DIR = "_index"
_DUMP_OPTS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
#: Most item links held for the parts being filled; past it they are all written.
OPEN_LINKS_BUDGET = 100_000
#: Collection keys the builder computes or takes from its arguments.
MANAGED_FIELDS = frozenset(
    {
        "type",
        "stac_version",
        "stac_extensions",
        "id",
        "title",
        "description",
        "keywords",
        "license",
        "providers",
        "extent",
        "summaries",
        "item_assets",
        "links",
    }
)
#: Extension folder name on stac-extensions.github.io -> field prefix.
_EXT_PREFIX = {"projection": "proj"}


# --------------------------------------------------------------------------- builder


@dataclass
class _SubCatalog:
    group: str
    part: int
    dirname: str
    item_names: list[str] = field(default_factory=list)  # emptied once written


class CollectionBuilder:
    """Write a STAC collection from a stream of items with bounded memory.

    Use :meth:`add` for each item, then :meth:`finish`; or use it as a context manager,
    which finishes on success and discards the partial build on error.

    Args:
        output_dir: Folder of the catalogue (``collection.json`` goes there). An existing
            catalogue in it is replaced whole when the build finishes.
        collection_id: Id of the collection.
        description: Its description.
        title: Its title.
        license: SPDX license id (or ``"proprietary"``/``"various"``).
        providers: Provider dicts or :class:`pystac.Provider` objects.
        keywords: Keywords.
        extra_fields: Further top-level fields of ``collection.json``.
        layout: How items are grouped into sub-catalogues (see :func:`layout_key`).
        max_links_per_catalog: Most links in any one JSON file (at least 4).
        stac_extensions: Extension schema URLs added to the collection's own list (for
            fields given in ``extra_fields``).
        summary_fields: Properties summarised as value sets (default: ``proj:code``,
            platform, constellation, instruments, ...).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        *,
        collection_id: str,
        description: str,
        title: str | None = None,
        license: str = "proprietary",
        providers: Sequence[Any] | None = None,
        keywords: Sequence[str] | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        layout: Layout = "month",
        max_links_per_catalog: int = DEFAULT_MAX_LINKS,
        stac_extensions: Iterable[str] = (),
        summary_fields: Iterable[str] | None = None,
    ) -> None:
        if not collection_id:
            raise ConfigurationError("collection_id must not be empty")
        if max_links_per_catalog < 4:
            raise ConfigurationError("max_links_per_catalog must be at least 4")
        self.output_dir = Path(os.path.abspath(output_dir))
        self.collection_id = collection_id
        self.description = description
        self.title = title
        self.license = license
        self.providers = [
            p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in providers or []
        ]
        self.keywords = list(keywords or [])
        self.extra_fields = dict(extra_fields or {})
        self.max_links = max_links_per_catalog
        self._capacity = max_links_per_catalog - 2  # root + parent links
        self._key = layout_key(layout)
        self._relinker = ItemRelinker(str(self.output_dir.parent), collection_id)
        self._extensions_in: set[str] = set(stac_extensions)
        self._item_extensions: set[str] = set()
        self._extent = ExtentAccumulator()
        self._summaries = (
            SummaryAccumulator(summary_fields)
            if summary_fields is not None
            else SummaryAccumulator()
        )
        self._item_assets = ItemAssetsAccumulator()
        self._ids = CompactStringSet()
        self._open: dict[str, _SubCatalog] = {}  # group -> sub-catalogue being filled
        self._open_links = 0  # item links held by the parts in _open
        self._subcatalogs: list[_SubCatalog] = []
        self._last_part: dict[str, int] = {}  # group -> number of its latest part
        self._dirnames: set[str] = {_INDEX_DIR}
        self._done = False
        self.output_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(
            tempfile.mkdtemp(prefix=f".{self.output_dir.name}.build-", dir=self.output_dir.parent)
        )
        self._tmp_str = str(self._tmp)
        # a builder dropped without finish() or abort() leaves no temporary folder behind
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)

    # ----------------------------------------------------------------- public

    @property
    def n_items(self) -> int:
        """Items added so far."""
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._ids

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.finish()

    def add_items(self, items: Iterable[Mapping[str, Any] | Any]) -> None:
        """Add every item of an iterable (consumed once)."""
        for item in items:
            self.add(item)

    def add(self, item: Mapping[str, Any] | Any) -> None:
        """Write one item and fold it into the collection's metadata.

        Args:
            item: A :class:`pystac.Item` or an item dict. Absolute local asset hrefs
                inside ``output_dir``'s parent folder become relative to the item file.

        Raises:
            StacError: For a duplicate item id, or something that is not an item.
        """
        if self._done:
            raise StacError("the collection has already been written")
        d = redact_data(item_dict(item))  # no signed URL or token in a catalogue
        item_id = d.get("id")
        if not isinstance(item_id, str) or not item_id:
            raise StacError(f"item without a valid id: {item_id!r}")
        if not self._ids.add(item_id):
            raise StacError(f"duplicate item id {item_id!r} in collection {self.collection_id!r}")

        sub = self._subcatalog_for(self._key(d))
        final_dir = os.path.join(self.output_dir, sub.dirname)
        d = self._relinker.relink(d, final_dir)
        sub.item_names.append(self._write_item(sub.dirname, safe_name(item_id), item_id, d))
        self._open_links += 1
        if len(sub.item_names) >= self._capacity:
            self._close(sub)
        elif self._open_links > OPEN_LINKS_BUDGET:
            for part in list(self._open.values()):
                self._close(part)

        self._extent.add(d)
        self._summaries.add(d)
        self._item_assets.add(d)
        self._item_extensions.update(
            e for e in d.get("stac_extensions") or [] if isinstance(e, str)
        )

    def finish(self) -> Path:
        """Write the sub-catalogues and ``collection.json`` and swap the catalogue in.

        Returns:
            Path of ``collection.json``.
        """
        if self._done:
            return self.output_dir / "collection.json"
        try:
            for part in list(self._open.values()):
                self._close(part)
            children = self._write_index()
            collection = redact_data(self._collection_dict(children))
            (self._tmp / "collection.json").write_bytes(orjson.dumps(collection, option=_DUMP_OPTS))
            swap_in(self._tmp, self.output_dir)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._cleanup.detach()  # the temporary folder is now the catalogue
        logger.info(
            "wrote STAC collection %s: %d item(s) in %d sub-catalogue(s) at %s",
            self.collection_id,
            len(self._ids),
            len(self._subcatalogs),
            self.output_dir,
        )
        return self.output_dir / "collection.json"

    def abort(self) -> None:
        """Drop the partial build; the previous catalogue (if any) stays untouched."""
        self._done = True
        self._cleanup()

    # ----------------------------------------------------------------- items

    def _write_item(self, dirname: str, name: str, item_id: str, d: dict[str, Any]) -> str:
        """Write an item file (never over another one); returns its name without ``.json``."""
        data = orjson.dumps(d, option=_DUMP_OPTS)
        folder = f"{self._tmp_str}/{dirname}"
        try:
            fd = os.open(f"{folder}/{name}.json", _CREATE, 0o644)
        except FileExistsError:  # two ids with the same safe name in one folder
            name = f"{name}-{hashlib.sha1(item_id.encode()).hexdigest()[:8]}"
            try:
                fd = os.open(f"{folder}/{name}.json", _CREATE, 0o644)
            except FileExistsError:
                raise StacError(f"item {item_id!r}: cannot find a free file name") from None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return name

    def _subcatalog_for(self, group: str) -> _SubCatalog:
        sub = self._open.get(group)
        if sub is not None:
            return sub
        last = self._last_part.get(group)
        part = 1 if last is None else last + 1
        base = safe_name(group)
        dirname = base if part == 1 else f"{base}-part{part}"
        if dirname in self._dirnames:
            dirname = f"{dirname}-{hashlib.sha1(f'{group}/{part}'.encode()).hexdigest()[:8]}"
        self._dirnames.add(dirname)
        sub = _SubCatalog(group=group, part=part, dirname=dirname)
        self._open[group] = sub
        self._last_part[group] = part
        self._subcatalogs.append(sub)
        (self._tmp / dirname).mkdir()
        return sub

    # ----------------------------------------------------------------- catalogues

    def _close(self, sub: _SubCatalog) -> None:
        """Write a part's ``catalog.json`` (parent: the collection) and forget its links."""
        href = f"{sub.dirname}/catalog.json"
        links = self._structural_links(href, "collection.json")
        links.extend({"rel": "item", "href": f"./{n}.json", "type": _GEOJSON}
                     for n in sub.item_names)
        catalog = self._catalog_dict(f"{self.collection_id}-{sub.dirname}", _title(sub), links)
        (self._tmp / href).write_bytes(orjson.dumps(catalog, option=_DUMP_OPTS))
        self._open_links -= len(sub.item_names)
        sub.item_names = []
        if self._open.get(sub.group) is sub:
            del self._open[sub.group]

    def _write_index(self) -> list[tuple[str, str]]:
        """Write the index pages when the parts are too many for the collection's links.

        Returns:
            The (href, title) children of the collection.
        """
        entries = [(f"{s.dirname}/catalog.json", _title(s)) for s in self._subcatalogs]
        parents: dict[str, str] = {}
        index_pages: list[tuple[str, list[tuple[str, str]]]] = []
        level = 0
        while len(entries) > self.max_links - 1:  # the collection has a root link only
            level += 1
            pages: list[tuple[str, str]] = []
            for n, start in enumerate(range(0, len(entries), self._capacity), 1):
                href = f"{_INDEX_DIR}/{level}-{n:04d}/catalog.json"
                chunk = entries[start : start + self._capacity]
                for child, _ in chunk:
                    parents[child] = href
                pages.append((href, f"Index {level}, page {n}"))
                index_pages.append((href, chunk))
            entries = pages
        for sub in self._subcatalogs:  # parts were written with the collection as parent
            href = f"{sub.dirname}/catalog.json"
            if href in parents:
                self._set_parent(href, parents[href])
        for href, chunk in index_pages:
            links = self._structural_links(href, parents.get(href, "collection.json"))
            links.extend(
                {"rel": "child", "href": _rel(c, os.path.dirname(href)), "type": _JSON, "title": t}
                for c, t in chunk
            )
            page = href.split("/")[1]
            catalog = self._catalog_dict(
                f"{self.collection_id}-index-{page}", f"Index {page}", links
            )
            (self._tmp / href).parent.mkdir(parents=True, exist_ok=True)
            (self._tmp / href).write_bytes(orjson.dumps(catalog, option=_DUMP_OPTS))
        return entries

    def _set_parent(self, href: str, parent: str) -> None:
        path = self._tmp / href
        catalog = orjson.loads(path.read_bytes())
        parent_href = _rel(parent, os.path.dirname(href))
        for link in catalog["links"]:
            if link.get("rel") == "parent":
                link["href"] = parent_href
        path.write_bytes(orjson.dumps(catalog, option=_DUMP_OPTS))

    @staticmethod
    def _structural_links(href: str, parent: str) -> list[dict[str, str]]:
        start = os.path.dirname(href)
        return [
            {"rel": "root", "href": _rel("collection.json", start), "type": _JSON},
            {"rel": "parent", "href": _rel(parent, start), "type": _JSON},
        ]

    def _catalog_dict(self, cat_id: str, title: str, links: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "type": "Catalog",
            "stac_version": STAC_VERSION,
            "id": cat_id,
            "title": title,
            "description": f"{title} of collection {self.collection_id}",
            "links": links,
        }

    def _collection_dict(self, children: list[tuple[str, str]]) -> dict[str, Any]:
        item_assets = self._item_assets.to_dict()
        prefixes = self._summaries.prefixes()
        extensions = set(self._extensions_in)
        for url in self._item_extensions:
            if extension_prefix(url) in prefixes:
                extensions.add(url)
        d: dict[str, Any] = {"type": "Collection", "stac_version": STAC_VERSION}
        if extensions:
            d["stac_extensions"] = sorted(extensions)
        d["id"] = self.collection_id
        if self.title is not None:
            d["title"] = self.title
        d["description"] = self.description
        if self.keywords:
            d["keywords"] = self.keywords
        d["license"] = self.license
        if self.providers:
            d["providers"] = self.providers
        d["extent"] = self._extent.to_dict()
        summaries = self._summaries.to_dict(self._extent)
        if summaries:
            d["summaries"] = summaries
        if item_assets:
            d["item_assets"] = item_assets
        links: list[dict[str, Any]] = [{"rel": "root", "href": "./collection.json", "type": _JSON}]
        links.extend(
            {"rel": "child", "href": f"./{href}", "type": _JSON, "title": title}
            for href, title in children
        )
        d["links"] = links
        for key, value in self.extra_fields.items():
            if key not in MANAGED_FIELDS:
                d[key] = value
        return d

def _title(sub: _SubCatalog) -> str:
    return sub.group if sub.part == 1 else f"{sub.group} (part {sub.part})"


def extension_prefix(url: str) -> str | None:
    parts = urlsplit(url).path.strip("/").split("/")
    if not parts or not parts[0]:
        return None
    return _EXT_PREFIX.get(parts[0], parts[0])


# --------------------------------------------------------------------------- functions


def build_collection(
    items: Iterable[Mapping[str, Any] | Any],
    output_dir: str | os.PathLike[str],
    **options: Any,
) -> Path:
    """Write a STAC collection of ``items`` into ``output_dir`` in one streaming pass.

    Args:
        items: :class:`pystac.Item` objects or item dicts, consumed once.
        output_dir: Folder of the catalogue; a previous catalogue there is replaced whole.
        **options: Keyword arguments of :class:`CollectionBuilder`: ``collection_id`` and
            ``description`` (required), ``title``, ``license``, ``providers``,
            ``keywords``, ``extra_fields``, ``layout``, ``max_links_per_catalog``,
            ``stac_extensions``, ``summary_fields``.

    Returns:
        Path of the written ``collection.json``.

    Raises:
        StacError: For duplicate item ids or non-items; nothing is replaced then.
        ConfigurationError: For invalid arguments.
    """
    with CollectionBuilder(output_dir, **options) as builder:
        builder.add_items(items)
    return builder.output_dir / "collection.json"
