"""The upload engine behind :func:`~eoextract.stac.publish.publish_to_s3`.

:class:`ObjectStoreWriter` is the small, StacIO-like interface the engine writes
through (put, head, list); :class:`Uploader` walks a catalogue and uploads it through
one, in the order, with the checks and the manifest described in
:mod:`eoextract.stac.publish._s3`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from eoextract._util.checksum import (
    DEFAULT_ALGORITHM,
    algorithm_of,
    multihash,
    new_hasher,
    normalized_checksum,
)
from eoextract._util.redact import redact_data
from eoextract.stac.publish._publish_result import PublishError, PublishResult
from eoextract.stac.publish._upload_manifest import ManifestEntry, UploadManifest
from eoextract.stac.publish._walk import CatalogEntry, item_asset_paths, walk_catalog

logger = logging.getLogger(__name__)

#: Files larger than this are uploaded in parts of this size.
DEFAULT_PART_SIZE = 8 * 2**20
#: Files up to this size are read into memory once (hashed and uploaded from there).
_SMALL = 2**20
#: Files up to this size are hashed in the event loop (larger ones in a thread).
_INLINE = 256 * 1024
_JSON = "application/json"
_GEOJSON = "application/geo+json"
_JSON_DUMP = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True)
class RemoteObject:
    """An object as the store lists it."""

    key: str
    size: int
    etag: str | None


class ObjectStoreWriter(Protocol):
    """What the publisher needs from an object store (a small, StacIO-like interface).

    Keys are full object keys. :class:`ObstoreWriter` implements it for every obstore
    store (S3, local folders, memory, ...).
    """

    async def put(self, key: str, body: bytes | Path, *, content_type: str,
                  metadata: Mapping[str, str], part_size: int) -> str | None:
        """Write one object; return the ETag the store reports (or None)."""

    async def head(self, key: str) -> RemoteObject | None:
        """The object at ``key``, or None."""

    def list(self, prefix: str) -> AsyncIterator[RemoteObject]:
        """Every object under ``prefix``."""


# --------------------------------------------------------------------------- hashing


@dataclass(frozen=True)
class _Digest:
    size: int
    checksum: str  # multihash
    etag: str  # what S3 reports for this content: MD5, or the multipart MD5 "<md5>-<parts>"
    data: bytes | None = field(default=None, repr=False)


def digest_bytes(data: bytes, part_size: int = DEFAULT_PART_SIZE,
                 algorithm: str = DEFAULT_ALGORITHM) -> _Digest:
    """Size, checksum and expected ETag of bytes uploaded in ``part_size`` parts."""
    d = _digest_chunks([data], part_size, keep=False, algorithm=algorithm)
    return _Digest(d.size, d.checksum, d.etag, data)


def _digest_chunks(chunks: Iterable[bytes], part_size: int, *, keep: bool, algorithm: str) -> _Digest:
    content = new_hasher(algorithm)
    whole = hashlib.md5(usedforsecurity=False)
    part = hashlib.md5(usedforsecurity=False)
    part_md5s: list[bytes] = []
    in_part = size = 0
    kept: list[bytes] = []
    for chunk in chunks:
        content.update(chunk)
        whole.update(chunk)
        size += len(chunk)
        if keep:
            kept.append(chunk)
        view = memoryview(chunk)
        while view:
            take = min(len(view), part_size - in_part)
            part.update(view[:take])
            in_part += take
            view = view[take:]
            if in_part == part_size:
                part_md5s.append(part.digest())
                part = hashlib.md5(usedforsecurity=False)
                in_part = 0
    if in_part:
        part_md5s.append(part.digest())
    if size > part_size:
        combined = hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest()
        etag = f"{combined}-{len(part_md5s)}"
    else:
        etag = whole.hexdigest()
    return _Digest(size, multihash(algorithm, content.hexdigest()), etag, b"".join(kept) if keep else None)


def digest_file(path: str | os.PathLike[str], part_size: int = DEFAULT_PART_SIZE,
                algorithm: str = DEFAULT_ALGORITHM) -> _Digest:
    """Size, checksum and expected ETag of a file (its bytes kept when it is small)."""

    def chunks() -> Iterable[bytes]:
        with open(path, "rb") as fh:
            while block := fh.read(2**20):
                yield block

    return _digest_chunks(chunks(), part_size, keep=os.stat(path).st_size <= _SMALL, algorithm=algorithm)


def _etag_value(etag: str | None) -> str | None:
    return etag.strip().strip('"').lower() if etag else None


def _comparable(etag: str | None) -> bool:
    """Whether an ETag has S3's MD5 form (plain or multipart)."""
    value = _etag_value(etag) or ""
    head, _, parts = value.partition("-")
    return len(head) == 32 and all(c in "0123456789abcdef" for c in head) and (
        not parts or parts.isdigit())


