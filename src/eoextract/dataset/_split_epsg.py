"""One collection per projection (and optionally per Sentinel-2 tile), without copying data.

``load_stac`` and odc-stac load one grid at a time: a catalogue whose patches lie in several
UTM zones is split into collections of one EPSG code each. The output is a static catalogue::

    out/
      catalog.json                      children: the collections
      S2-EXTRACTION-EPSG-32631/         a self-contained collection (its own root), so it
        collection.json                 can be moved or published alone
        2021-03/catalog.json ...
      S2-EXTRACTION-EPSG-32631.parquet  stac-geoparquet of that collection

Item files are new; the data files are not copied: asset hrefs point at the original files,
relative to each item file when ``relative_hrefs`` (the default; the catalogue then validates
and can be moved together with the data), absolute otherwise. The whole output is built in a
temporary folder beside ``output_dir`` and swapped in at the end: on any error (an item
without projection, a duplicate id) nothing is written.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from eoextract._util.files import replace_folder
from eoextract._util.hrefs import is_url, local_path
from eoextract.errors import DatasetError
from eoextract.dataset._selection import Source, item_tile, iter_source_items, require_epsg

logger = logging.getLogger(__name__)

#: How items are grouped: by EPSG code, or by EPSG code and Sentinel-2 tile.
SplitBy = Literal["epsg", "tile"]

_JSON = "application/json"
#: The suffix this module gives collection ids (stripped when a split is split again).
_SUFFIX = re.compile(r"-EPSG-\d+(-[0-9A-Z]+)?$")
_STAC_VERSION = "1.1.0"


@dataclass
class SplitResult:
    """What :func:`split_by_epsg` wrote.

    Attributes:
        root: The root ``catalog.json``.
        collections: Collection id -> its ``collection.json``.
        geoparquet: Collection id -> its stac-geoparquet file.
        n_items: Items per collection id.
        source_collections: Ids of the collections the items came from.
    """

    root: Path
    collections: dict[str, Path] = field(default_factory=dict)
    geoparquet: dict[str, Path] = field(default_factory=dict)
    n_items: dict[str, int] = field(default_factory=dict)
    source_collections: list[str] = field(default_factory=list)


def collection_name(source_id: str, epsg: int, tile: str | None = None) -> str:
    """The id of the collection of one source collection, EPSG code and tile."""
    return f"{source_id}-EPSG-{epsg}" + (f"-{tile}" if tile else "")


def _relative_assets(item: dict[str, Any], item_dir: str) -> dict[str, Any]:
    """``item`` with local asset hrefs relative to the folder its file will be in."""
    assets = {}
    for key, asset in (item.get("assets") or {}).items():
        href = asset.get("href") if isinstance(asset, Mapping) else None
        path = local_path(href) if isinstance(href, str) and not is_url(href) else None
        if path is not None and os.path.isabs(path):
            rel = os.path.relpath(path, item_dir).replace(os.sep, "/")
            asset = {**asset, "href": rel}
        assets[key] = asset
    return {**item, "assets": assets}


def split_by_epsg(
    source: Source,
    output_dir: str | os.PathLike[str],
    *,
    by: SplitBy = "epsg",
    collection_id: str | None = None,
    relative_hrefs: bool = True,
    geoparquet: bool = True,
    validate: bool = True,
    layout: Any = "month",
    progress: Callable[[int], None] | None = None,
) -> SplitResult:
    """Split a catalogue into one collection per EPSG code (``by="tile"``: per EPSG code and
    Sentinel-2 tile), referring to the original data files.

    Items of several source collections go to separate collections (named after each,
    with a warning naming them). Each collection gets extent, ``proj:code`` summaries and
    ``item_assets`` of its own items, and a stac-geoparquet file beside it.

    Args:
        source: A catalogue (root file, its folder or an extraction's output folder), a
            stac-geoparquet file or item dicts (absolute asset hrefs).
        output_dir: Folder of the new catalogue; a previous split there is replaced whole.
        by: ``"epsg"`` or ``"tile"``.
        collection_id: Prefix of the new collection ids (default: each item's collection).
        relative_hrefs: Asset hrefs relative to the item files (else absolute paths).
        geoparquet: Also write ``<collection id>.parquet`` (needs stac-geoparquet).
        validate: Validate the new catalogue (schemas, links, asset files and sizes) before
            swapping it in.
        layout: Sub-catalogue layout of each collection (see :class:`~eoextract.stac.CollectionBuilder`).
        progress: Called with the number of items done so far, every 100 items and at the end.

    Returns:
        The paths written and the item counts.

    Raises:
        DatasetError: An item without an EPSG code (named), no items, or an output folder
            that holds something else than a previous split.
        StacValidationError: The new catalogue does not validate (nothing is written).
    """
    from eoextract.stac import CollectionBuilder

    if by not in ("epsg", "tile"):
        raise DatasetError(f"by must be 'epsg' or 'tile', not {by!r}")
    final = Path(os.path.abspath(output_dir))
    _check_output(final)  # before any work; checked again at the swap
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.split-", dir=final.parent))
    builders: dict[str, CollectionBuilder] = {}
    result = SplitResult(root=final / "catalog.json")
    sources: dict[str, None] = {}
    n = 0
    try:
        for item in iter_source_items(source):
            epsg = require_epsg(item)
            src = collection_id or _SUFFIX.sub("", str(item.get("collection") or "collection"))
            sources.setdefault(_SUFFIX.sub("", str(item.get("collection") or "(none)")))
            name = collection_name(src, epsg, item_tile(item) if by == "tile" else None)
            builder = builders.get(name)
            if builder is None:
                builder = builders[name] = CollectionBuilder(
                    staging / name, collection_id=name, layout=layout,
                    description=f"Items of {src} in EPSG:{epsg}" + (
                        f", Sentinel-2 tile {name.rsplit('-', 1)[1]}" if by == "tile" else ""),
                    license="proprietary")
            if relative_hrefs:
                # every layout puts item files one folder below the collection
                item = _relative_assets(item, str(final / name / "_"))
            builder.add(item)
            n += 1
            if progress is not None and n % 100 == 0:
                progress(n)
        if not builders:
            raise DatasetError(f"{source} holds no items to split", path=str(source))
        result.source_collections = list(sources)
        if len(sources) > 1:
            logger.warning("the catalogue holds items of %d collections (%s); each gets its "
                           "own per-EPSG collections", len(sources), ", ".join(sources))
        for name, builder in sorted(builders.items()):
            builder.finish()
            result.collections[name] = final / name / "collection.json"
            result.n_items[name] = builder.n_items
        _write_root(staging, final.name, sorted(builders))
        if geoparquet:
            _write_geoparquet(staging, final, result)
        if validate:
            _validate(staging, final)
        _swap_in(staging, final)
    except BaseException:
        for builder in builders.values():
            builder.abort()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if progress is not None:
        progress(n)
    logger.info("split %d item(s) into %d collection(s) at %s", n, len(builders), final)
    return result


def _write_root(staging: Path, name: str, collections: list[str]) -> None:
    links: list[dict[str, Any]] = [{"rel": "root", "href": "./catalog.json", "type": _JSON}]
    links.extend({"rel": "child", "href": f"./{c}/collection.json", "type": _JSON, "title": c}
                 for c in collections)
    root = {"type": "Catalog", "stac_version": _STAC_VERSION, "id": name,
            "description": f"{len(collections)} collection(s), one per projection", "links": links}
    (staging / "catalog.json").write_bytes(orjson.dumps(root, option=orjson.OPT_INDENT_2))


def _write_geoparquet(staging: Path, final: Path, result: SplitResult) -> None:
    from eoextract.stac.publish import export_geoparquet

    for name in result.collections:
        # the hrefs in the file are absolute paths of the data files where they are now
        export_geoparquet(staging / name, staging / f"{name}.parquet")
        result.geoparquet[name] = final / f"{name}.parquet"


def _validate(staging: Path, final: Path) -> None:
    """Validate the staged catalogue: its relative hrefs resolve as from ``final``, which
    lies beside it."""
    from eoextract.stac import validate_catalog

    report = validate_catalog(staging / "catalog.json", check_assets=True)
    if not report.ok:
        report.raise_for_errors()


def _is_previous_split(folder: Path) -> bool:
    if not (folder / "catalog.json").is_file():
        return False
    return all(name.endswith((".json", ".parquet")) for _d, _s, files in os.walk(folder)
               for name in files)


def _check_output(final: Path) -> None:
    """Refuse an output that is a file or a folder holding anything but an earlier split."""
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise DatasetError(f"{final} exists and is not a folder", path=str(final))
    if final.exists() and any(final.iterdir()) and not _is_previous_split(final):
        raise DatasetError(f"{final} is not empty and holds no earlier split (catalog.json, "
                           "JSON and Parquet files only); refusing to replace it",
                           path=str(final))


def _swap_in(staging: Path, final: Path) -> None:
    _check_output(final)
    replace_folder(staging, final)
