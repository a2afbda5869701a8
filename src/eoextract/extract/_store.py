"""The item store: where an extraction keeps the STAC items of its finished jobs and its settings.

The extraction manager writes the items of each finished job at once to
``output_dir/.eoextract/items/<job>.json`` (``{"version": 1, "job_key", "backend_job_id",
"items"}``, asset hrefs relative to ``output_dir``), so no run holds all items in memory and
the folder can be moved; ``output_dir/.eoextract/extraction.json`` records the collection id
and description. :class:`ItemStore` is the only code that reads or writes these files: the
manager, the catalogue builder, publishing (which job produced which item), the report and the
command line all go through it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pystac

from eoextract._util.files import atomic_write_json
from eoextract._util.hrefs import ensure_inside, local_path
from eoextract._util.redact import redact_data
from eoextract.errors import StacError, UnsafeAssetPath
from eoextract.jobs._download import STATE_DIR

_log = logging.getLogger(__name__)

_ITEMS_VERSION = 1
_SETTINGS_FILE = "extraction.json"
_SLUG_RE = re.compile(r"[^A-Za-z0-9._-]+")

#: Where the stored items of finished jobs live, relative to the output folder.
ITEMS_DIR = Path(STATE_DIR) / "items"


@dataclass(frozen=True)
class JobItems:
    """The stored items of one finished job.

    Attributes:
        job_key: The job's key in the job database.
        backend_job_id: Its id on the backend, when known.
        items: Item dicts, local asset hrefs absolute (inside the output folder as it is now).
        path: The file they were read from.
    """

    job_key: str
    backend_job_id: str | None
    items: list[dict[str, Any]]
    path: Path


class ItemStore:
    """The per-job items and the settings of one extraction output folder.

    Args:
        output_dir: The extraction's output folder.
    """

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir)

    def __repr__(self) -> str:
        return f"ItemStore({str(self.output_dir)!r})"

    @property
    def items_dir(self) -> Path:
        """The folder of the per-job item files."""
        return self.output_dir / ITEMS_DIR

    @property
    def settings_path(self) -> Path:
        """The file recording the extraction's settings."""
        return self.output_dir / STATE_DIR / _SETTINGS_FILE

    def files(self) -> list[Path]:
        """The per-job item files, in name order (temporary files left out)."""
        folder = self.items_dir
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))

    def __bool__(self) -> bool:
        return bool(self.files())

    # ------------------------------------------------------------------ writing

    def job_file(self, job_key: str) -> Path:
        """The file holding the items of ``job_key`` (a readable slug plus a digest of the key)."""
        slug = _SLUG_RE.sub("-", job_key).strip("-.")[:60] or "job"
        digest = hashlib.sha256(job_key.encode("utf-8")).hexdigest()[:12]
        return self.items_dir / f"{slug}-{digest}.json"

    def stored_item(self, item: pystac.Item, job_key: str) -> dict[str, Any]:
        """An item dict whose local asset hrefs are relative to the output folder.

        Raises:
            UnsafeAssetPath: An asset outside the output folder.
        """
        root = self.output_dir.resolve()
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        for key, asset in (d.get("assets") or {}).items():
            href = asset.get("href")
            path = local_path(href) if isinstance(href, str) else None
            if path is None:
                continue
            try:
                resolved = ensure_inside(path, root)
            except UnsafeAssetPath as exc:
                exc.job_key, exc.asset = job_key, key
                raise
            asset["href"] = resolved.relative_to(root).as_posix()
        return d

    def write_job(self, job_key: str, backend_job_id: str | None,
                  items: Sequence[dict[str, Any]]) -> Path:
        """Write (or replace) one job's items atomically; returns the file written."""
        target = self.job_file(job_key)
        atomic_write_json(target, {"version": _ITEMS_VERSION, "job_key": job_key,
                                   "backend_job_id": backend_job_id,
                                   "items": [redact_data(d) for d in items]})
        return target

    # ------------------------------------------------------------------ reading

    def _read(self, path: Path) -> dict[str, Any]:
        try:
            document = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StacError(f"Cannot read stored items {path}: {exc}") from exc
        if not isinstance(document, dict) or document.get("version") != _ITEMS_VERSION:
            raise StacError(f"{path} is not an item file this version of eoextract can read")
        return document

    def iter_jobs(self, *, skip_unreadable: bool = False) -> Iterator[JobItems]:
        """The stored items of every finished job, one job file at a time, in file-name order.

        Args:
            skip_unreadable: Log and skip unreadable files instead of raising.

        Raises:
            StacError: A stored file is unreadable or of an unknown version.
        """
        root = self.output_dir.resolve()
        for path in self.files():
            try:
                document = self._read(path)
            except StacError as exc:
                if not skip_unreadable:
                    raise
                _log.warning("%s", exc)
                continue
            items = [d for d in document.get("items") or [] if isinstance(d, dict)]
            for d in items:
                for asset in (d.get("assets") or {}).values():
                    href = asset.get("href")
                    if isinstance(href, str) and not urlsplit(href).scheme and not os.path.isabs(href):
                        asset["href"] = os.path.normpath(os.path.join(root, href))
            job_key = document.get("job_key")
            yield JobItems(str(job_key) if job_key is not None else path.stem,
                           document.get("backend_job_id"), items, path)

    def iter_items(self, *, skip_unreadable: bool = False) -> Iterator[dict[str, Any]]:
        """Every stored item (asset hrefs absolute), jobs in file-name order.

        Args:
            skip_unreadable: Log and skip unreadable files instead of raising.

        Raises:
            StacError: A stored file is unreadable or of an unknown version.
        """
        for job in self.iter_jobs(skip_unreadable=skip_unreadable):
            yield from job.items

    def job_keys_by_item(self) -> dict[str, str]:
        """Item id -> key of the job that produced it."""
        return {item["id"]: job.job_key for job in self.iter_jobs(skip_unreadable=True) for item in job.items
                if isinstance(item.get("id"), str)}

    # ------------------------------------------------------------------ settings

    def settings(self) -> dict[str, Any]:
        """What the manager recorded about the extraction (``collection_id``, ``description``);
        an empty dict when nothing was recorded.

        Raises:
            StacError: The settings file is unreadable.
        """
        try:
            settings = orjson.loads(self.settings_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StacError(f"Cannot read {self.settings_path}: {exc}") from exc
        return settings if isinstance(settings, dict) else {}

    def write_settings(self, **settings: Any) -> None:
        """Record the extraction's settings; the file is left untouched when it says the same."""
        if self.settings() != settings:
            atomic_write_json(self.settings_path, settings)
