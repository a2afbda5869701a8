"""Streamed, atomic and verified download of openEO batch job results.

The pieces, from the results document to files in place (all importable from here):

* :func:`parse_job_results` (:mod:`eoextract.jobs._download._document`) reads the job's results
  document (a STAC Item or a STAC Collection with ``item`` links) into
  :class:`RemoteAsset` records;
* :func:`download_asset` (:mod:`eoextract.jobs._download._transfer`) streams one asset to a
  temporary file, hashing while it writes, resuming with HTTP ``Range`` after a
  broken connection and checking size and checksum when the backend announced them;
* :func:`place_file` (:mod:`eoextract.jobs._download._transfer`) moves a verified file to its
  final path, refusing any path that would leave the output folder;
* :func:`download_job_assets` does all of the above for the assets of one job in
  parallel, and records what it placed so that a rerun skips verified files;
* :func:`session_for` takes the HTTP session and credentials of an
  ``openeo.Connection``.

Nothing here knows about STAC items beyond the results document: building items
from the downloaded files is :mod:`eoextract.extract._stac_item`' job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from eoextract._util.checksum import algorithm_of, file_checksum, multihash
from eoextract.errors import DownloadError, UnsafeAssetPath
from eoextract.jobs._download._document import (
    RemoteAsset,
    ensure_inside,
    parse_job_results,
    safe_relative_path,
)
from eoextract.jobs._download._transfer import (
    TEMP_PREFIX,
    Headers,
    download_asset,
    download_to_temp,
    fdatasync_file,
    fsync_dir,
    place_file,
    remove_stale_temp_files,
    verification_problem,
)

__all__ = [
    "RemoteAsset",
    "DownloadedAsset",
    "BackendHeaders",
    "parse_job_results",
    "download_asset",
    "place_file",
    "download_job_assets",
    "fetch_job_assets",
    "session_for",
    "ensure_inside",
    "safe_relative_path",
    "remove_stale_temp_files",
    "STATE_DIR",
    "TEMP_PREFIX",
]

logger = logging.getLogger(__name__)

#: Folder inside the output folder that holds temporary files and download records.
STATE_DIR = ".eoextract"
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
    #: (see :func:`eoextract.extract._stac_item.refresh_file_metadata`).
    mtime_ns: int | None = None


@dataclass(frozen=True)
class BackendHeaders:
    """Request headers carrying a backend's credentials, sent only to that backend.

    Call it with a URL to get the headers for that URL: the ``Authorization``
    header goes only to URLs under the backend's root URL (as the openEO client
    itself does), never to object stores or other hosts the assets may live on.
    """

    #: Root URL of the backend the credentials belong to.
    root_url: str
    authorization: str | None = field(default=None, repr=False)

    def __call__(self, url: str) -> dict[str, str]:
        if self.authorization and _same_origin_under(url, self.root_url):
            return {"Authorization": self.authorization}
        return {}


def _same_origin_under(url: str, root_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(root_url)
    if (a.scheme, a.netloc.lower()) != (b.scheme, b.netloc.lower()):
        return False
    root_path = b.path.rstrip("/")
    return a.path == root_path or a.path.startswith(root_path + "/")


def session_for(connection: Any) -> tuple[requests.Session, BackendHeaders]:
    """The HTTP session and credentials of an ``openeo.Connection``, for downloads.

    Reuses the connection's own ``requests.Session`` (its adapters and retry
    settings) and turns its current auth into a :class:`BackendHeaders`, which
    never shows the token in ``repr`` or logs.

    Args:
        connection: An ``openeo.Connection`` (authenticated or not).

    Returns:
        ``(session, headers)`` to pass to :func:`download_asset` /
        :func:`download_job_assets`.
    """
    session = connection.session
    root_url = connection.root_url
    authorization = None
    auth = getattr(connection, "auth", None)
    if auth is not None:
        probe = requests.Request("GET", root_url).prepare()
        probe.headers.clear()
        probe = auth(probe) or probe
        authorization = probe.headers.get("Authorization")
    return session, BackendHeaders(root_url=root_url, authorization=authorization)


# --------------------------------------------------------------------------- one job


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = [self._header(), *(orjson.dumps([k, v]) + b"\n" for k, v in self.entries.items())]
        fd, staging_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".jsonl", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.writelines(lines)
            os.replace(staging_name, self.path)
        except BaseException:
            Path(staging_name).unlink(missing_ok=True)
            raise
        self._legacy_path.unlink(missing_ok=True)
        self._rewrite = False

    def close(self) -> None:
        """Close the record file (a later :meth:`record` opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _default_job_key(assets: Sequence[RemoteAsset]) -> str:
    urls = sorted(urlsplit(a.href)._replace(query="", fragment="").geturl() for a in assets)
    return "urls:" + hashlib.sha256("\n".join(urls).encode("utf-8")).hexdigest()


def fetch_job_assets(connection: Any, job_id: str, *, timeout: float = 60.0
                     ) -> tuple[list[RemoteAsset], requests.Session, BackendHeaders]:
    """Read a batch job's results document and its assets, with what downloads need.

    Follows the ``item`` links of a Collection-style document (with the backend's
    credentials only where they belong).

    Args:
        connection: An ``openeo.Connection`` to the job's backend.
        job_id: The backend's job id.
        timeout: Seconds to wait for each document.

    Returns:
        ``(assets, session, headers)`` ready for :func:`download_job_assets`.
    """
    session, headers = session_for(connection)
    path = f"/jobs/{job_id}/results"
    document = connection.get(path, expected_status=200).json()

    def fetch(url: str) -> dict:
        response = session.get(url, headers=headers(url), timeout=timeout)
        response.raise_for_status()
        return response.json()

    assets = parse_job_results(document, base_url=connection.build_url(path), fetch=fetch)
    return assets, session, headers


def download_job_assets(
    session: requests.Session,
    assets: Iterable[RemoteAsset],
    root: Path,
    choose_path: Callable[[RemoteAsset, Path], Path | str],
    *,
    max_workers: int = 4,
    skip_verified: bool = True,
    headers: Headers | None = None,
    job_key: str | None = None,
    tmp_dir: Path | None = None,
    **download_options: Any,
) -> list[DownloadedAsset]:
    """Download, verify and place the assets of one job, in parallel.

    Each asset is streamed to ``<root>/.eoextract/tmp`` and verified
    (:func:`download_asset`); ``choose_path(asset, tmp_path)`` then gives its final
    path (it may open the temporary file; calls are serialised, so it need not be
    thread-safe), and the file is moved there (:func:`place_file`). Every placed
    file is recorded in ``<root>/.eoextract/downloads/<hash of job_key>.jsonl``; on
    a rerun an asset whose recorded file is still there with the recorded size and
    checksum (and the backend's, when announced) is not downloaded again, and
    ``choose_path`` is not called for it.

    If some assets fail, the others are still placed and recorded, then the first
    failure is raised (with a note listing all of them).

    Args:
        session: HTTP session (see :func:`session_for`).
        assets: The job's assets (:func:`parse_job_results`).
        root: Output folder; every file stays inside it.
        choose_path: ``(asset, tmp_path) -> final path`` (absolute inside ``root`` or
            relative to it).
        max_workers: Parallel downloads.
        skip_verified: Reuse files placed and verified by a previous run.
        headers: Extra request headers or a per-URL callable (:class:`BackendHeaders`).
        job_key: Stable key of the job in the job database, naming its download
            record; by default derived from the asset URLs without query strings.
        tmp_dir: Folder for temporary files (default ``<root>/.eoextract/tmp``); keep it
            on the filesystem of ``root``.
        **download_options: Passed on to :func:`download_asset` (``chunk_size``,
            ``timeout``, ``max_resumes``, ``max_attempts``, ``backoff``, ``fsync``).

    Returns:
        One :class:`DownloadedAsset` per asset, in input order.

    Raises:
        UnsafeAssetPath: An asset name or a chosen path would leave ``root``.
        DownloadError: No assets, duplicate asset names, two assets sent to the same
            path, or a failed download (:class:`ChecksumMismatch` after failed
            verification).
        Exception: Whatever ``choose_path`` raised, with a note naming the asset.
    """
    assets = list(assets)
    if not assets:
        raise DownloadError("The job has no result assets", job_key=job_key)
    seen: set[str] = set()
    for asset in assets:
        try:
            safe_relative_path(asset.name)
        except UnsafeAssetPath as exc:
            exc.job_key = job_key
            raise
        if asset.name in seen:
            raise DownloadError(f"Duplicate asset name {asset.name!r}", job_key=job_key, asset=asset.name)
        seen.add(asset.name)

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    root_resolved = root.resolve()
    tmp_dir = Path(tmp_dir) if tmp_dir is not None else root / STATE_DIR / "tmp"
    manifest = _Manifest(root, job_key or _default_job_key(assets))
    choose_lock = threading.Lock()
    claims_lock = threading.Lock()
    claimed: dict[Path, str] = {}

    def claim(path: Path, asset: RemoteAsset) -> None:
        with claims_lock:
            other = claimed.setdefault(path, asset.name)
        if other != asset.name:
            raise DownloadError(
                f"Assets {other!r} and {asset.name!r} were both given the path {path}",
                job_key=job_key, asset=asset.name,
            )

    fsync = bool(download_options.pop("fsync", True))

    def work(asset: RemoteAsset) -> DownloadedAsset | Future[DownloadedAsset]:
        if skip_verified:
            reused = manifest.reusable(asset)
            if reused is not None:
                claim(reused.path, asset)
                logger.debug("Asset %r already in place at %s", asset.name, reused.path)
                return reused
        # The flush to disk and the placement run in another thread, so that this one
        # receives the next asset while the disk writes this one.
        tmp_path, size, checksum = download_to_temp(
            session, asset, tmp_dir, headers=headers, fsync=False, early_writeback=fsync, **download_options)
        if not fsync:  # nothing to overlap
            return finish(asset, tmp_path, size, checksum)
        try:
            return finishers.submit(finish, asset, tmp_path, size, checksum)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise

    def finish(asset: RemoteAsset, tmp_path: Path, size: int, checksum: str) -> DownloadedAsset:
        try:
            if fsync:
                fdatasync_file(tmp_path)
            with choose_lock:
                try:
                    chosen = choose_path(asset, tmp_path)
                except Exception as exc:
                    exc.add_note(f"while choosing the output path of asset {asset.name!r}")
                    raise
            if not isinstance(chosen, (str, os.PathLike)):
                raise DownloadError(
                    f"The output path of asset {asset.name!r} is {type(chosen).__name__}, not a path",
                    job_key=job_key, asset=asset.name,
                )
            claim(ensure_inside(chosen, root_resolved), asset)
            final = place_file(tmp_path, Path(chosen), root_resolved, sync_dir=False)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        mtime_ns = manifest.record(asset, final, size, checksum)
        logger.info("Placed asset %r at %s (%d bytes)", asset.name, final, size)
        return DownloadedAsset(asset=asset, path=final, size=size, checksum=checksum, mtime_ns=mtime_ns)

    workers = max(1, min(max_workers, len(assets)))
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eoextract-place") as finishers:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eoextract-download") as pool:
                futures = [pool.submit(work, asset) for asset in assets]
            outcomes: list[tuple[RemoteAsset, DownloadedAsset | None, BaseException | None]] = []
            for asset, future in zip(assets, futures):
                exc = future.exception()
                done = future.result() if exc is None else None
                if isinstance(done, Future):
                    exc = done.exception()
                    done = done.result() if exc is None else None
                outcomes.append((asset, done, exc))
    finally:
        manifest.close()
    results = [done for _, done, _ in outcomes if done is not None]
    failures = [(asset, exc) for asset, _, exc in outcomes if exc is not None]
    if fsync:
        for folder in {d.path.parent for d in results if not d.reused}:
            fsync_dir(folder)
    if failures:
        first = failures[0][1]
        if isinstance(first, DownloadError):
            first.job_key = first.job_key or job_key
            first.asset = first.asset or failures[0][0].name
        if len(failures) > 1:
            first.add_note(
                f"{len(failures)} of {len(assets)} assets failed: "
                + ", ".join(f"{a.name!r} ({type(e).__name__})" for a, e in failures)
            )
        raise first
    return results
