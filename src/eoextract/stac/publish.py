"""Publishing a catalogue: object storage, STAC APIs, pgstac, stac-geoparquet.

A catalogue written by :func:`~eoextract.stac.build_collection` (``stac/collection.json``,
sub-catalogues, relative hrefs everywhere) is published as it is:

* :func:`publish_to_s3` uploads the JSON files and the asset files they reference, with
  the same relative layout, to ``s3://bucket/prefix`` (parallel, verified, incremental);
* :func:`publish_to_stac_api` loads the collection and its items into a STAC API with
  the Transactions extension;
* :func:`load_into_pgstac` loads them straight into a pgstac database;
* :func:`export_geoparquet` writes every item into one stac-geoparquet file.

This module holds what they share: walking the catalogue on disk
(:func:`walk_catalog`), the result record (:class:`PublishResult`), the mapping from
items to the jobs that produced them and the ``output_published_at`` update of those
jobs (:func:`mark_jobs_published`), and :func:`publish`, which picks the target from
its URL. The targets themselves live in :mod:`~eoextract.stac.publish_s3`,
:mod:`~eoextract.stac.publish_api` and :mod:`~eoextract.stac.geoparquet` (imported on
first use, so their optional dependencies are only needed by those who publish).

Credentials are taken from arguments or the environment and are never written to the
catalogue, the job database, the upload manifest or the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from eoextract.errors import StacError
from eoextract.extract._store import ITEMS_DIR, ItemStore
from eoextract.stac.collection import is_url

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.jobs.db import JobDatabase

__all__ = [
    "CatalogEntry",
    "PublishError",
    "PublishResult",
    "export_geoparquet",
    "find_root",
    "job_keys_by_item",
    "load_into_pgstac",
    "mark_jobs_published",
    "output_dir_of",
    "publish",
    "publish_to_s3",
    "publish_to_stac_api",
    "walk_catalog",
]

logger = logging.getLogger(__name__)


_LAZY = {
    "publish_to_s3": "eoextract.stac.publish_s3",
    "publish_to_stac_api": "eoextract.stac.publish_api",
    "load_into_pgstac": "eoextract.stac.publish_api",
    "export_geoparquet": "eoextract.stac.geoparquet",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


class PublishError(StacError):
    """Publishing failed or was incomplete (``.result`` holds what was done)."""

    def __init__(self, message: str, *, result: PublishResult | None = None) -> None:
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- results


@dataclass
class PublishResult:
    """What one publication did.

    Attributes:
        target: Where to (without credentials), e.g. ``s3://bucket/prefix``.
        n_items: Items in the catalogue.
        n_written: Objects written (files uploaded, items loaded).
        n_unchanged: Objects found up to date and left alone (incremental runs).
        n_bytes: Bytes uploaded.
        elapsed_s: Wall-clock seconds.
        published_items: Ids of the items that are published after this run.
        errors: One message per object that failed; empty when everything worked.
        jobs_marked: Keys of the jobs whose ``output_published_at`` was set.
        root_url: URL of the published root document, when there is one.
    """

    target: str
    n_items: int = 0
    n_written: int = 0
    n_unchanged: int = 0
    n_bytes: int = 0
    elapsed_s: float = 0.0
    published_items: list[str] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list)
    jobs_marked: list[str] = field(default_factory=list, repr=False)
    root_url: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every object was published."""
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise :class:`PublishError` listing the first problems, if there were any."""
        if self.errors:
            shown = "\n  ".join(self.errors[:10])
            more = f"\n  ... and {len(self.errors) - 10} more" if len(self.errors) > 10 else ""
            raise PublishError(
                f"publishing to {self.target} failed for {len(self.errors)} object(s):\n"
                f"  {shown}{more}",
                result=self,
            )

    def summary(self) -> str:
        """One line for people."""
        mib = self.n_bytes / 2**20
        return (f"{self.target}: {self.n_items} item(s), {self.n_written} written "
                f"({mib:.1f} MiB), {self.n_unchanged} unchanged, {len(self.errors)} failed, "
                f"{len(self.jobs_marked)} job(s) marked published, {self.elapsed_s:.1f} s")


# --------------------------------------------------------------------------- the catalogue


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
    seen: set[Path] = set()

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
            if target in seen:
                continue
            if rel == "child":
                children.append(target)
                continue
            seen.add(target)
            item, item_raw = load(target)
            yield CatalogEntry(target, "item", item, raw=item_raw)
        for child in children:
            if child not in seen:
                yield from visit(child, load(child))
        kind: Literal["catalog", "collection"] = (
            "collection" if data.get("type") == "Collection" else "catalog")
        yield CatalogEntry(file, kind, data, is_root=file == root, raw=raw)

    yield from visit(root, load(root))


def output_dir_of(catalog_root: str | os.PathLike[str]) -> Path:
    """The extraction output folder a catalogue belongs to.

    The folder holding ``.eoextract/items`` among the catalogue's folder and its parent;
    otherwise the parent of the catalogue's folder (the layout ``OUTPUT_DIR/stac``).
    """
    folder = find_root(catalog_root).parent
    for candidate in (folder, folder.parent):
        if (candidate / ITEMS_DIR).is_dir():
            return candidate
    return folder.parent


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

    Assets whose href is a URL are left out.
    """
    out: dict[str, Path] = {}
    for key, asset in (item.get("assets") or {}).items():
        href = asset.get("href") if isinstance(asset, Mapping) else None
        if not isinstance(href, str) or not href:
            continue
        if href.startswith("file://"):
            from urllib.parse import unquote, urlsplit

            href = unquote(urlsplit(href).path)
        elif is_url(href):
            continue
        out[key] = os.path.normpath(os.path.join(item_file.parent, href))
    return out


