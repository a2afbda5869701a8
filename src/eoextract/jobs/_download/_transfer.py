"""Moving one result asset from a URL into a verified temporary file.

:func:`download_to_temp` streams an asset into a temporary file, hashing it as it
arrives, resuming with HTTP ``Range`` after broken connections (with the
:class:`~eoextract._util.retry.RetryPolicy` of :func:`resume_policy`) and checking size
and checksum against what the backend announced; :func:`~eoextract.jobs._download._disk.place_file`
then renames it into the output folder. :func:`~eoextract.jobs._download.download_job_assets`
builds the per-job, parallel and restartable download on these two.

Every download is bounded: it stops with :class:`~eoextract.errors.AssetRefused` as soon
as one byte more than the announced size arrives (the results document's ``file:size``, else
the ``Content-Length``), or more than ``max_asset_bytes``; an answer with a
``Content-Encoding`` (we ask for ``identity``) is refused before its body is read; and a file
that would not fit into the free space of its disk stops with a disk-full ``OSError``. No
partial file is left behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from eoextract._util.checksum import ALGORITHMS, DEFAULT_ALGORITHM, algorithm_of, multihash, new_hasher
from eoextract._util.files import temp_file
from eoextract._util.redact import redact_url
from eoextract._util.retry import RETRYABLE_STATUS, RetryPolicy, retry_after_of
from eoextract.errors import AssetRefused, ChecksumMismatch, DownloadError
from eoextract.jobs._download._disk import TEMP_PREFIX, EarlyWriteback, _fdatasync
from eoextract.jobs._download._document import RemoteAsset

logger = logging.getLogger(__name__)

_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Default of ``max_asset_bytes``: the largest file a download accepts (16 GiB), whatever
#: the backend announces; ``None`` leaves only the announced size and the free disk space.
DEFAULT_MAX_ASSET_BYTES = 16 << 30


def _free_bytes(folder: Path) -> int:
    """Bytes free for this process on the file system of ``folder``."""
    return shutil.disk_usage(folder).free


def _disk_full(folder: Path, needed: int, free: int, name: str) -> OSError:
    return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} for asset {name!r}: {needed} more bytes "
                                 f"needed, {free} free", str(folder))


def resume_policy(backoff: float | RetryPolicy) -> RetryPolicy:
    """The waits between resumptions of one download: ``backoff`` seconds, doubled each
    time up to 30 s; a server's ``Retry-After`` is honoured up to 60 s."""
    if isinstance(backoff, RetryPolicy):
        return backoff
    return RetryPolicy(base=float(backoff), factor=2.0, maximum=30.0, retry_after_cap=60.0)


#: Request headers, or a callable giving the headers for a URL.
Headers = Mapping[str, str] | Callable[[str], Mapping[str, str]]


class _Transient(Exception):
    """A failure worth resuming after (5xx, 429, short body)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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
#: handing each chunk to another thread.
_INLINE_ALGORITHMS = frozenset({"blake3"})


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - no affinity (macOS, Windows)
        return os.cpu_count() or 1


class _StreamCount:
    """Streams receiving in this process right now: a hash thread of one's own pays off
    only while fewer streams run than there are cores."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = 0

    @contextlib.contextmanager
    def entered(self) -> Iterator[int]:
        """Count a stream while it runs; yields the count with it."""
        with self._lock:
            self.active += 1
            count = self.active
        try:
            yield count
        finally:
            with self._lock:
                self.active -= 1


_STREAMS = _StreamCount()


class _Hasher:
    """The content's checksum, computed while it streams.

    With ``overlap``, slower hash functions (SHA-256) run in a thread of their own, so that
    hashing overlaps with receiving (``hashlib`` releases the GIL on large updates; with a
    spare core the hash then costs no download time). Without it, or for BLAKE3, every
    chunk is hashed inline: where parallel downloads keep the cores busy, handing chunks
    to another thread only adds work.
    """

    def __init__(self, algorithm: str, *, overlap: bool = True) -> None:
        self.algorithm = algorithm
        self.overlap = overlap and algorithm not in _INLINE_ALGORITHMS
        self.reset()

    def reset(self) -> None:
        """Drop what was hashed so far and start again."""
        if getattr(self, "_thread", None) is not None:
            self.close()
        self._hash = new_hasher(self.algorithm)
        self._thread: threading.Thread | None = None
        if self.overlap:
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


