"""Moving one result asset from a URL to its place on disk, verified.

:func:`download_asset` streams an asset into a temporary file, hashing it as it
arrives, resuming with HTTP ``Range`` after broken connections and checking size and
checksum against what the backend announced; :func:`place_file` then renames it into
the output folder, refusing paths that would leave it. :mod:`eoextract.jobs._download`
builds the per-job, parallel and restartable download on these two.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from eoextract._util.checksum import algorithm_of, multihash, new_hasher
from eoextract.errors import ChecksumMismatch, DownloadError
from eoextract.jobs._download._document import RemoteAsset, ensure_inside, redact_url

__all__ = [
    "Headers",
    "TEMP_PREFIX",
    "download_asset",
    "download_to_temp",
    "fdatasync_file",
    "fsync_dir",
    "verification_problem",
    "place_file",
    "remove_stale_temp_files",
]

logger = logging.getLogger(__name__)

#: Prefix of the temporary files written while downloading.
TEMP_PREFIX = ".eoextract-dl-"

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Request headers, or a callable giving the headers for a URL.
Headers = Mapping[str, str] | Callable[[str], Mapping[str, str]]


class _Transient(Exception):
    """A failure worth resuming after (5xx, 429, short body)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


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


#: Hash functions fast enough (several GB/s) that hashing inline costs less than
#: handing each chunk to a helper thread.
_INLINE_ALGORITHMS = frozenset({"blake3"})


class _Hasher:
    """The content's checksum, computed while it streams.

    Slower hash functions (SHA-256) run in a helper thread, so hashing overlaps with
    receiving (``hashlib`` releases the GIL on large updates; with a spare core the hash
    then costs no download time); BLAKE3 runs inline.
    """

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.reset()

    def reset(self) -> None:
        """Drop what was hashed so far and start again."""
        if getattr(self, "_thread", None) is not None:
            self.close()
        self._hash = new_hasher(self.algorithm)
        self._thread: threading.Thread | None = None
        if self.algorithm not in _INLINE_ALGORITHMS:
            self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
            self._thread = threading.Thread(target=self._run, name="eoextract-hash", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._thread is None:
            self._hash.update(chunk)
        else:
            self._queue.put(chunk)

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def checksum(self) -> str:
        """The multihash of everything hashed."""
        self.close()
        return multihash(self.algorithm, self._hash.hexdigest())


def _libc_sync_file_range() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = _libc_sync_file_range()


class _EarlyWriteback:
    """Starts the kernel's writeback of a file while it is still being written.

    Every ``step`` bytes the range written since the last call is handed to Linux's
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which returns at once; the disk then
    writes while the download goes on, and the final ``fdatasync`` finds little left to
    flush. Elsewhere (no ``sync_file_range``) it does nothing.
    """

    def __init__(self, fh: Any, step: int = 4 << 20, *, enabled: bool = True) -> None:
        self.fh = fh
        self.step = step
        #: Bytes handed to the disk so far.
        self.started = 0
        self.enabled = enabled and _sync_file_range is not None

    def advance(self, offset: int) -> None:
        """Hand what was written up to ``offset`` to the disk, once ``step`` bytes piled up."""
        if offset - self.started < self.step or not self.enabled:
            return
        self.fh.flush()
        if _sync_file_range(self.fh.fileno(), ctypes.c_int64(self.started),
                            ctypes.c_int64(offset - self.started), _SYNC_FILE_RANGE_WRITE):
            # not supported here (a pipe, some network file systems): the final flush does it all
            logger.debug("sync_file_range failed (errno %d); writing back at the end", ctypes.get_errno())
            self.enabled = False
            return
        self.started = offset


def _chunks(resp: requests.Response, chunk_size: int) -> Iterator[bytes]:
    """The body in chunks of ``chunk_size`` bytes (the last one shorter).

    A body without a content encoding is read undecoded, which spares urllib3's
    decoding buffer a copy of every byte. Full-size reads cost less than half the CPU
    per byte of ``read1``'s "whatever has arrived" (measured on loopback: 0.2 against
    0.3-0.5 ms per MB). A connection the server closes early loses nothing: the bytes
    before the close come back as a short chunk, so a resumed download asks for the
    first missing byte; a connection reset loses at most the chunk being read.
    """
    raw = resp.raw
    if not isinstance(raw, urllib3.response.HTTPResponse):  # another transport adapter
        yield from resp.iter_content(chunk_size=chunk_size)
        return
    decode = resp.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")
    while chunk := raw.read(chunk_size, decode_content=decode):
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
    early_writeback: bool = False,
) -> tuple[int, str]:
    """Stream the asset into ``fh``, resuming with ``Range`` after transient failures.

    Returns:
        ``(bytes written, multihash)``, hashed with the hash function of the announced
        checksum, or :data:`~eoextract._util.checksum.DEFAULT_ALGORITHM`.
    """
    hasher = _Hasher(algorithm_of(asset.checksum))
    writeback = _EarlyWriteback(fh, enabled=early_writeback)
    try:
        return _stream_loop(session, asset, fh, hasher, writeback, headers=headers, chunk_size=chunk_size,
                            timeout=timeout, max_resumes=max_resumes, backoff=backoff)
    finally:
        hasher.close()


