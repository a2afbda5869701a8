"""Where an extraction keeps its STAC items, and the catalogue built from them.

The manager writes the items of each finished job at once to
``output_dir/.eoextract/items/<job>.json`` (asset hrefs relative to ``output_dir``), so no
run holds all items in memory and the folder can be moved. :func:`iter_job_items`
streams them back (hrefs absolute again) and :func:`build_catalogue` turns them into a
validated, relocatable catalogue, from any process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pystac

from eoextract.errors import ConfigurationError, StacError, UnsafeAssetPath
from eoextract.jobs.download import STATE_DIR, ensure_inside

__all__ = [
    "ITEMS_DIR",
    "build_catalogue",
    "extraction_settings",
    "items_dir",
    "iter_job_items",
    "write_extraction_settings",
    "write_job_items",
    "stored_item",
]

_log = logging.getLogger(__name__)

_ITEMS_VERSION = 1
_SETTINGS_FILE = "extraction.json"
_SLUG_RE = re.compile(r"[^A-Za-z0-9._-]+")


#: Where the stored items of finished jobs live, relative to the output folder
#: (``{"job_key": ..., "items": [...]}``, one JSON file per job).
ITEMS_DIR = Path(STATE_DIR) / "items"


def items_dir(output_dir: str | os.PathLike[str]) -> Path:
    """Folder holding the stored items of finished jobs, one JSON file per job."""
    return Path(output_dir) / ITEMS_DIR


def _items_file(output_dir: Path, job_key: str) -> Path:
    slug = _SLUG_RE.sub("-", job_key).strip("-.")[:60] or "job"
    digest = hashlib.sha256(job_key.encode("utf-8")).hexdigest()[:12]
    return items_dir(output_dir) / f"{slug}-{digest}.json"


def _local_path(href: str) -> str | None:
    """The local path an href names (absolute or relative), or None for a URL."""
    parts = urlsplit(href)
    if parts.scheme == "file":
        return unquote(parts.path)
    if parts.scheme and len(parts.scheme) > 1:  # a URL (one letter: a Windows drive)
        return None
    return href


def stored_item(item: pystac.Item, root: Path, job_key: str) -> dict[str, Any]:
    """An item dict whose local asset hrefs are relative to ``root`` (checked to stay inside)."""
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    for key, asset in (d.get("assets") or {}).items():
        href = asset.get("href")
        path = _local_path(href) if isinstance(href, str) else None
        if path is None:
            continue
        try:
            resolved = ensure_inside(path, root)
        except UnsafeAssetPath as exc:
            exc.job_key, exc.asset = job_key, key
            raise
        asset["href"] = resolved.relative_to(root).as_posix()
    return d


def write_job_items(output_dir: Path, job_key: str, backend_job_id: str | None,
                 items: Sequence[dict[str, Any]]) -> Path:
    """Write one job's items atomically."""
    target = _items_file(output_dir, job_key)
    _write_json(target, {"version": _ITEMS_VERSION, "job_key": job_key, "backend_job_id": backend_job_id,
                         "items": list(items)})
    return target


