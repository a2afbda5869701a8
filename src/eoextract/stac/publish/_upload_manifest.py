"""The local record of what has been uploaded to one target (incremental, resumable uploads).

``BASE/.eoextract/publish/<hash of the target>.json`` maps object keys to the size,
checksum (multihash), ETag and (for files) modification time of what was verified in the store.
Every verified upload is appended to a journal beside it (``<hash>.journal``, one
JSON line each, written every :data:`FLUSH_EVERY` entries), so a crash loses at most
the last few records (a rerun finds those objects in the store by their ETag); the
journal is folded into the manifest, written atomically (temporary file, fsync,
rename, folder fsync), every :data:`CHECKPOINT_EVERY` entries and when the run ends. Loading
reads the manifest and replays the journal, ignoring a torn last line.

The manifest names its target without credentials and holds nothing secret.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from eoextract._util.checksum import multihash
from eoextract._util.files import atomic_write
from eoextract._util.redact import redact

logger = logging.getLogger(__name__)

#: Journal entries folded into the manifest at a time.
CHECKPOINT_EVERY = 5000
#: Journal entries written to the file at a time (a crash loses at most these, which a
#: rerun then finds in the store by their ETag).
FLUSH_EVERY = 32
_VERSION = 1


@dataclass(frozen=True)
class ManifestEntry:
    """One object as verified in the store.

    Attributes:
        size: Bytes.
        checksum: Hex multihash of the content (see :mod:`eoextract._util.checksum`).
        etag: ETag the store reported (without quotes), if any.
        mtime_ns: Modification time of the local file when it was hashed (files only).
    """

    size: int
    checksum: str
    etag: str | None = None
    mtime_ns: int | None = None

    def to_list(self) -> list[Any]:
        return [self.size, self.checksum, self.etag, self.mtime_ns]

    @classmethod
    def from_list(cls, value: list[Any]) -> ManifestEntry:
        size, checksum, etag, mtime_ns = value
        checksum = str(checksum)
        if len(checksum) == 64:  # written before checksums were multihashes: a bare sha256
            checksum = multihash("sha2-256", checksum)
        return cls(int(size), checksum, etag, mtime_ns)


def manifest_path(base: str | os.PathLike[str], target: str) -> Path:
    """Where the manifest of ``target`` (a name without credentials) lives under ``base``."""
    digest = hashlib.sha256(target.encode("utf-8")).hexdigest()[:16]
    return Path(base) / ".eoextract" / "publish" / f"{digest}.json"


class UploadManifest:
    """Key -> :class:`ManifestEntry` of one target, persisted as described above.

    Not thread-safe: one event loop (or thread) records entries.

    Args:
        path: The manifest file (its folder is created when needed).
        target: Name of the target, stored for people reading the file.
    """

    def __init__(self, path: str | os.PathLike[str], *, target: str) -> None:
        self.path = Path(path)
        self.journal_path = self.path.with_suffix(".journal")
        self.target = redact(target, queries="credentials")
        self.entries: dict[str, ManifestEntry] = {}
        self._journal: Any = None
        self._since_checkpoint = 0
        self._load()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, key: str) -> ManifestEntry | None:
        """The entry of ``key``, if any."""
        return self.entries.get(key)

    def record(self, key: str, entry: ManifestEntry) -> None:
        """Add or replace an entry and append it to the journal at once."""
        self.entries[key] = entry
        if self._journal is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = open(self.journal_path, "ab")  # noqa: SIM115 - closed in close()
        self._journal.write(orjson.dumps([key, *entry.to_list()]) + b"\n")
        self._since_checkpoint += 1
        if self._since_checkpoint % FLUSH_EVERY == 0:
            self._journal.flush()
        if self._since_checkpoint >= CHECKPOINT_EVERY:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the manifest atomically and empty the journal."""
        if self._journal is None and not self._since_checkpoint and self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "version": _VERSION,
            "target": self.target,
            "objects": {k: v.to_list() for k, v in self.entries.items()},
        }
        atomic_write(self.path, orjson.dumps(document))
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self.journal_path.unlink(missing_ok=True)
        self._since_checkpoint = 0

    def close(self) -> None:
        """Fold the journal into the manifest."""
        if self._journal is not None or self._since_checkpoint or self.journal_path.exists():
            self.checkpoint()

    def _load(self) -> None:
        if self.path.exists():
            try:
                document = orjson.loads(self.path.read_bytes())
                if document.get("version") == _VERSION:
                    self.entries = {k: ManifestEntry.from_list(v)
                                    for k, v in (document.get("objects") or {}).items()}
            except (OSError, orjson.JSONDecodeError, TypeError, ValueError) as exc:
                logger.warning("ignoring unreadable upload manifest %s: %s", self.path, exc)
                self.entries = {}
        if self.journal_path.exists():
            replayed = 0
            for line in self.journal_path.read_bytes().splitlines():
                try:
                    key, *rest = orjson.loads(line)
                    self.entries[str(key)] = ManifestEntry.from_list(rest)
                    replayed += 1
                except (orjson.JSONDecodeError, TypeError, ValueError):
                    continue  # a line torn by a crash
            self._since_checkpoint = replayed
            logger.info("resumed %d verified upload(s) from %s", replayed, self.journal_path.name)
