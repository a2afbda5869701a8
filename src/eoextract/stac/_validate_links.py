"""The hrefs of one STAC document on disk: structural links that resolve, relative hrefs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from eoextract._util.checksum import file_checksum, parse_checksum
from eoextract._util.hrefs import is_absolute, is_local_absolute

#: Link relations that point to another STAC object of the same catalogue.
_STRUCTURAL_RELS = frozenset({"root", "parent", "child", "item", "collection"})


def load_json(path: Path) -> tuple[Any, str | None]:
    """The parsed JSON of a file, or None and what went wrong."""
    try:
        return orjson.loads(path.read_bytes()), None
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, orjson.JSONDecodeError) as exc:
        return None, f"cannot read JSON: {exc}"


def check_links(
    d: Mapping[str, Any],
    path: Path,
    *,
    check_assets: bool,
    known_files: dict[str, bool] | None = None,
    check_checksums: bool = False,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Check hrefs of one object; return problems and the (rel, target path) to follow.

    With ``check_assets``, local (relative) asset files must exist and have the asset's
    ``file:size``; with ``check_checksums`` too, its ``file:checksum``. ``known_files``
    caches the existence of shared targets (root, parent, collection), which thousands of
    items point to.
    """
    problems: list[str] = []
    targets: list[tuple[str, str]] = []
    folder = os.path.dirname(path)
    known = known_files if known_files is not None else {}
    links = d.get("links")
    if isinstance(links, list):
        for i, link in enumerate(links):
            if not isinstance(link, Mapping):
                continue
            rel, href = link.get("rel"), link.get("href")
            if rel not in _STRUCTURAL_RELS or not isinstance(href, str):
                if rel == "self" and isinstance(href, str) and is_local_absolute(href):
                    problems.append(f"links/{i}: self link {href!r} is an absolute local path")
                continue
            if is_absolute(href):
                problems.append(f"links/{i}: {rel} link href {href!r} is not relative")
                continue
            target = os.path.normpath(os.path.join(folder, href))
            if rel == "item":
                exists = os.path.isfile(target)
            else:
                exists = known.get(target)
                if exists is None:
                    exists = known[target] = os.path.isfile(target)
            if not exists:
                problems.append(f"links/{i}: {rel} link {href!r} does not resolve to a file")
                continue
            if rel in ("child", "item"):
                targets.append((rel, target))
    assets = d.get("assets")
    if isinstance(assets, Mapping):
        for key, asset in assets.items():
            href = asset.get("href") if isinstance(asset, Mapping) else None
            if not isinstance(href, str):
                continue
            if is_local_absolute(href):
                problems.append(f"assets/{key}: href {href!r} is an absolute local path")
            elif check_assets and not is_absolute(href):
                problems.extend(_check_asset_file(f"assets/{key}", asset, href,
                                                  os.path.join(folder, href), check_checksums))
    return problems, targets


def _check_asset_file(where: str, asset: Mapping[str, Any], href: str, path: str,
                      check_checksum: bool) -> list[str]:
    """Problems of one local asset file: missing, or not of its ``file:size``/``file:checksum``."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return [f"{where}: file {href!r} does not exist"]
    if os.path.isdir(path):
        return []
    problems = []
    expected_size = asset.get("file:size")
    if isinstance(expected_size, int) and not isinstance(expected_size, bool) and expected_size != size:
        problems.append(f"{where}: file {href!r} has {size} bytes, file:size says {expected_size}")
    expected = asset.get("file:checksum")
    if check_checksum and expected is not None and not problems:
        parsed = parse_checksum(expected)
        if parsed is None:
            problems.append(f"{where}: file:checksum {expected!r} is not a multihash this "
                            f"validator knows")
        else:
            try:
                actual, _ = file_checksum(path, parsed[0])
            except OSError as exc:
                return [f"{where}: cannot read file {href!r}: {exc}"]
            if actual != str(expected).strip().lower():
                problems.append(f"{where}: file {href!r} has checksum {actual}, file:checksum "
                                f"says {expected}")
    return problems
