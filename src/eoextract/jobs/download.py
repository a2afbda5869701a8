"""Streamed, atomic and verified download of openEO batch job results.

The pieces, from the results document to files in place:

* :func:`parse_job_results` (from :mod:`eoextract.jobs.results`) reads the job's
  results document (a STAC Item or a STAC Collection with ``item`` links) into
  :class:`RemoteAsset` records;
* :func:`download_asset` streams one asset to a temporary file, hashing while it
  writes, resuming with HTTP ``Range`` after a broken connection and checking size
  and checksum when the backend announced them;
* :func:`place_file` moves a verified file to its final path, refusing any path
  that would leave the output folder;
* :func:`download_job_assets` does all of the above for the assets of one job in
  parallel, and records what it placed so that a rerun skips verified files.

Nothing here knows about STAC items beyond the results document: building items
from the downloaded files is :mod:`eoextract.extract.items`' job.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from eoextract.errors import ChecksumMismatch, DownloadError, UnsafeAssetPath
from eoextract.jobs.results import (
    RemoteAsset,
    ensure_inside,
    parse_job_results,
    redact_url,
    safe_relative_path,
)

__all__ = [
    "RemoteAsset",
    "DownloadedAsset",
    "BackendHeaders",
    "parse_job_results",
    "download_asset",
    "place_file",
    "download_job_assets",
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
#: Prefix of the temporary files written while downloading.
TEMP_PREFIX = ".eoextract-dl-"

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MANIFEST_VERSION = 1
_RACY_NS = 20_000_000  # file times closer than this to "now" may hide a rewrite

Headers = Mapping[str, str] | Callable[[str], Mapping[str, str]]


@dataclass(frozen=True)
class DownloadedAsset:
    """A result asset that is in its final place and verified."""

    #: The asset as announced by the backend.
    asset: RemoteAsset
    #: Final path of the file.
    path: Path
    #: Size in bytes.
    size: int
    #: Lower-case hex SHA-256 of the file as placed.
    sha256: str
    #: True when a previous run had already placed and verified the file.
    reused: bool = False
    #: Modification time (ns) of the file when it was verified, when old enough to
    #: be trusted; with ``size`` it tells whether later code has changed the file
    #: (see :func:`eoextract.extract.items.refresh_file_metadata`).
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


# --------------------------------------------------------------------------- download


class _Transient(Exception):
    """A failure worth resuming after (5xx, 429, short body)."""


def _headers_for(headers: Headers | None, url: str) -> dict[str, str]:
    if headers is None:
        return {}
    if callable(headers):
        return dict(headers(url))
    return dict(headers)


def _content_range(resp: requests.Response) -> tuple[int, int | None] | None:
    """``(first byte, total or None)`` of a 206 answer's ``Content-Range``."""
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
    if not match:
        return None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


class _Hasher:
    """SHA-256 computed in a helper thread, so hashing overlaps with receiving.

    ``hashlib`` releases the GIL on large updates; with a spare core the hash then
    costs no download time.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Drop what was hashed so far and start again."""
        if getattr(self, "_thread", None) is not None:
            self.close()
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="eoextract-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._hash.hexdigest()


def _chunks(resp: requests.Response, chunk_size: int) -> Iterator[bytes]:
    """The body in chunks of at most ``chunk_size`` bytes, as they arrive.

    ``read1`` hands over what has arrived instead of waiting for a full chunk, so
    after a broken connection little more than the bytes in flight is lost.
    """
    read1 = getattr(resp.raw, "read1", None)
    if read1 is None:
        yield from resp.iter_content(chunk_size=chunk_size)
        return
    while chunk := read1(chunk_size, decode_content=True):
        yield chunk


def _stream_into(
    session: requests.Session,
    asset: RemoteAsset,
    fh: Any,
    *,
    headers: Headers | None,
    chunk_size: int,
    timeout: float | tuple[float, float],
    max_resumes: int,
    backoff: float,
) -> tuple[int, str]:
    """Stream the asset into ``fh``, resuming with ``Range`` after transient failures.

    Returns:
        ``(bytes written, hex sha256)``.
    """
    hasher = _Hasher()
    try:
        return _stream_loop(session, asset, fh, hasher, headers=headers, chunk_size=chunk_size,
                            timeout=timeout, max_resumes=max_resumes, backoff=backoff)
    finally:
        hasher.close()


