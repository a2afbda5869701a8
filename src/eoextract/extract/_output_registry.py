"""Which job owns each output file: every placed path is registered before bytes go there.

Two jobs whose ``output_path_generator`` gives the same path would otherwise both finish,
the second silently replacing the first one's file (and the catalogue would describe one
file twice, one of them with a wrong ``file:checksum``). So before a downloaded file is
moved to its final path, the path is registered for the job:
``output_dir/.eoextract/paths/<ab>/<digest>.json`` (``{"path", "job_key", "at"}``, the digest
being the SHA-256 of the path relative to ``output_dir``). The record is created with
``link(2)``, which fails when the name exists, so exactly one job wins a path, across
restarts and across managers sharing the folder. The record lives with the files it
protects: it moves with the output folder and works with any job database.

The same job registering its own path again (a rerun, a resumed job, a retry) is fine.
Paths that are the manager's own are refused whoever asks: the state folder
``.eoextract/``, the catalogue folder ``stac/`` and the job database with its companion
files (``jobs.db-wal``, ``jobs.csv.meta.json``, ...) when it lies inside the output folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from eoextract._util.hrefs import ensure_inside
from eoextract._util.utc import utc_now
from eoextract.errors import OutputPathConflict, UnsafeAssetPath
from eoextract.jobs._download import STATE_DIR

_log = logging.getLogger(__name__)

#: Where path records live, relative to the output folder.
PATHS_DIR = Path(STATE_DIR) / "paths"
#: Folders of the output folder that hold the manager's own files.
RESERVED_FOLDERS = (STATE_DIR, "stac")
_TMP_PREFIX = ".tmp-"


def database_files(job_db: Any) -> list[Path]:
    """The file(s) of a job database given as a path, a URL or a database object (its
    companion files share the name as a prefix); none for a database server."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    location: Any = getattr(job_db, "path", None)
    engine = getattr(job_db, "engine", None)
    if location is None and engine is not None:
        location = engine.url
    if location is None and isinstance(job_db, (str, os.PathLike)):
        location = job_db
    if location is None:
        return []
    text = str(location) if not hasattr(location, "get_backend_name") else None
    if text is not None and "://" not in text:
        return [Path(text).expanduser().absolute()]
    try:
        url = location if text is None else make_url(text)
    except ArgumentError:
        return []
    if url.get_backend_name() != "sqlite" or not url.database or url.database.startswith(
            (":memory:", "file::memory:")):
        return []
    return [Path(url.database).expanduser().absolute()]


class OutputRegistry:
    """The owners of the paths placed in one output folder.

    Args:
        output_dir: The extraction's output folder.
        reserved_files: Files of the manager's own inside or outside the folder (the job
            database); paths named like them (same folder, same name or that name followed
            by ``-`` or ``.``) are refused.
    """

    def __init__(self, output_dir: str | os.PathLike[str], *, reserved_files: Iterable[Path] = ()) -> None:
        self.output_dir = Path(output_dir).absolute()
        self._root = self.output_dir.resolve()
        self._reserved_files = [Path(os.path.realpath(p)) for p in reserved_files]

    def __repr__(self) -> str:
        return f"OutputRegistry({str(self.output_dir)!r})"

    @property
    def folder(self) -> Path:
        """The folder of the path records."""
        return self.output_dir / PATHS_DIR

    def _relative(self, path: str | os.PathLike[str]) -> tuple[Path, str]:
        resolved = ensure_inside(path, self._root)
        return resolved, resolved.relative_to(self._root).as_posix()

    def record_file(self, path: str | os.PathLike[str]) -> Path:
        """The record of ``path`` (which need not exist)."""
        _, rel = self._relative(path)
        digest = hashlib.sha256(os.path.normcase(rel).encode("utf-8")).hexdigest()
        return self.folder / digest[:2] / f"{digest}.json"

    def check_allowed(self, path: str | os.PathLike[str], *, job_key: str | None = None) -> Path:
        """Refuse a path holding (or that would replace) one of the manager's own files.

        Returns:
            The path, resolved.

        Raises:
            UnsafeAssetPath: The path is the job database (or one of its companion files),
                or lies in the state folder ``.eoextract/`` or the catalogue folder ``stac/``.
        """
        resolved, rel = self._relative(path)
        first = rel.split("/", 1)[0]
        if first in RESERVED_FOLDERS:
            what = "state" if first == STATE_DIR else "catalogue"
            raise UnsafeAssetPath(
                f"output path {rel!r} lies in the manager's {what} folder {first}/ of "
                f"{self.output_dir}; choose a path outside it", job_key=job_key)
        for own in self._reserved_files:
            name = resolved.name
            if resolved.parent == own.parent and (
                    name == own.name or name.startswith((own.name + "-", own.name + "."))):
                raise UnsafeAssetPath(
                    f"output path {rel!r} would replace the job database {own} (or one of its "
                    f"files); choose another path", job_key=job_key)
        return resolved

    def owner(self, path: str | os.PathLike[str]) -> str | None:
        """The key of the job that registered ``path``, or None."""
        record = self._read(self.record_file(path))
        return None if record is None else record.get("job_key")

    def register(self, path: str | os.PathLike[str], job_key: str, *, asset: str | None = None) -> Path:
        """Register ``path`` for ``job_key`` before a file is written there.

        Registering a path the same job registered before does nothing.

        Returns:
            The path, resolved.

        Raises:
            OutputPathConflict: Another job registered the path first (its file is left
                as it is).
            UnsafeAssetPath: The path leaves the output folder or is the manager's own
                (see :meth:`check_allowed`).
        """
        resolved = self.check_allowed(path, job_key=job_key)
        rel = resolved.relative_to(self._root).as_posix()
        record = self.record_file(resolved)
        owner = self._create(record, {"path": rel, "job_key": job_key, "at": utc_now().isoformat()})
        if owner is None or owner == job_key:
            return resolved
        raise OutputPathConflict(
            f"output path {rel!r} of job {job_key!r} (asset {asset!r}) is already taken by job "
            f"{owner!r}; its file is left as it is. Give each job's files paths of their own "
            f"(e.g. with the job's or the sample's id in the path)",
            path=rel, owner=owner, job_key=job_key, asset=asset)

    def _create(self, record: Path, content: dict[str, Any]) -> str | None:
        """Create ``record`` unless it exists; returns None when created, else its owner."""
        record.parent.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(content)
        tmp = record.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, record)  # atomic, fails if the record exists, never a partial record
            return None
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: exclusive creation instead
            try:
                fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                return None
        finally:
            tmp.unlink(missing_ok=True)
        existing = self._read(record)
        if existing is None:
            return f"<unknown: unreadable record {record}>"
        return str(existing.get("job_key"))

    @staticmethod
    def _read(record: Path) -> dict[str, Any] | None:
        try:
            value = orjson.loads(record.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            _log.warning("unreadable output path record %s: %s", record, exc)
            return None
        return value if isinstance(value, dict) else None
