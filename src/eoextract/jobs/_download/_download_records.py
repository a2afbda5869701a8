"""Per-job download records: which files a job's download placed and verified.

A rerun of a job's download reuses a recorded file that is still there with the recorded
size and checksum (and the backend's, when announced) instead of downloading it again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from eoextract._util.checksum import algorithm_of, file_checksum, multihash
from eoextract._util.files import atomic_open
from eoextract._util.hrefs import ensure_inside
from eoextract.errors import UnsafeAssetPath
from eoextract.jobs._download._disk import STATE_DIR, TEMP_PREFIX
from eoextract.jobs._download._document import RemoteAsset
from eoextract.jobs._download._transfer import verification_problem

logger = logging.getLogger(__name__)

_MANIFEST_VERSION = 2  # 1: one JSON document (<hash>.json), read and carried over
_RACY_NS = 20_000_000  # file times closer than this to "now" may hide a rewrite


@dataclass(frozen=True)
class DownloadedAsset:
    """A result asset that is in its final place and verified."""

    #: The asset as announced by the backend.
    asset: RemoteAsset
    #: Final path of the file.
    path: Path
    #: Size in bytes.
    size: int
    #: Hex multihash of the file as placed (``file:checksum``; see :mod:`eoextract._util.checksum`).
    checksum: str
    #: True when a previous run had already placed and verified the file.
    reused: bool = False
    #: Modification time (ns) of the file when it was verified, when old enough to
    #: be trusted; with ``size`` it tells whether later code has changed the file
    #: (a caller that rewrote it must hash it again).
    mtime_ns: int | None = None


class _Manifest:
    """Per-job record of placed files: asset name → path, size, checksum, mtime.

    Kept as JSON lines in ``<root>/.eoextract/downloads/<hash of job_key>.jsonl``: a
    header line (version, job key), then one ``[asset name, entry]`` line per placed
    file, appended as it is placed; later lines replace earlier ones. Appending costs
    one write per file however many the job has. The file is rewritten whole (atomically)
    only to drop superseded or torn lines, and to carry over a record of the older
    single-document form (``<hash>.json``).
    """

    def __init__(self, root: Path, job_key: str) -> None:
        self.root = root
        self.job_key = job_key
        digest = hashlib.sha256(job_key.encode("utf-8")).hexdigest()[:32]
        self.path = root / STATE_DIR / "downloads" / f"{digest}.jsonl"
        self._legacy_path = self.path.with_suffix(".json")
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        self._rewrite = not self._load()

    def _header(self) -> bytes:
        return orjson.dumps({"version": _MANIFEST_VERSION, "job_key": self.job_key}) + b"\n"

    def _load(self) -> bool:
        """Read the record; ``False`` when it must be rewritten before the next append."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return self._load_legacy()
        except OSError as exc:
            logger.warning("Ignoring unreadable download record %s: %s", self.path, exc)
            return False
        if not data:
            return True  # created by a run stopped before its first line: the first append writes the header
        lines = data.split(b"\n")
        try:
            header = orjson.loads(lines[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("version") != _MANIFEST_VERSION \
                or header.get("job_key") != self.job_key:
            logger.warning("Ignoring download record %s: not a record of job %r", self.path, self.job_key)
            return False
        body = [line for line in lines[1:] if line]
        for line in body:
            try:
                name, entry = orjson.loads(line)
            except (ValueError, TypeError):
                continue  # torn by a crash
            if isinstance(name, str) and isinstance(entry, dict):
                self.entries[name] = entry
        # compact when lines were torn (the next append must start a line) or many superseded
        return data.endswith(b"\n") and len(body) <= 2 * len(self.entries) + 8

    def _load_legacy(self) -> bool:
        try:
            data = orjson.loads(self._legacy_path.read_bytes())
        except FileNotFoundError:
            return True  # nothing yet: the first append writes the header
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring unreadable download record %s: %s", self._legacy_path, exc)
            return False
        if isinstance(data, dict) and data.get("version") == 1 and data.get("job_key") == self.job_key:
            assets = data.get("assets")
            if isinstance(assets, dict):
                self.entries = {k: v for k, v in assets.items() if isinstance(v, dict)}
        return False

    def reusable(self, asset: RemoteAsset) -> DownloadedAsset | None:
        entry = self.entries.get(asset.name)
        if entry is None:
            return None
        try:
            path = ensure_inside(entry["path"], self.root)
            size = int(entry["size"])
            # records written before checksums were multihashes hold a hex "sha256"
            checksum = str(entry["checksum"]) if "checksum" in entry else multihash("sha2-256", str(entry["sha256"]))
            algorithm = algorithm_of(checksum)
            mtime_ns = entry.get("mtime_ns")
            stat = path.stat()
        except (KeyError, TypeError, ValueError, OSError, UnsafeAssetPath):
            return None
        if stat.st_size != size:
            return None
        wanted = algorithm_of(asset.checksum) if asset.checksum is not None else algorithm
        if stat.st_mtime_ns != mtime_ns or wanted != algorithm:
            # changed since, or announced with another hash function: hash it again
            fresh, _ = file_checksum(path, wanted)
            if wanted == algorithm and fresh != checksum:
                return None
            checksum = fresh
            if verification_problem(asset, size, checksum):
                return None
            mtime_ns = self.record(asset, path, size, checksum)
        elif verification_problem(asset, size, checksum):
            return None
        return DownloadedAsset(asset=asset, path=path, size=size, checksum=checksum, reused=True,
                               mtime_ns=mtime_ns)

    def record(self, asset: RemoteAsset, path: Path, size: int, checksum: str) -> int | None:
        """Record a placed file; return its modification time (ns) if it can be trusted.

        File times tick coarsely (a few ms): a file written less than a tick ago
        could be rewritten with the same size and time, so its time is not kept
        and the next check hashes the file instead.

        Not fsynced: the record only saves work. Losing it in a crash means downloading
        again; it never vouches for a file that is not on disk, because files are
        flushed before they are placed and recorded.
        """
        mtime_ns: int | None = path.stat().st_mtime_ns
        if time.time_ns() - mtime_ns < _RACY_NS:
            mtime_ns = None
        entry = {
            "path": path.relative_to(self.root.resolve()).as_posix(),
            "size": size,
            "checksum": checksum,
            "mtime_ns": mtime_ns,
        }
        with self._lock:
            self.entries[asset.name] = entry
            if self._rewrite:
                self._write_all()
            else:
                if self._fd is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    if not os.fstat(self._fd).st_size:
                        os.write(self._fd, self._header())
                os.write(self._fd, orjson.dumps([asset.name, entry]) + b"\n")
        return mtime_ns

    def _write_all(self) -> None:
        """Replace the record with the header and one line per entry."""
        self.close()
        lines = [self._header(), *(orjson.dumps([k, v]) + b"\n" for k, v in self.entries.items())]
        with atomic_open(self.path, "wb", prefix=TEMP_PREFIX, suffix=".jsonl", fsync=False) as fh:
            fh.writelines(lines)
        self._legacy_path.unlink(missing_ok=True)
        self._rewrite = False

    def close(self) -> None:
        """Close the record file (a later :meth:`record` opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
