"""Publishing an extraction's catalogue and recording when each job's output was published.

:func:`publish_catalogue` publishes through :func:`eoextract.stac.publish.publish` (any
target) and, given a job database, sets ``output_published_at`` on the jobs whose items
were published (:func:`mark_jobs_published`). Items are mapped to the jobs that produced
them through the extraction's item store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eoextract.extract._store import ItemStore
from eoextract.stac.publish import PublishResult, find_root, publish

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.jobs.db import JobDatabase

_log = logging.getLogger(__name__)


@dataclass
class CataloguePublishResult(PublishResult):
    """What publishing an extraction's catalogue did, with the jobs marked published.

    Attributes:
        jobs_marked: Keys of the jobs whose ``output_published_at`` was set.
    """

    jobs_marked: list[str] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        """One line for people."""
        head, _, elapsed = super().summary().rpartition(", ")
        return f"{head}, {len(self.jobs_marked)} job(s) marked published, {elapsed}"


def output_dir_of(catalog_root: str | os.PathLike[str]) -> Path:
    """The extraction output folder a catalogue belongs to.

    The folder holding the item store among the catalogue's folder and its parent;
    otherwise the parent of the catalogue's folder (the layout ``OUTPUT_DIR/stac``).
    """
    folder = find_root(catalog_root).parent
    for candidate in (folder, folder.parent):
        if ItemStore(candidate).items_dir.is_dir():
            return candidate
    return folder.parent


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

    store = ItemStore(output_dir)
    if not store:
        _log.warning("no per-job item files under %s: no job marked as published",
                     store.items_dir)
        return []
    jobs = _jobs_published(store, set(published_items), set(failed_items))
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
            _log.warning("job %s is not in the job database; not marked as published", key)
            continue
        if key in already:
            continue
        db.update(key, output_published_at=at)
        marked.append(key)
    db.flush()
    if db is not job_db:
        db.close()
    _log.info("marked %d job(s) as published", len(marked))
    return marked


def _jobs_published(store: ItemStore, published: set[str], failed: set[str]) -> set[str]:
    """Keys of the jobs with an item in ``published`` and none in ``failed``, read one job
    file at a time (no map of every item to its job)."""
    jobs: set[str] = set()
    failed_jobs: set[str] = set()
    for job in store.iter_jobs(skip_unreadable=True):
        ids = [d.get("id") for d in job.items]
        if failed and any(i in failed for i in ids):
            failed_jobs.add(job.job_key)
        elif any(i in published for i in ids):
            jobs.add(job.job_key)
    return jobs - failed_jobs


def publish_catalogue(
    catalog_dir: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    job_db: str | os.PathLike[str] | JobDatabase | None = None,
    kind: str | None = None,
    **options: Any,
) -> CataloguePublishResult:
    """Publish an extraction's catalogue and mark the jobs whose items were published.

    Args:
        catalog_dir: The extraction's output folder (catalogue in ``stac/``) or the
            catalogue itself.
        target: Where to: ``s3://bucket/prefix``, a STAC API URL, a pgstac DSN, or a
            file with ``kind="geoparquet"`` (see :func:`eoextract.stac.publish.publish`).
        job_db: Job database whose jobs get ``output_published_at`` once their items are
            published (see :func:`mark_jobs_published`); None marks nothing.
        kind: The kind of target, when its URL does not tell.
        **options: Passed to the target's function (``endpoint_url``, ``workers``,
            ``asset_base_url``, ``upsert``, ``method``, ...).

    Returns:
        What was published, with ``jobs_marked``.

    Raises:
        ConfigurationError: When no target takes ``target``.
        PublishError: When publishing fails as a whole.
    """
    root = find_root(catalog_dir)
    published = publish(root, target, kind=kind, **options)
    result = CataloguePublishResult(
        **{f.name: getattr(published, f.name) for f in fields(PublishResult)})
    if job_db is not None and result.published_items:
        result.jobs_marked = mark_jobs_published(
            job_db, result.published_items, output_dir_of(root),
            failed_items=result.failed_items)
    return result