def _stream_loop(
    session: requests.Session,
    asset: RemoteAsset,
    fh: Any,
    hasher: _Hasher,
    *,
    headers: Headers | None,
    chunk_size: int,
    timeout: float | tuple[float, float],
    max_resumes: int,
    backoff: float,
) -> tuple[int, str]:
    offset = 0
    failures = 0
    total: int | None = None
    while True:
        request_headers = {"Accept-Encoding": "identity", **_headers_for(headers, asset.href)}
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        try:
            with session.get(asset.href, headers=request_headers, stream=True, timeout=timeout) as resp:
                status = resp.status_code
                if offset and status == 416 and total == offset:
                    break
                if status in _RETRYABLE_STATUS:
                    raise _Transient(f"HTTP {status}")
                if status >= 400:
                    raise DownloadError(
                        f"Download of asset {asset.name!r} from {redact_url(asset.href)} failed: "
                        f"HTTP {status}",
                        asset=asset.name,
                    )
                if offset:
                    content_range = _content_range(resp) if status == 206 else None
                    if content_range is None or content_range[0] != offset:
                        logger.info("Server ignored the range request for %r; restarting", asset.name)
                        fh.seek(0)
                        fh.truncate()
                        hasher.reset()
                        offset = 0
                    elif content_range[1] is not None:
                        total = content_range[1]
                if not offset:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                for chunk in _chunks(resp, chunk_size):
                    fh.write(chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
            if total is not None and offset < total:
                raise _Transient(f"connection closed after {offset} of {total} bytes")
            return offset, hasher.hexdigest()
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError, _Transient) as exc:
            failures += 1
            if failures > max_resumes:
                raise DownloadError(
                    f"Download of asset {asset.name!r} from {redact_url(asset.href)} failed after "
                    f"{failures} tries: {exc}",
                    asset=asset.name,
                ) from exc
            wait = min(backoff * 2 ** (failures - 1), 30.0)
            logger.warning(
                "Download of asset %r interrupted at byte %d (%s); resuming in %.1f s",
                asset.name, offset, type(exc).__name__ if not isinstance(exc, _Transient) else exc, wait,
            )
            if wait:
                time.sleep(wait)
    return offset, hasher.hexdigest()


def _mismatch(asset: RemoteAsset, size: int, sha256: str) -> str | None:
    if asset.size is not None and size != asset.size:
        return f"size {size} instead of {asset.size}"
    if asset.checksum is not None and sha256 != asset.checksum:
        return f"sha256 {sha256} instead of {asset.checksum}"
    return None


def _download(
    session: requests.Session,
    asset: RemoteAsset,
    tmp_dir: Path,
    *,
    headers: Headers | None = None,
    chunk_size: int = 1 << 20,
    timeout: float | tuple[float, float] = (10.0, 300.0),
    max_resumes: int = 5,
    max_attempts: int = 3,
    backoff: float = 0.5,
) -> tuple[Path, int, str]:
    scheme = urlsplit(asset.href).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"Asset {asset.name!r} has an unsupported URL scheme {scheme!r}", asset=asset.name)
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    problem = ""
    for attempt in range(1, max_attempts + 1):
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=asset.suffix, dir=tmp_dir)
        tmp_path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:
                size, sha256 = _stream_into(
                    session, asset, fh, headers=headers, chunk_size=chunk_size, timeout=timeout,
                    max_resumes=max_resumes, backoff=backoff,
                )
                fh.flush()
                _fdatasync(fh.fileno())
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        problem = _mismatch(asset, size, sha256) or ""
        if not problem:
            logger.debug("Downloaded asset %r (%d bytes, sha256 %s)", asset.name, size, sha256)
            return tmp_path, size, sha256
        tmp_path.unlink(missing_ok=True)
        logger.warning(
            "Asset %r failed verification (%s), attempt %d of %d", asset.name, problem, attempt, max_attempts
        )
    raise ChecksumMismatch(
        f"Asset {asset.name!r} failed verification {max_attempts} times: {problem}", asset=asset.name
    )