# --------------------------------------------------------------------------- uploads


@dataclass
class _Upload:
    key: str
    rel: str
    content_type: str
    body: bytes | None = field(default=None, repr=False)  # documents
    path: str | None = None  # files
    size: int = 0
    mtime_ns: int | None = None
    expected_size: int | None = None
    expected_checksum: str | None = None  # multihash from the item's file:checksum


class Uploader:
    """One publication run: walks the catalogue and uploads it through a writer.

    Items stream through a bounded queue to ``workers`` workers: each item's asset
    files are queued before the item, and the item is uploaded once they are in place
    (its worker waits only for uploads already taken by others, so nothing deadlocks).
    The sub-catalogues and the root follow when every item is done.
    """

    def __init__(self, writer: ObjectStoreWriter, prefix: str, base: Path, root: Path,
                 manifest: UploadManifest, *, public_url: str | None, absolute_asset_urls: bool,
                 workers: int, part_size: int, list_remote: bool,
                 result: PublishResult) -> None:
        self.writer = writer
        self.prefix = prefix
        self.base = base
        self._base_prefix = str(base).rstrip(os.sep) + os.sep
        self.root = root
        self.manifest = manifest
        self.public_url = public_url.rstrip("/") if public_url else None
        self.absolute = absolute_asset_urls
        self.workers = max(1, workers)
        self.part_size = part_size
        self.list_remote = list_remote
        self.result = result
        self.remote: dict[str, RemoteObject] | None = None
        self.assets: dict[str, asyncio.Future[bool] | bool] = {}

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def rel(self, path: str | os.PathLike[str]) -> str:
        """Path relative to the base folder (posix), refusing paths outside it."""
        text = os.path.normpath(os.fspath(path))
        if not text.startswith(self._base_prefix):
            raise PublishError(f"{text} lies outside {self.base}: it cannot keep a relative "
                               "href under the prefix (pass a base folder that holds it)")
        return text[len(self._base_prefix):].replace(os.sep, "/")

    # ----------------------------------------------------------------- run

    async def run(self) -> None:
        if self.list_remote:
            started = time.monotonic()
            self.remote = {}
            listing_prefix = f"{self.prefix}/" if self.prefix else ""
            async for obj in self.writer.list(listing_prefix):
                self.remote[obj.key] = obj
            logger.info("listed %d object(s) under the prefix in %.1f s", len(self.remote),
                        time.monotonic() - started)
        catalogs = await self._items()
        if self.result.errors:
            logger.warning("%d object(s) failed: the catalogues (and the root) are not "
                           "uploaded, so the published catalogue has no broken link",
                           len(self.result.errors))
            return
        root = [c for c in catalogs if c.is_root]
        await self._upload_all([self._document(c) for c in catalogs if not c.is_root])
        if not self.result.errors:
            await self._upload_all([self._document(c) for c in root])
        if root and not self.result.errors and self.public_url:
            self.result.root_url = f"{self.public_url}/{quote(self.rel(root[0].path))}"

    async def _items(self) -> list[CatalogEntry]:
        """Upload every item after its assets; return the catalogues met on the way."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=self.workers * 4)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.workers)]
        catalogs: list[CatalogEntry] = []
        try:
            for entry in walk_catalog(self.root):
                if entry.kind != "item":
                    catalogs.append(entry)
                    continue
                self.result.n_items += 1
                waits: list[asyncio.Future[bool] | bool] = []
                try:
                    for name, path in item_asset_paths(entry.path, entry.data).items():
                        up = self._asset(path, entry.data["assets"][name])
                        state = self.assets.get(up.key)
                        if state is None:
                            state = self.assets[up.key] = loop.create_future()
                            await queue.put(("asset", up, state))
                        waits.append(state)
                except PublishError as exc:
                    self._fail(entry, str(exc))
                    continue
                await queue.put(("item", entry, waits))
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            raise
        return catalogs

    async def _worker(self, queue: asyncio.Queue[Any]) -> None:
        while (task := await queue.get()) is not None:
            kind, what, extra = task
            if kind == "asset":
                ok = await self._attempt(what)
                self.assets[what.key] = ok
                extra.set_result(ok)
                continue
            entry: CatalogEntry = what
            oks = [w if isinstance(w, bool) else await w for w in extra]
            if not all(oks):
                self._fail(entry, "its asset files could not be uploaded", record=False)
                continue
            try:
                up = self._document(entry)
            except PublishError as exc:
                self._fail(entry, str(exc))
                continue
            if await self._attempt(up):
                self.result.published_items.append(entry.data.get("id"))
            else:
                self._fail(entry, "", record=False)

    def _fail(self, entry: CatalogEntry, message: str, *, record: bool = True) -> None:
        item_id = entry.data.get("id")
        if isinstance(item_id, str):
            self.result.failed_items.append(item_id)
        if record:
            self.result.errors.append(f"item {item_id}: {message}")

    # ----------------------------------------------------------------- what to upload

    def _asset(self, path: str, asset: Mapping[str, Any]) -> _Upload:
        rel = self.rel(path)
        try:
            st = os.stat(path)
        except OSError:
            raise PublishError(f"asset file {path} does not exist") from None
        if not stat.S_ISREG(st.st_mode):
            raise PublishError(f"asset {path} is not a file")
        expected = normalized_checksum(asset.get("file:checksum"))
        size = asset.get("file:size")
        ctype = (asset.get("type") or mimetypes.guess_type(path)[0]
                 or "application/octet-stream")
        return _Upload(self.key(rel), rel, ctype, path=path, size=st.st_size,
                       mtime_ns=st.st_mtime_ns,
                       expected_size=size if isinstance(size, int) else None, expected_checksum=expected)

    def _document(self, entry: CatalogEntry) -> _Upload:
        rel = self.rel(entry.path)
        data = entry.data
        changed = False
        if entry.kind == "item":
            data, changed = self._item_hrefs(entry)
        if entry.is_root and self.public_url:
            links = [lk for lk in data.get("links") or [] if lk.get("rel") != "self"]
            links.insert(0, {"rel": "self", "href": f"{self.public_url}/{quote(rel)}",
                             "type": _JSON})
            data = {**data, "links": links}
            changed = True
        redacted = redact_data(data)
        if redacted is not data and redacted != data:
            data, changed = redacted, True
        body = orjson.dumps(data, option=_JSON_DUMP) if changed or not entry.raw else entry.raw
        ctype = _GEOJSON if entry.kind == "item" else _JSON
        return _Upload(self.key(rel), rel, ctype, body=body, size=len(body))

    def _item_hrefs(self, entry: CatalogEntry) -> tuple[dict[str, Any], bool]:
        """The item as uploaded: asset hrefs relative (or absolute URLs when asked)."""
        paths = item_asset_paths(entry.path, entry.data)
        if not paths:
            return entry.data, False
        assets = dict(entry.data.get("assets") or {})
        changed = False
        for name, path in paths.items():
            href = assets[name]["href"]
            if self.absolute:
                if not self.public_url:
                    raise PublishError("absolute asset URLs need a public URL of the prefix")
                new = f"{self.public_url}/{quote(self.rel(path))}"
            elif os.path.isabs(href) or href.startswith("file://"):
                new = os.path.relpath(path, entry.path.parent).replace(os.sep, "/")
            else:
                continue
            assets[name] = {**assets[name], "href": new}
            changed = True
        return ({**entry.data, "assets": assets}, True) if changed else (entry.data, False)

    # ----------------------------------------------------------------- uploading

    async def _upload_all(self, uploads: list[_Upload]) -> None:
        """Upload a list with at most ``workers`` at once."""
        pending = iter(uploads)

        async def worker() -> None:
            for up in pending:  # one shared iterator: each upload is taken once
                await self._attempt(up)

        await asyncio.gather(*(worker() for _ in range(min(self.workers, len(uploads)))))

    async def _attempt(self, up: _Upload) -> bool:
        """Upload one object; record a failure instead of raising."""
        try:
            await self._one(up)
            return True
        except Exception as exc:  # noqa: BLE001 - one failed object never stops the run
            message = str(exc) if isinstance(exc, PublishError) else f"{type(exc).__name__}: {exc}"
            self.result.errors.append(f"{up.rel}: {message}")
            logger.warning("upload of %s failed: %s", up.rel, message)
            return False

    async def _one(self, up: _Upload) -> None:
        entry = self.manifest.get(up.key)
        if up.body is not None:
            digest = digest_bytes(up.body, self.part_size)
        else:
            assert up.path is not None
            algorithm = algorithm_of(up.expected_checksum)
            if (entry is not None and entry.size == up.size and entry.mtime_ns == up.mtime_ns
                    and algorithm_of(entry.checksum) == algorithm):
                digest = _Digest(entry.size, entry.checksum, entry.etag or "")
            elif up.size <= _INLINE:  # reading and hashing it costs less than a thread hop
                digest = digest_file(up.path, self.part_size, algorithm)
            else:
                digest = await asyncio.to_thread(digest_file, up.path, self.part_size, algorithm)
            self._check_expected(up, digest)
        remote = self.remote.get(up.key) if self.remote is not None else None
        if self._unchanged(digest, entry, remote):
            self.result.n_unchanged += 1
            if entry is None or entry.mtime_ns != up.mtime_ns:
                etag = _etag_value(remote.etag) if remote is not None else digest.etag
                self.manifest.record(up.key, ManifestEntry(digest.size, digest.checksum, etag,
                                                           up.mtime_ns))
            return
        body: bytes | Path = up.body if up.body is not None else (
            digest.data if digest.data is not None else Path(up.path))  # type: ignore[arg-type]
        etag = await self.writer.put(up.key, body, content_type=up.content_type,
                                     metadata={"checksum": digest.checksum}, part_size=self.part_size)
        await self._verify(up, digest, etag)
        self.manifest.record(up.key, ManifestEntry(digest.size, digest.checksum, _etag_value(etag),
                                                   up.mtime_ns))
        self.result.n_written += 1
        self.result.n_bytes += digest.size

    @staticmethod
    def _check_expected(up: _Upload, digest: _Digest) -> None:
        if up.expected_size is not None and up.expected_size != digest.size:
            raise PublishError(f"the file has {digest.size} bytes, its item says "
                               f"file:size {up.expected_size}")
        if up.expected_checksum is not None and up.expected_checksum != digest.checksum:
            raise PublishError(f"checksum {digest.checksum} of the file differs from its item's "
                               "file:checksum")

    def _unchanged(self, digest: _Digest, entry: ManifestEntry | None,
                   remote: RemoteObject | None) -> bool:
        if self.remote is not None:
            if remote is None or remote.size != digest.size:
                return False
            remote_etag = _etag_value(remote.etag)
            if entry is not None and entry.checksum == digest.checksum:
                return entry.etag is None or remote_etag is None or remote_etag == entry.etag
            # not in the manifest (another machine, a lost manifest): trust a matching ETag
            return _comparable(remote_etag) and remote_etag == digest.etag
        return entry is not None and entry.checksum == digest.checksum and entry.size == digest.size

    async def _verify(self, up: _Upload, digest: _Digest, etag: str | None) -> None:
        value = _etag_value(etag)
        if _comparable(value):
            if value != digest.etag:
                raise PublishError(f"the store reports ETag {value} for {up.key}, expected "
                                   f"{digest.etag}: the upload is corrupt")
            return
        remote = await self.writer.head(up.key)
        if remote is None or remote.size != digest.size:
            got = None if remote is None else remote.size
            raise PublishError(f"{up.key}: the store holds {got} bytes, expected {digest.size}")


def run_coroutine(factory: Callable[[], Any]) -> Any:
    """Run a coroutine to completion, also when called from a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(factory())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="eoextract-publish")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")