def _chunks(resp: requests.Response, chunk_size: int, budget: int | None) -> Iterator[bytes]:
    """The body in chunks of ``chunk_size`` bytes (the last one shorter), reading at most
    ``budget + 1`` bytes in all: one byte beyond the budget shows that the body is longer.

    The body is read undecoded (a content encoding is refused before), which spares
    urllib3's decoding buffer a copy of every byte. Full-size reads cost less than half the
    CPU per byte of ``read1``'s "whatever has arrived" (measured on loopback: 0.2 against
    0.3-0.5 ms per MB). A connection the server closes early loses nothing: the bytes
    before the close come back as a short chunk, so a resumed download asks for the
    first missing byte; a connection reset loses at most the chunk being read.
    """
    raw = resp.raw
    if not isinstance(raw, urllib3.response.HTTPResponse):  # another transport adapter
        # bounded per chunk only: the caller stops after the chunk that crosses the budget
        yield from resp.iter_content(chunk_size=chunk_size)
        return
    left = None if budget is None else budget + 1
    while left is None or left > 0:
        chunk = raw.read(chunk_size if left is None else min(chunk_size, left), decode_content=False)
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


class _Stream:
    """One asset streamed into an open file, resumed with ``Range`` after transient failures.

    :meth:`run` returns ``(bytes written, multihash)``, hashed with the hash function of the
    announced checksum, or ``algorithm`` (:data:`~eoextract._util.checksum.DEFAULT_ALGORITHM`).
    """

    def __init__(self, session: requests.Session, asset: RemoteAsset, fh: Any, *,
                 headers: Headers | None, chunk_size: int, timeout: float | tuple[float, float],
                 max_resumes: int, retry: RetryPolicy, early_writeback: bool = False,
                 max_asset_bytes: int | None = DEFAULT_MAX_ASSET_BYTES, disk: Path | None = None,
                 algorithm: str = DEFAULT_ALGORITHM, overlap_hashing: bool | None = None) -> None:
        self.session, self.asset, self.fh = session, asset, fh
        self.max_asset_bytes, self.disk = max_asset_bytes, disk
        self.headers, self.chunk_size, self.timeout = headers, chunk_size, timeout
        self.max_resumes, self.retry = max_resumes, retry
        self.algorithm = algorithm_of(asset.checksum) if asset.checksum is not None else algorithm
        self.overlap_hashing = overlap_hashing
        self.hasher: _Hasher
        self.writeback = EarlyWriteback(fh, enabled=early_writeback)
        #: Bytes written so far, and the total the server announced.
        self.offset = 0
        self.total: int | None = None

    def run(self) -> tuple[int, str]:
        with _STREAMS.entered() as streams:
            overlap = self.overlap_hashing if self.overlap_hashing is not None else streams < _cores()
            self.hasher = _Hasher(self.algorithm, overlap=overlap)
            return self._run()

    def _run(self) -> tuple[int, str]:
        asset = self.asset
        failures = 0
        try:
            while True:
                try:
                    self._receive()
                    return self.offset, self.hasher.checksum()
                except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.HTTPError, _Transient) as exc:
                    failures += 1
                    if failures > self.max_resumes:
                        raise DownloadError(
                            f"Download of asset {asset.name!r} from {redact_url(asset.href)} failed after "
                            f"{failures} tries: {exc}",
                            asset=asset.name,
                        ) from exc
                    transient = isinstance(exc, _Transient)
                    wait = self.retry.delay(failures, exc.retry_after if transient else None)
                    logger.warning(
                        "Download of asset %r interrupted at byte %d (%s); resuming in %.1f s",
                        asset.name, self.offset, exc if transient else type(exc).__name__, wait,
                    )
                    if wait:
                        time.sleep(wait)
        finally:
            self.hasher.close()

    def _receive(self) -> None:
        """One request, from the first missing byte to the end (or a failure)."""
        asset, fh, offset = self.asset, self.fh, self.offset
        request_headers = {"Accept-Encoding": "identity", **_headers_for(self.headers, asset.href)}
        if offset:
            request_headers["Range"] = f"bytes={offset}-"
        with self.session.get(asset.href, headers=request_headers, stream=True, timeout=self.timeout) as resp:
            status = resp.status_code
            if offset and status == 416 and self.total == offset:
                return
            if status in RETRYABLE_STATUS:
                raise _Transient(f"HTTP {status}", retry_after_of(resp.headers))
            if status >= 400:
                raise DownloadError(
                    f"Download of asset {asset.name!r} from {redact_url(asset.href)} failed: HTTP {status}",
                    asset=asset.name,
                )
            if offset:
                content_range = _content_range(resp) if status == 206 else None
                if content_range is None or content_range[0] != offset:
                    logger.info("Range request for %r not honoured; starting over", asset.name)
                    fh.seek(0)
                    fh.truncate()
                    self.hasher.reset()
                    self.offset = offset = 0
                    if status == 206:  # a part we did not ask for: ask for the whole
                        raise _Transient("unexpected Content-Range")
                elif content_range[1] is not None:
                    self.total = content_range[1]
            if not offset:
                length = resp.headers.get("Content-Length")
                self.total = int(length) if length and length.isdigit() else None
            limit, disk_limit = self._limits(resp)
            budget = min(v for v in (limit, disk_limit) if v is not None) - offset \
                if limit is not None or disk_limit is not None else None
            for chunk in _chunks(resp, self.chunk_size, budget):
                end = self.offset + len(chunk)
                if limit is not None and end > limit:
                    raise AssetRefused(
                        f"Asset {asset.name!r} from {redact_url(asset.href)} is longer than "
                        f"{self._limit_text(limit)}; stopped at byte {limit + 1}",
                        asset=asset.name,
                    )
                if disk_limit is not None and end > disk_limit:
                    raise _disk_full(self.disk, end - self.offset, disk_limit - self.offset, asset.name)
                fh.write(chunk)
                self.hasher.update(chunk)
                self.offset = end
                self.writeback.advance(self.offset)
        if self.total is not None and self.offset < self.total:
            raise _Transient(f"connection closed after {self.offset} of {self.total} bytes")

    def _limit_text(self, limit: int) -> str:
        if self.asset.size is not None and limit == self.asset.size:
            return f"the {limit} bytes the results document announced"
        if self.max_asset_bytes is not None and limit == self.max_asset_bytes:
            return f"max_asset_bytes ({limit} bytes)"
        return f"the {limit} bytes the server announced"

    def _limits(self, resp: requests.Response) -> tuple[int | None, int | None]:
        """The most bytes accepted for the asset, and the most that fit on the disk, both
        counted from the file's start; refuses an encoded body, or an announced length
        beyond either bound, before its first byte is read."""
        asset = self.asset
        encoding = resp.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise AssetRefused(
                f"Asset {asset.name!r} from {redact_url(asset.href)} was sent with Content-Encoding "
                f"{encoding!r} although 'identity' was asked for; refused, not decoded",
                asset=asset.name,
            )
        bounds = [v for v in (asset.size, self.max_asset_bytes) if v is not None]
        limit = min(bounds) if bounds else None
        if self.total is not None and limit is not None and self.total > limit:
            raise AssetRefused(
                f"Asset {asset.name!r} from {redact_url(asset.href)} is announced with {self.total} "
                f"bytes, more than {self._limit_text(limit)}; refused before reading it",
                asset=asset.name,
            )
        if limit is None and self.total is not None:
            limit = self.total
        if self.disk is None:
            return limit, None
        free = _free_bytes(self.disk)
        expected = asset.size if asset.size is not None else self.total
        if expected is not None and expected - self.offset > free:
            raise _disk_full(self.disk, expected - self.offset, free, asset.name)
        return limit, self.offset + free


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
    backoff: float | RetryPolicy = 0.5,
    fsync: bool = True,
    early_writeback: bool | None = None,
    max_asset_bytes: int | None = DEFAULT_MAX_ASSET_BYTES,
    checksum_algorithm: str = DEFAULT_ALGORITHM,
    overlap_hashing: bool | None = None,
) -> tuple[Path, int, str]:
    """Download one asset to a new temporary file in ``tmp_dir`` and verify it.

    The content is hashed while it streams. After a broken connection, a 5xx or a
    429 the download resumes where it stopped with an HTTP ``Range`` request (or
    starts over if the server ignores ranges), at most ``max_resumes`` times. The
    size and checksum are checked when the backend announced them (the checksum with
    its own hash function; otherwise with ``checksum_algorithm``, SHA-256 by default); a mismatch
    downloads the file again, at most ``max_attempts`` times in all. The file is
    fsynced before it is returned; on any error it is removed.

    The download is bounded: it stops at the first byte beyond the announced size
    (``file:size``, else ``Content-Length``) or beyond ``max_asset_bytes``, refuses an
    answer with a ``Content-Encoding`` (``identity`` is asked for), and stops where the
    file would no longer fit into the free space of ``tmp_dir``'s disk. None of these is
    resumed or downloaded again.

    Args:
        session: HTTP session (see :func:`~eoextract.jobs._download.session_for`).
        asset: The asset to download.
        tmp_dir: Folder for the temporary file; put it on the filesystem of the
            final destination so the final move is an atomic rename.
        headers: Extra request headers, or a callable giving them per URL
            (:class:`~eoextract.jobs._download.BackendHeaders`).
        chunk_size: Bytes read per chunk.
        timeout: ``requests`` timeout (connect, read) in seconds.
        max_resumes: Resumptions allowed per attempt after transient failures.
        max_attempts: Full downloads allowed when verification fails.
        backoff: First wait in seconds before resuming (see :func:`resume_policy`), or
            a :class:`~eoextract._util.retry.RetryPolicy`.
        fsync: Flush the file to disk before returning, so that once placed it
            survives a power cut; turn off where flushing is very slow (network
            file systems) and a rerun may redownload.
        early_writeback: Start writing the file to disk while it is received
            (default: ``fsync``), for a caller that flushes it later
            (:func:`~eoextract.jobs._download._disk.fdatasync_file`).
        max_asset_bytes: The largest file accepted, whatever was announced (default
            :data:`DEFAULT_MAX_ASSET_BYTES`, 16 GiB); ``None`` for no bound but the
            announced size and the free disk space.
        checksum_algorithm: Hash function (multihash name, e.g. ``"sha2-256"`` or
            ``"blake3"``) of files whose backend announced no checksum.
        overlap_hashing: Hash SHA-256 and the like in a thread of its own, overlapping
            with receiving. By default only while fewer downloads run in this process
            than there are cores: where they keep every core busy, handing chunks to
            another thread only adds work.

    Returns:
        ``(temporary path, size in bytes, multihash of the content)``; the caller moves
        the file (:func:`~eoextract.jobs._download.place_file`).

    Raises:
        ChecksumMismatch: The content did not match size/checksum ``max_attempts`` times.
        AssetRefused: More bytes than announced or allowed, or an encoded body.
        DownloadError: HTTP 4xx, transient failures beyond ``max_resumes``, or an
            unsupported URL scheme.
        OSError: ``ENOSPC`` when the file does not fit on the disk (``filename``: ``tmp_dir``).
    """
    scheme = urlsplit(asset.href).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"Asset {asset.name!r} has an unsupported URL scheme {scheme!r}", asset=asset.name)
    if checksum_algorithm not in ALGORITHMS:
        raise ValueError(f"unknown checksum algorithm {checksum_algorithm!r}; known: {', '.join(ALGORITHMS)}")
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    retry = resume_policy(backoff)
    problem = ""
    for attempt in range(1, max_attempts + 1):
        fd, tmp_path = temp_file(tmp_dir, prefix=TEMP_PREFIX, suffix=asset.suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                size, checksum = _Stream(
                    session, asset, fh, headers=headers, chunk_size=chunk_size, timeout=timeout,
                    max_resumes=max_resumes, retry=retry,
                    early_writeback=fsync if early_writeback is None else early_writeback,
                    max_asset_bytes=max_asset_bytes, disk=tmp_dir, algorithm=checksum_algorithm,
                    overlap_hashing=overlap_hashing,
                ).run()
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


def download_asset(session: requests.Session, asset: RemoteAsset, tmp_dir: Path, **options: Any) -> Path:
    """:func:`download_to_temp` (same options), returning only the path of the verified file."""
    return download_to_temp(session, asset, tmp_dir, **options)[0]