def download_asset(
    session: requests.Session,
    asset: RemoteAsset,
    tmp_dir: Path,
    *,
    headers: Headers | None = None,
    chunk_size: int = 1 << 20,
    timeout: float | tuple[float, float] = (10.0, 300.0),
    max_resumes: int = 5,
    max_attempts: int = 3,
    backoff: float = 0.5,
) -> Path:
    """Download one asset to a new temporary file in ``tmp_dir`` and verify it.

    The content is hashed while it streams. After a broken connection, a 5xx or a
    429 the download resumes where it stopped with an HTTP ``Range`` request (or
    starts over if the server ignores ranges), at most ``max_resumes`` times. The
    size and SHA-256 are checked when the backend announced them; a mismatch
    downloads the file again, at most ``max_attempts`` times in all. The file is
    fsynced before it is returned; on any error it is removed.

    Args:
        session: HTTP session (see :func:`session_for`).
        asset: The asset to download.
        tmp_dir: Folder for the temporary file; put it on the filesystem of the
            final destination so the final move is an atomic rename.
        headers: Extra request headers, or a callable giving them per URL
            (:class:`BackendHeaders`).
        chunk_size: Bytes read per chunk.
        timeout: ``requests`` timeout (connect, read) in seconds.
        max_resumes: Resumptions allowed per attempt after transient failures.
        max_attempts: Full downloads allowed when verification fails.
        backoff: First wait in seconds before resuming (doubles each time, ≤30 s).

    Returns:
        Path of the verified temporary file; the caller moves it (:func:`place_file`).

    Raises:
        ChecksumMismatch: The content did not match size/checksum ``max_attempts`` times.
        DownloadError: HTTP 4xx, transient failures beyond ``max_resumes``, or an
            unsupported URL scheme.
    """
    path, _, _ = _download(
        session, asset, tmp_dir, headers=headers, chunk_size=chunk_size, timeout=timeout,
        max_resumes=max_resumes, max_attempts=max_attempts, backoff=backoff,
    )
    return path


# --------------------------------------------------------------------------- placement