def iter_job_items(output_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the stored items of every finished job of an extraction, one job file at a time.

    Asset hrefs come out absolute (inside ``output_dir`` as it is now, so the folder
    may have been moved since the run). Jobs are read in file-name order, so the
    same items always come out in the same order.

    Args:
        output_dir: The extraction's output folder.

    Yields:
        Item dicts.

    Raises:
        StacError: If a stored file is unreadable or of an unknown version.
    """
    root = Path(output_dir).resolve()
    folder = items_dir(root)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StacError(f"Cannot read stored items {path}: {exc}") from exc
        if not isinstance(document, dict) or document.get("version") != _ITEMS_VERSION:
            raise StacError(f"{path} is not an item file this version of eoextract can read")
        for d in document.get("items") or []:
            for asset in (d.get("assets") or {}).values():
                href = asset.get("href")
                if isinstance(href, str) and not urlsplit(href).scheme and not os.path.isabs(href):
                    asset["href"] = os.path.normpath(os.path.join(root, href))
            yield d


def _write_json(target: Path, document: Any) -> None:
    """Write JSON atomically (temp file in the same folder, fsync, rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def write_extraction_settings(output_dir: str | os.PathLike[str], **settings: Any) -> None:
    """Record an extraction's settings (``collection_id``, ``description``) in its folder.

    The file is left untouched when it already says the same.
    """
    if extraction_settings(output_dir) != settings:
        _write_json(Path(output_dir) / STATE_DIR / _SETTINGS_FILE, settings)


def extraction_settings(output_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What the manager recorded about an extraction (``collection_id``, ``description``).

    Returns:
        The recorded settings, or an empty dict when none were recorded.
    """
    path = Path(output_dir) / STATE_DIR / _SETTINGS_FILE
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StacError(f"Cannot read {path}: {exc}") from exc
    return settings if isinstance(settings, dict) else {}


def build_catalogue(
    output_dir: str | os.PathLike[str],
    collection_id: str | None = None,
    description: str | None = None,
    *,
    output_path: str | os.PathLike[str] | None = None,
    existing: str | os.PathLike[str] | None = None,
    validate: bool = True,
    **collection_options: Any,
) -> Path:
    """Build the STAC catalogue of an extraction from its stored items, in one pass.

    Usable from any process once jobs have finished (e.g. ``eoextract stac build``):
    only ``output_dir`` is read.

    Args:
        output_dir: The extraction's output folder.
        collection_id: Id of the collection (default: the one the manager recorded in
            ``output_dir/.eoextract/extraction.json``).
        description: Its description (default: the recorded one).
        output_path: Folder of the catalogue (default ``output_dir/stac``): a direct
            subfolder of ``output_dir`` or of a folder containing it, so that asset
            hrefs can be relative; an earlier catalogue there is replaced whole.
        existing: An existing ``collection.json`` to extend: its items are kept (those
            with the id of a new item are replaced) and its metadata too.
        validate: Validate the written catalogue (schemas, links, asset files).
        **collection_options: Passed to :func:`~eoextract.stac.build_collection`
            (``title``, ``license``, ``providers``, ``keywords``, ``extra_fields``,
            ``layout``, ``max_links_per_catalog``, ``stac_extensions``).

    Returns:
        Path of the written ``collection.json``.

    Raises:
        ConfigurationError: Without a collection id (given or recorded), or for an
            ``output_path`` the files cannot be reached from with relative hrefs.
        StacValidationError: If ``validate`` and the catalogue is invalid.
        StacError: For unreadable stored items or duplicate item ids.
    """
    from eoextract.stac import build_collection, extend_collection, validate_catalog

    root = Path(output_dir)
    recorded = extraction_settings(root)
    collection_id = collection_id or recorded.get("collection_id")
    if not collection_id:
        raise ConfigurationError(f"no collection id given, and none recorded in {root}")
    if description is None:
        description = str(recorded.get("description") or "")
    target = Path(output_path) if output_path is not None else root / "stac"
    if not root.resolve().is_relative_to(target.absolute().parent.resolve()):
        raise ConfigurationError(
            f"the catalogue folder {target} must be a direct subfolder of {root} (or of a folder "
            "containing it), so that its asset hrefs can be relative"
        )
    items = iter_job_items(root)
    if existing is not None and Path(existing).exists():
        # the existing collection keeps its id and metadata unless options say otherwise
        options = {k: v for k, v in collection_options.items() if v is not None}
        path = extend_collection(existing, items, output_dir=target, **options)
    else:
        if existing is not None:
            _log.info("%s does not exist yet; building a new collection", existing)
        path = build_collection(items, target, collection_id=collection_id, description=description,
                                **collection_options)
    if validate:
        report = validate_catalog(path, check_assets=True)
        report.raise_for_errors()
        _log.info("catalogue %s: %d item(s), valid", path, report.n_items)
    return path
