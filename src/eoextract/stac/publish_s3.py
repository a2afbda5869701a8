"""Upload a catalogue and its assets to S3-compatible object storage.

The catalogue's folder and the asset files its items reference keep their layout
relative to a *base folder* (by default the parent of the catalogue's folder, i.e. the
extraction output folder of ``OUTPUT_DIR/stac``), so every relative href stays valid
under ``s3://bucket/prefix``::

    OUTPUT_DIR/stac/collection.json      -> s3://bucket/prefix/stac/collection.json
    OUTPUT_DIR/stac/2021-03/<id>.json    -> s3://bucket/prefix/stac/2021-03/<id>.json
    OUTPUT_DIR/31UFS/<sample>/S2.nc      -> s3://bucket/prefix/31UFS/<sample>/S2.nc

Only the catalogue's JSON files and the assets it references are uploaded (never the
``.eoextract`` state folder, the job database or anything else in the folder). The
uploaded catalogue is *relative-published*: the root gets an absolute ``self`` link,
everything else stays relative; with ``absolute_asset_urls`` the uploaded items point
at their assets by absolute URL. The local files are never changed.

How an upload goes:

* **Order**: per batch of items, their asset files first, then the item documents;
  the sub-catalogues and the root last, and only when every item and asset got there.
  A reader of the bucket never follows a link to an object that is not there yet.
* **Parallel and streamed**: ``workers`` uploads at once (obstore, asyncio); files
  larger than ``part_size`` are streamed from disk in multipart uploads.
* **Verified**: each local file's sha256 is checked against the item's ``file:size`` /
  ``file:checksum`` before the upload; the ETag the store returns is compared with the
  MD5 (or multipart MD5) of the bytes read, and the sha256 is stored as object
  metadata (``x-amz-meta-sha256``).
* **Incremental and resumable**: a manifest ``BASE/.eoextract/publish/<hash>.json``
  (one per target) records key → size, sha256 and ETag of every verified object; each
  upload is appended to a journal next to it as soon as it is verified, and the
  journal is folded into the manifest (written atomically) every few thousand
  entries and at the end. A rerun, also after a crash, uploads only what is new or
  changed locally, or missing or different in the bucket (the prefix is listed once).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlsplit

import orjson

from eoextract.errors import ConfigurationError
from eoextract.stac.publish import (
    CatalogEntry,
    PublishError,
    PublishResult,
    find_root,
    item_asset_paths,
    mark_jobs_published,
    output_dir_of,
    walk_catalog,
)
from eoextract.stac.publish_manifest import ManifestEntry, UploadManifest, manifest_path

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.jobs.db.base import JobDatabase

__all__ = [
    "ObjectStoreWriter",
    "ObstoreWriter",
    "RemoteObject",
    "S3Credentials",
    "S3Target",
    "publish_to_s3",
    "publish_to_store",
]

logger = logging.getLogger(__name__)

#: Files larger than this are uploaded in parts of this size.
DEFAULT_PART_SIZE = 8 * 2**20
#: Files up to this size are read into memory once (hashed and uploaded from there).
_SMALL = 2**20
#: Items handled per batch (their assets, then the items).
_BATCH = 2000
_JSON = "application/json"
_GEOJSON = "application/geo+json"
_JSON_DUMP = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class S3Target:
    """A bucket and a key prefix (``s3://bucket/prefix``)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Target:
        """Parse ``s3://bucket[/prefix]``.

        Raises:
            ConfigurationError: For anything else.
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or "@" in parts.netloc:
            raise ConfigurationError(f"not an s3://bucket/prefix URL: {url!r}")
        return cls(parts.netloc, parts.path.strip("/"))

    def key(self, rel: str) -> str:
        """The object key of a path relative to the base folder."""
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class S3Credentials:
    """Access keys (never shown in ``repr``, never logged or stored)."""

    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None

    @classmethod
    def resolve(
        cls,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> S3Credentials:
        """Arguments first, then the usual ``AWS_*`` environment variables."""
        env = os.environ if environ is None else environ
        if access_key_id is None and secret_access_key is None:
            access_key_id = env.get("AWS_ACCESS_KEY_ID") or None
            secret_access_key = env.get("AWS_SECRET_ACCESS_KEY") or None
            session_token = session_token or env.get("AWS_SESSION_TOKEN") or None
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
        return cls(access_key_id, secret_access_key, session_token, region)

    def config(self) -> dict[str, str]:
        """obstore S3 configuration keys for these credentials."""
        out = {"region": self.region or "us-east-1"}
        if self.access_key_id:
            out["access_key_id"] = self.access_key_id
        if self.secret_access_key:
            out["secret_access_key"] = self.secret_access_key
        if self.session_token:
            out["session_token"] = self.session_token
        return out


def _clean_endpoint(endpoint_url: str) -> str:
    """The endpoint without user info (credentials never go into URLs we keep)."""
    parts = urlsplit(endpoint_url)
    if not parts.scheme or not parts.hostname:
        raise ConfigurationError(f"endpoint URL must be http(s)://host[:port]: {endpoint_url!r}")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path.rstrip('/')}"


def default_public_url(target: S3Target, endpoint_url: str | None, region: str | None) -> str:
    """The HTTP(S) URL of ``target``'s prefix: path style on a custom endpoint, else AWS's."""
    if endpoint_url:
        base = f"{_clean_endpoint(endpoint_url)}/{target.bucket}"
    elif not region or region == "us-east-1":
        base = f"https://{target.bucket}.s3.amazonaws.com"
    else:
        base = f"https://{target.bucket}.s3.{region}.amazonaws.com"
    return f"{base}/{quote(target.prefix)}" if target.prefix else base


# --------------------------------------------------------------------------- the writer interface


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


class ObstoreWriter:
    """:class:`ObjectStoreWriter` over an obstore store.

    Args:
        store: An ``obstore.store`` store (``S3Store``, ``LocalStore``, ``MemoryStore``).
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    async def put(self, key: str, body: bytes | Path, *, content_type: str,
                  metadata: Mapping[str, str], part_size: int) -> str | None:
        import obstore

        size = len(body) if isinstance(body, bytes) else body.stat().st_size
        attributes = {"Content-Type": content_type, **metadata}
        result = await obstore.put_async(
            self.store, key, body, attributes=attributes, use_multipart=size > part_size,
            chunk_size=part_size, max_concurrency=4)
        return result.get("e_tag")

    async def head(self, key: str) -> RemoteObject | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            meta = await obstore.head_async(self.store, key)
        except (NotFoundError, FileNotFoundError):
            return None
        return RemoteObject(meta["path"], int(meta["size"]), meta.get("e_tag"))

    async def list(self, prefix: str) -> AsyncIterator[RemoteObject]:
        import obstore

        stream = obstore.list(self.store, prefix=prefix or None, chunk_size=1000)
        async for chunk in stream:
            for meta in chunk:
                yield RemoteObject(meta["path"], int(meta["size"]), meta.get("e_tag"))


def s3_store(target: S3Target, credentials: S3Credentials, endpoint_url: str | None) -> Any:
    """An obstore ``S3Store`` for ``target``'s bucket."""
    from obstore.store import S3Store

    config: dict[str, Any] = credentials.config()
    client: dict[str, Any] = {"timeout": "300s", "connect_timeout": "10s"}
    if endpoint_url:
        config["endpoint"] = _clean_endpoint(endpoint_url)
        config["virtual_hosted_style_request"] = False
        client["allow_http"] = endpoint_url.startswith("http://")
    return S3Store(target.bucket, config=config, client_options=client)


# --------------------------------------------------------------------------- hashing


@dataclass(frozen=True)
class _Digest:
    size: int
    sha256: str
    etag: str  # what S3 reports for this content: MD5, or the multipart MD5 "<md5>-<parts>"
    data: bytes | None = field(default=None, repr=False)


def digest_bytes(data: bytes, part_size: int = DEFAULT_PART_SIZE) -> _Digest:
    """Size, sha256 and expected ETag of bytes uploaded in ``part_size`` parts."""
    d = _digest_chunks([data], part_size, keep=False)
    return _Digest(d.size, d.sha256, d.etag, data)


def _digest_chunks(chunks: Iterable[bytes], part_size: int, *, keep: bool) -> _Digest:
    sha = hashlib.sha256()
    whole = hashlib.md5(usedforsecurity=False)
    part = hashlib.md5(usedforsecurity=False)
    part_md5s: list[bytes] = []
    in_part = size = 0
    kept: list[bytes] = []
    for chunk in chunks:
        sha.update(chunk)
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
        etag = f"{hashlib.md5(b''.join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"
    else:
        etag = whole.hexdigest()
    return _Digest(size, sha.hexdigest(), etag, b"".join(kept) if keep else None)


def digest_file(path: Path, part_size: int = DEFAULT_PART_SIZE) -> _Digest:
    """Size, sha256 and expected ETag of a file (its bytes kept when it is small)."""

    def chunks() -> Iterable[bytes]:
        with open(path, "rb") as fh:
            while block := fh.read(2**20):
                yield block

    return _digest_chunks(chunks(), part_size, keep=path.stat().st_size <= _SMALL)


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
    path: Path | None = None  # files
    expected_size: int | None = None
    expected_sha256: str | None = None


class _Publisher:
    """One publication run: walks the catalogue and uploads in batches."""

    def __init__(self, writer: ObjectStoreWriter, prefix: str, base: Path, root: Path,
                 manifest: UploadManifest, *, public_url: str | None, absolute_asset_urls: bool,
                 workers: int, part_size: int, list_remote: bool,
                 result: PublishResult) -> None:
        self.writer = writer
        self.prefix = prefix
        self.base = base
        self.root = root
        self.manifest = manifest
        self.public_url = public_url.rstrip("/") if public_url else None
        self.absolute = absolute_asset_urls
        self.workers = max(1, workers)
        self.part_size = part_size
        self.list_remote = list_remote
        self.result = result
        self.remote: dict[str, RemoteObject] | None = None
        self.assets_done: dict[str, bool] = {}
        self.failed_items: list[str] = []

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def rel(self, path: Path) -> str:
        """Path relative to the base folder (posix), refusing paths outside it."""
        try:
            rel = path.relative_to(self.base)
        except ValueError:
            raise PublishError(f"{path} lies outside {self.base}: it cannot keep a relative "
                               "href under the prefix (pass a base folder that holds it)") from None
        if ".." in rel.parts:
            raise PublishError(f"{path} lies outside {self.base}")
        return rel.as_posix()

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
        catalogs: list[CatalogEntry] = []
        batch: list[CatalogEntry] = []
        for entry in walk_catalog(self.root):
            if entry.kind == "item":
                batch.append(entry)
                if len(batch) >= _BATCH:
                    await self._items(batch)
                    batch = []
            else:
                catalogs.append(entry)
        if batch:
            await self._items(batch)
        if self.result.errors:
            logger.warning("%d object(s) failed: the catalogues (and the root) are not "
                           "uploaded, so the published catalogue has no broken link",
                           len(self.result.errors))
            return
        root = [c for c in catalogs if c.is_root]
        await self._run([self._document(c) for c in catalogs if not c.is_root])
        if not self.result.errors:
            await self._run([self._document(c) for c in root])
        if root and not self.result.errors and self.public_url:
            self.result.root_url = f"{self.public_url}/{quote(self.rel(root[0].path))}"

    async def _items(self, batch: list[CatalogEntry]) -> None:
        """Upload the assets of a batch of items, then the items whose assets all made it."""
        assets: dict[str, _Upload] = {}
        needs: list[tuple[CatalogEntry, list[str]]] = []
        for entry in batch:
            keys: list[str] = []
            try:
                for name, path in item_asset_paths(entry.path, entry.data).items():
                    up = self._asset(path, entry.data["assets"][name])
                    keys.append(up.key)
                    if up.key not in self.assets_done and up.key not in assets:
                        assets[up.key] = up
            except PublishError as exc:
                self._fail(entry, str(exc))
                continue
            needs.append((entry, keys))
        outcome = await self._run(list(assets.values()))
        for key, ok in outcome.items():
            self.assets_done[key] = ok
        documents = []
        for entry, keys in needs:
            missing = [k for k in keys if not self.assets_done.get(k)]
            if missing:
                self._fail(entry, f"asset(s) not uploaded: {', '.join(missing[:3])}", record=False)
                continue
            try:
                documents.append(self._document(entry))
            except PublishError as exc:
                self._fail(entry, str(exc))
        done = await self._run(documents)
        ids = {self.key(self.rel(e.path)): e.data.get("id") for e, _ in needs}
        for key, ok in done.items():
            item_id = ids.get(key)
            if isinstance(item_id, str):
                (self.result.published_items if ok else self.failed_items).append(item_id)
        self.result.n_items += len(batch)

    def _fail(self, entry: CatalogEntry, message: str, *, record: bool = True) -> None:
        item_id = entry.data.get("id")
        if isinstance(item_id, str):
            self.failed_items.append(item_id)
        if record:
            self.result.errors.append(f"item {item_id}: {message}")

    # ----------------------------------------------------------------- what to upload

    def _asset(self, path: Path, asset: Mapping[str, Any]) -> _Upload:
        rel = self.rel(path)
        if not path.is_file():
            raise PublishError(f"asset file {path} does not exist")
        checksum = asset.get("file:checksum")
        sha = None
        if isinstance(checksum, str) and checksum.lower().startswith("1220") and len(checksum) == 68:
            sha = checksum[4:].lower()
        size = asset.get("file:size")
        ctype = asset.get("type") or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return _Upload(self.key(rel), rel, ctype, path=path,
                       expected_size=size if isinstance(size, int) else None, expected_sha256=sha)

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
        body = orjson.dumps(data, option=_JSON_DUMP) if changed else entry.path.read_bytes()
        ctype = _GEOJSON if entry.kind == "item" else _JSON
        return _Upload(self.key(rel), rel, ctype, body=body)

    def _item_hrefs(self, entry: CatalogEntry) -> tuple[dict[str, Any], bool]:
        """The item as uploaded: asset hrefs relative (or absolute URLs when asked)."""
        paths = item_asset_paths(entry.path, entry.data)
        if not paths:
            return entry.data, False
        assets = dict(entry.data.get("assets") or {})
        changed = False
        for name, path in paths.items():
            href = assets[name]["href"]
            rel = self.rel(path)
            if self.absolute:
                if not self.public_url:
                    raise PublishError("absolute asset URLs need a public URL of the prefix")
                new = f"{self.public_url}/{quote(rel)}"
            elif os.path.isabs(href) or href.startswith("file://"):
                new = os.path.relpath(path, entry.path.parent).replace(os.sep, "/")
            else:
                continue
            assets[name] = {**assets[name], "href": new}
            changed = True
        return ({**entry.data, "assets": assets}, True) if changed else (entry.data, False)

    # ----------------------------------------------------------------- the pool

    async def _run(self, uploads: list[_Upload]) -> dict[str, bool]:
        """Upload with at most ``workers`` at once; key -> whether it is now in place."""
        outcome: dict[str, bool] = {}
        pending = iter(uploads)

        async def worker() -> None:
            for up in pending:  # one shared iterator: each upload is taken once
                try:
                    await self._one(up)
                    outcome[up.key] = True
                except Exception as exc:  # noqa: BLE001 - one failed object never stops the run
                    outcome[up.key] = False
                    message = str(exc) if isinstance(exc, PublishError) else (
                        f"{type(exc).__name__}: {exc}")
                    self.result.errors.append(f"{up.rel}: {message}")
                    logger.warning("upload of %s failed: %s", up.rel, message)

        await asyncio.gather(*(worker() for _ in range(min(self.workers, len(uploads)))))
        return outcome

    async def _one(self, up: _Upload) -> None:
        mtime_ns = None
        entry = self.manifest.get(up.key)
        if up.body is not None:
            digest = digest_bytes(up.body, self.part_size)
        else:
            assert up.path is not None
            stat = up.path.stat()
            mtime_ns = stat.st_mtime_ns
            if entry is not None and entry.size == stat.st_size and entry.mtime_ns == mtime_ns:
                digest = _Digest(entry.size, entry.sha256, entry.etag or "")
            else:
                digest = await asyncio.to_thread(digest_file, up.path, self.part_size)
            self._check_expected(up, digest)
        remote = self.remote.get(up.key) if self.remote is not None else None
        if self._unchanged(up, digest, entry, remote):
            self.result.n_unchanged += 1
            if entry is None or entry.mtime_ns != mtime_ns:
                etag = _etag_value(remote.etag) if remote is not None else digest.etag
                self.manifest.record(up.key, ManifestEntry(digest.size, digest.sha256, etag,
                                                           mtime_ns))
            return
        body: bytes | Path = up.body if up.body is not None else (
            digest.data if digest.data is not None else up.path)  # type: ignore[assignment]
        etag = await self.writer.put(up.key, body, content_type=up.content_type,
                                     metadata={"sha256": digest.sha256}, part_size=self.part_size)
        await self._verify(up, digest, etag)
        self.manifest.record(up.key, ManifestEntry(digest.size, digest.sha256, _etag_value(etag),
                                                   mtime_ns))
        self.result.n_written += 1
        self.result.n_bytes += digest.size

    @staticmethod
    def _check_expected(up: _Upload, digest: _Digest) -> None:
        if up.expected_size is not None and up.expected_size != digest.size:
            raise PublishError(f"{up.path} has {digest.size} bytes, its item says "
                               f"file:size {up.expected_size}")
        if up.expected_sha256 is not None and up.expected_sha256 != digest.sha256:
            raise PublishError(f"{up.path}: sha256 {digest.sha256} differs from its item's "
                               f"file:checksum")

    def _unchanged(self, up: _Upload, digest: _Digest, entry: ManifestEntry | None,
                   remote: RemoteObject | None) -> bool:
        if self.remote is not None:
            if remote is None or remote.size != digest.size:
                return False
            remote_etag = _etag_value(remote.etag)
            if entry is not None and entry.sha256 == digest.sha256:
                return entry.etag is None or remote_etag is None or remote_etag == entry.etag
            # not in the manifest (another machine, a lost manifest): trust a matching ETag
            return _comparable(remote_etag) and remote_etag == digest.etag
        return entry is not None and entry.sha256 == digest.sha256 and entry.size == digest.size

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


# --------------------------------------------------------------------------- entry points


def _run_coroutine(factory: Callable[[], Any]) -> Any:
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


def publish_to_store(
    catalog_dir: str | os.PathLike[str],
    writer: ObjectStoreWriter | Any,
    *,
    prefix: str = "",
    target_name: str,
    public_url: str | None = None,
    absolute_asset_urls: bool = False,
    base_dir: str | os.PathLike[str] | None = None,
    workers: int = 64,
    part_size: int = DEFAULT_PART_SIZE,
    list_remote: bool = True,
    job_db: str | os.PathLike[str] | JobDatabase | None = None,
) -> PublishResult:
    """Upload a catalogue and its assets through any :class:`ObjectStoreWriter`.

    :func:`publish_to_s3` builds the S3 writer and calls this; see it for the arguments.
    ``writer`` may also be an obstore store, which is wrapped in :class:`ObstoreWriter`.
    ``target_name`` names the target in results, logs and the manifest's hash.
    """
    if not hasattr(writer, "put") or not hasattr(writer, "list"):
        writer = ObstoreWriter(writer)
    if part_size < 5 * 2**20:
        raise ConfigurationError("part_size must be at least 5 MiB (S3's smallest part)")
    root = find_root(catalog_dir)
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else root.parent.parent
    result = PublishResult(target=target_name)
    manifest = UploadManifest(manifest_path(base, target_name),
                              target=target_name)
    publisher = _Publisher(writer, prefix.strip("/"), base, root, manifest, public_url=public_url,
                           absolute_asset_urls=absolute_asset_urls, workers=workers,
                           part_size=part_size, list_remote=list_remote, result=result)
    started = time.monotonic()
    logger.info("publishing %s to %s (%d workers)", root, target_name, workers)
    try:
        _run_coroutine(publisher.run)
    finally:
        manifest.close()
    published_at = datetime.now(UTC)
    result.elapsed_s = time.monotonic() - started
    if job_db is not None and result.published_items:
        result.jobs_marked = mark_jobs_published(
            job_db, result.published_items, output_dir_of(root),
            failed_items=publisher.failed_items, at=published_at)
    logger.info("published %s", result.summary())
    return result


def publish_to_s3(
    catalog_dir: str | os.PathLike[str],
    target: str,
    *,
    endpoint_url: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    region: str | None = None,
    absolute_asset_urls: bool = False,
    public_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    workers: int = 64,
    part_size: int = DEFAULT_PART_SIZE,
    list_remote: bool = True,
    job_db: str | os.PathLike[str] | JobDatabase | None = None,
) -> PublishResult:
    """Upload a catalogue and the assets it references to ``s3://bucket/prefix``.

    Args:
        catalog_dir: The catalogue: its root document, its folder, or an output folder
            holding it in ``stac/``.
        target: ``s3://bucket/prefix``.
        endpoint_url: An S3-compatible endpoint (MinIO, CDSE, ...); default AWS, or
            ``AWS_ENDPOINT_URL``.
        access_key_id: Access key; default ``AWS_ACCESS_KEY_ID``.
        secret_access_key: Secret key; default ``AWS_SECRET_ACCESS_KEY``.
        session_token: Session token; default ``AWS_SESSION_TOKEN``.
        region: Region; default ``AWS_REGION``/``AWS_DEFAULT_REGION``, else ``us-east-1``.
        absolute_asset_urls: Point the uploaded items at their assets by absolute URL.
        public_url: HTTP(S) URL under which the prefix is read, for the root's ``self``
            link and absolute asset URLs (default: the endpoint's path-style URL, or
            AWS's virtual-hosted URL).
        base_dir: Folder whose layout is kept under the prefix (default: the parent of
            the catalogue's folder); every asset must lie inside it.
        workers: Uploads at once.
        part_size: Files larger than this are uploaded in parts of this size (≥ 5 MiB).
        list_remote: List the prefix first, so objects missing or changed in the bucket
            are uploaded again even when the manifest has them.
        job_db: Job database whose jobs get ``output_published_at`` once their items
            are published.

    Returns:
        What was uploaded; ``errors`` lists objects that failed (then the catalogues are
        not uploaded, and a rerun finishes the job).

    Raises:
        ConfigurationError: For a bad target or endpoint.
        PublishError: For an unreadable catalogue.
    """
    s3 = S3Target.parse(target)
    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
        "AWS_ENDPOINT_URL") or None
    credentials = S3Credentials.resolve(access_key_id, secret_access_key, session_token, region)
    store = s3_store(s3, credentials, endpoint_url)
    name = str(s3) if not endpoint_url else f"{s3} at {_clean_endpoint(endpoint_url)}"
    return publish_to_store(
        catalog_dir, ObstoreWriter(store), prefix=s3.prefix, target_name=name,
        public_url=public_url or default_public_url(s3, endpoint_url, credentials.region),
        absolute_asset_urls=absolute_asset_urls, base_dir=base_dir, workers=workers,
        part_size=part_size, list_remote=list_remote, job_db=job_db)