def _stream_loop(
    session: requests.Session,
    asset: RemoteAsset,
    fh: Any,
    hasher: _Hasher,
    writeback: _EarlyWriteback,
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
                    raise _Transient(f"HTTP {status}", _retry_after(resp))
                if status >= 400:
                    raise DownloadError(
                        f"Download of asset {asset.name!r} from {redact_url(asset.href)} failed: "
                        f"HTTP {status}",
                        asset=asset.name,
                    )
                if offset:
                    content_range = _content_range(resp) if status == 206 else None
                    if content_range is None or content_range[0] != offset:
                        logger.info("Range request for %r not honoured; starting over", asset.name)
                        fh.seek(0)
                        fh.truncate()
                        hasher.reset()
                        offset = 0
                        if status == 206:  # a part we did not ask for: ask for the whole
                            raise _Transient("unexpected Content-Range")
                    elif content_range[1] is not None:
                        total = content_range[1]
                if not offset:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                for chunk in _chunks(resp, chunk_size):
                    fh.write(chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
                    writeback.advance(offset)
            if total is not None and offset < total:
                raise _Transient(f"connection closed after {offset} of {total} bytes")
            return offset, hasher.checksum()
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
            if isinstance(exc, _Transient) and exc.retry_after is not None:
                wait = max(wait, min(exc.retry_after, 60.0))
            logger.warning(
                "Download of asset %r interrupted at byte %d (%s); resuming in %.1f s",
                asset.name, offset, type(exc).__name__ if not isinstance(exc, _Transient) else exc, wait,
            )
            if wait:
                time.sleep(wait)
    return offset, hasher.checksum()


def verification_problem(asset: RemoteAsset, size: int, checksum: str) -> str | None:
    """What is wrong with downloaded content against the backend's size and checksum.

    Args:
        asset: The asset as announced.
        size: Bytes received.
        checksum: Multihash of the bytes received.

    Returns:
        A short description, or None when it matches (or nothing was announced).
    """
    if asset.size is not None and size != asset.size:
        return f"size {size} instead of {asset.size}"
    if asset.checksum is not None and checksum != asset.checksum:
        return f"checksum {checksum} instead of {asset.checksum}"
    return None


def download_to_temp(
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
    fsync: bool = True,
    early_writeback: bool | None = None,
) -> tuple[Path, int, str]:
    """:func:`download_asset`, also returning the size and checksum it computed.

    ``early_writeback`` (default: ``fsync``) starts writing the file to disk while it
    is received, for a caller that flushes it later (:func:`fdatasync_file`).

    Returns:
        ``(temporary path, size in bytes, multihash of the content)``.
    """
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
                size, checksum = _stream_into(
                    session, asset, fh, headers=headers, chunk_size=chunk_size, timeout=timeout,
                    max_resumes=max_resumes, backoff=backoff,
                    early_writeback=fsync if early_writeback is None else early_writeback,
                )
                fh.flush()
                if fsync:
                    _fdatasync(fh.fileno())
        except BaseException as exc:
            tmp_path.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL and not exc.filename:
                exc.filename = str(tmp_dir)  # say which disk is full
            raise
        problem = verification_problem(asset, size, checksum) or ""
        if not problem:
            logger.debug("Downloaded asset %r (%d bytes, checksum %s)", asset.name, size, checksum)
            return tmp_path, size, checksum
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
    fsync: bool = True,
) -> Path:
    """Download one asset to a new temporary file in ``tmp_dir`` and verify it.

    The content is hashed while it streams. After a broken connection, a 5xx or a
    429 the download resumes where it stopped with an HTTP ``Range`` request (or
    starts over if the server ignores ranges), at most ``max_resumes`` times. The
    size and checksum are checked when the backend announced them (the checksum with
    its own hash function; otherwise the content is hashed with BLAKE3); a mismatch
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
        fsync: Flush the file to disk before returning, so that once placed it
            survives a power cut; turn off where flushing is very slow (network
            file systems) and a rerun may redownload.

    Returns:
        Path of the verified temporary file; the caller moves it (:func:`place_file`).

    Raises:
        ChecksumMismatch: The content did not match size/checksum ``max_attempts`` times.
        DownloadError: HTTP 4xx, transient failures beyond ``max_resumes``, or an
            unsupported URL scheme.
    """
    path, _, _ = download_to_temp(
        session, asset, tmp_dir, headers=headers, chunk_size=chunk_size, timeout=timeout,
        max_resumes=max_resumes, max_attempts=max_attempts, backoff=backoff, fsync=fsync,
    )
    return path


# --------------------------------------------------------------------------- placement


def _fdatasync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def fdatasync_file(path: Path) -> None:
    """Flush a file's content to disk (``fdatasync``, or ``fsync`` where there is none)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _fdatasync(fd)
    except OSError as exc:  # e.g. a full disk found only now (delayed allocation): say which file
        if not exc.filename:
            exc.filename = str(path)
        raise
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames into it) to disk; best effort."""
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
        fsync_dir(final.parent)
    return final


def remove_stale_temp_files(folder: Path, older_than: float = 24 * 3600.0, *, prefix: str = TEMP_PREFIX) -> int:
    """Remove temporary download files left in ``folder`` by interrupted runs.

    Args:
        folder: The temporary folder (by default ``<root>/.eoextract/tmp``).
        older_than: Only files not modified for this many seconds are removed, so
            downloads still running elsewhere are left alone.
        prefix: Name prefix of the temporary files.

    Returns:
        How many files were removed.
    """
    removed = 0
    cutoff = time.time() - older_than
    for path in Path(folder).glob(prefix + "*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