def _fdatasync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def place_file(tmp_path: Path, final_path: Path, root: Path, *, sync_dir: bool = True) -> Path:
    """Move a verified temporary file to its final path inside ``root``, atomically.

    Args:
        tmp_path: The file to move (already flushed to disk).
        final_path: Where it goes; a relative path is taken relative to ``root``.
        root: The output folder the file must stay in.
        sync_dir: Flush the destination folder so the rename survives a crash; a
            caller placing many files may do that once per folder instead.

    Returns:
        The resolved final path.

    Raises:
        UnsafeAssetPath: If ``final_path`` contains ``..``, resolves outside ``root``
            (also through a symbolic link) or is ``root`` itself.
        DownloadError: If ``final_path`` is an existing folder.
    """
    final = ensure_inside(final_path, root)
    if final.is_dir():
        raise DownloadError(f"Cannot place a file at {final}: it is a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    # Check again: a link may have appeared while the folders were created.
    final = ensure_inside(final, root)
    try:
        os.replace(tmp_path, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        fd, staging_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=final.parent)
        staging = Path(staging_name)
        try:
            with open(tmp_path, "rb") as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(staging, final)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        Path(tmp_path).unlink(missing_ok=True)
    if sync_dir:
        _fsync_dir(final.parent)
    return final


def remove_stale_temp_files(folder: Path, older_than: float = 24 * 3600.0) -> int:
    """Remove temporary download files left in ``folder`` by interrupted runs.

    Args:
        folder: The temporary folder (by default ``<root>/.eoextract/tmp``).
        older_than: Only files not modified for this many seconds are removed, so
            downloads still running elsewhere are left alone.

    Returns:
        How many files were removed.
    """
    removed = 0
    cutoff = time.time() - older_than
    for path in Path(folder).glob(TEMP_PREFIX + "*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed


# --------------------------------------------------------------------------- one job


def _sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            hasher.update(chunk)
    return hasher.hexdigest()


class _Manifest:
    """Per-job record of placed files: asset name → path, size, sha256, mtime."""

    def __init__(self, root: Path, job_key: str) -> None:
        self.root = root
        self.job_key = job_key
        digest = hashlib.sha256(job_key.encode("utf-8")).hexdigest()[:32]
        self.path = root / STATE_DIR / "downloads" / f"{digest}.json"
        self._lock = threading.Lock()
        self.entries: dict[str, dict[str, Any]] = {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") == _MANIFEST_VERSION and data.get("job_key") == job_key:
                self.entries = {k: v for k, v in data.get("assets", {}).items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            logger.warning("Ignoring unreadable download record %s: %s", self.path, exc)

    def reusable(self, asset: RemoteAsset) -> DownloadedAsset | None:
        entry = self.entries.get(asset.name)
        if entry is None:
            return None
        try:
            path = ensure_inside(entry["path"], self.root)
            size, sha256 = int(entry["size"]), str(entry["sha256"])
            mtime_ns = entry.get("mtime_ns")
            stat = path.stat()
        except (KeyError, TypeError, ValueError, OSError, UnsafeAssetPath):
            return None
        if stat.st_size != size or _mismatch(asset, size, sha256):
            return None
        if stat.st_mtime_ns != mtime_ns:
            if _sha256_file(path) != sha256:
                return None
            mtime_ns = self.record(asset, path, size, sha256)
        return DownloadedAsset(asset=asset, path=path, size=size, sha256=sha256, reused=True,
                               mtime_ns=mtime_ns)

    def record(self, asset: RemoteAsset, path: Path, size: int, sha256: str) -> int | None:
        """Record a placed file; return its modification time (ns) if it can be trusted.

        File times tick coarsely (a few ms): a file written less than a tick ago
        could be rewritten with the same size and time, so its time is not kept
        and the next check hashes the file instead.
        """
        mtime_ns: int | None = path.stat().st_mtime_ns
        if time.time_ns() - mtime_ns < _RACY_NS:
            mtime_ns = None
        with self._lock:
            self.entries[asset.name] = {
                "path": path.relative_to(self.root.resolve()).as_posix(),
                "size": size,
                "sha256": sha256,
                "mtime_ns": mtime_ns,
            }
            document = {"version": _MANIFEST_VERSION, "job_key": self.job_key, "assets": self.entries}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, staging_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".json", dir=self.path.parent)
            try:
                # Not fsynced: the record only saves work. Losing it in a crash means
                # downloading again; it never vouches for a file that is not on disk,
                # because files are flushed before they are placed and recorded.
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(document, fh, indent=1, sort_keys=True)
                os.replace(staging_name, self.path)
            except BaseException:
                Path(staging_name).unlink(missing_ok=True)
                raise
        return mtime_ns


def _default_job_key(assets: Sequence[RemoteAsset]) -> str:
    urls = sorted(urlsplit(a.href)._replace(query="", fragment="").geturl() for a in assets)
    return "urls:" + hashlib.sha256("\n".join(urls).encode("utf-8")).hexdigest()


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
    file is recorded in ``<root>/.eoextract/downloads/<hash of job_key>.json``; on
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
            ``timeout``, ``max_resumes``, ``max_attempts``, ``backoff``).

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

    def work(asset: RemoteAsset) -> DownloadedAsset:
        if skip_verified:
            reused = manifest.reusable(asset)
            if reused is not None:
                claim(reused.path, asset)
                logger.debug("Asset %r already in place at %s", asset.name, reused.path)
                return reused
        tmp_path, size, sha256 = _download(session, asset, tmp_dir, headers=headers, **download_options)
        try:
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
        mtime_ns = manifest.record(asset, final, size, sha256)
        logger.info("Placed asset %r at %s (%d bytes)", asset.name, final, size)
        return DownloadedAsset(asset=asset, path=final, size=size, sha256=sha256, mtime_ns=mtime_ns)

    workers = max(1, min(max_workers, len(assets)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eoextract-download") as pool:
        futures = [pool.submit(work, asset) for asset in assets]
    results: list[DownloadedAsset] = []
    failures: list[tuple[RemoteAsset, BaseException]] = []
    for asset, future in zip(assets, futures):
        exc = future.exception()
        if exc is None:
            results.append(future.result())
        else:
            failures.append((asset, exc))
    for folder in {d.path.parent for d in results if not d.reused}:
        _fsync_dir(folder)
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