# --------------------------------------------------------------------------- jobs


def job_keys_by_item(output_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Item id -> key of the job that produced it, from the extraction's item store."""
    return ItemStore(output_dir).job_keys_by_item()


def mark_jobs_published(
    job_db: str | os.PathLike[str] | JobDatabase,
    published_items: Iterable[str],
    output_dir: str | os.PathLike[str],
    *,
    failed_items: Iterable[str] = (),
    at: datetime | None = None,
) -> list[str]:
    """Set ``output_published_at`` on the jobs whose items were published.

    A job counts as published when at least one of its items was published and none of
    them failed. The time of the first publication is kept: jobs that already have
    ``output_published_at`` are left alone.

    Args:
        job_db: The job database (path, URL or object).
        published_items: Ids of the items now published.
        output_dir: The extraction output folder (for the item -> job mapping).
        failed_items: Ids of items that could not be published.
        at: The publication time (default: now, UTC).

    Returns:
        Keys of the jobs updated.
    """
    from eoextract.jobs.db import get_job_db

    mapping = job_keys_by_item(output_dir)
    if not mapping:
        logger.warning("no per-job item files under %s: no job marked as published",
                       ItemStore(output_dir).items_dir)
        return []
    failed_jobs = {mapping[i] for i in failed_items if i in mapping}
    jobs = {mapping[i] for i in published_items if i in mapping} - failed_jobs
    if not jobs:
        return []
    at = at or datetime.now(UTC)
    db = job_db if hasattr(job_db, "update") else get_job_db(job_db)  # type: ignore[arg-type]
    frame = db.read()
    index = set(frame.index.astype(str))
    already = set()
    if "output_published_at" in frame.columns:
        column = frame["output_published_at"]
        already = set(frame.index[column.notna()].astype(str))
    marked = []
    for key in sorted(jobs):
        if key not in index:
            logger.warning("job %s is not in the job database; not marked as published", key)
            continue
        if key in already:
            continue
        db.update(key, output_published_at=at)
        marked.append(key)
    db.flush()
    if db is not job_db:
        db.close()
    logger.info("marked %d job(s) as published", len(marked))
    return marked


# --------------------------------------------------------------------------- dispatch


def publish(catalog_dir: str | os.PathLike[str], target: str, **options: Any) -> PublishResult:
    """Publish a catalogue to the target its URL names.

    ``s3://bucket/prefix`` → :func:`publish_to_s3`; ``http(s)://…`` (a STAC API) →
    :func:`publish_to_stac_api`; ``postgresql://…`` → :func:`load_into_pgstac`.

    Args:
        catalog_dir: The catalogue (root document or its folder).
        target: Where to.
        **options: Passed on to the function chosen.

    Returns:
        What was done.
    """
    scheme = target.split("://", 1)[0].lower() if "://" in target else ""
    if scheme == "s3":
        from eoextract.stac.publish_s3 import publish_to_s3

        return publish_to_s3(catalog_dir, target, **options)
    if scheme in ("http", "https"):
        from eoextract.stac.publish_api import publish_to_stac_api

        return publish_to_stac_api(catalog_dir, target, **options)
    if scheme.startswith("postgres"):
        from eoextract.stac.publish_api import load_into_pgstac

        return load_into_pgstac(catalog_dir, target, **options)
    from eoextract.errors import ConfigurationError

    raise ConfigurationError(
        "publish target must be s3://bucket/prefix, a STAC API URL (http(s)://) or a "
        "pgstac database URL (postgresql://)"
    )
