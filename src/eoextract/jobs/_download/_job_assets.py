"""Downloading the result assets of one job: in parallel, verified, placed, recorded."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from eoextract._util.files import fsync_dir
from eoextract._util.hrefs import ensure_inside
from eoextract.errors import DownloadError, UnsafeAssetPath
from eoextract.jobs._download._disk import STATE_DIR, fdatasync_file, place_file
from eoextract.jobs._download._document import RemoteAsset, safe_relative_path
from eoextract.jobs._download._download_records import DownloadedAsset, _Manifest
from eoextract.jobs._download._transfer import Headers, download_to_temp

logger = logging.getLogger(__name__)


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
    (:func:`~eoextract.jobs._download.download_asset`); ``choose_path(asset, tmp_path)`` then gives its final
    path (it may open the temporary file; calls are serialised, so it need not be
    thread-safe), and the file is moved there (:func:`~eoextract.jobs._download.place_file`). Every placed
    file is recorded in ``<root>/.eoextract/downloads/<hash of job_key>.jsonl``; on
    a rerun an asset whose recorded file is still there with the recorded size and
    checksum (and the backend's, when announced) is not downloaded again, and
    ``choose_path`` is not called for it.

    If some assets fail, the others are still placed and recorded, then the first
    failure is raised (with a note listing all of them).

    Args:
        session: HTTP session (see :func:`~eoextract.jobs._download.session_for`).
        assets: The job's assets (:func:`~eoextract.jobs._download.parse_job_results`).
        root: Output folder; every file stays inside it.
        choose_path: ``(asset, tmp_path) -> final path`` (absolute inside ``root`` or
            relative to it).
        max_workers: Parallel downloads.
        skip_verified: Reuse files placed and verified by a previous run.
        headers: Extra request headers or a per-URL callable (:class:`~eoextract.jobs._download.BackendHeaders`).
        job_key: Stable key of the job in the job database, naming its download
            record; by default derived from the asset URLs without query strings.
        tmp_dir: Folder for temporary files (default ``<root>/.eoextract/tmp``); keep it
            on the filesystem of ``root``.
        **download_options: Passed on to :func:`~eoextract.jobs._download.download_to_temp` (``chunk_size``,
            ``timeout``, ``max_resumes``, ``max_attempts``, ``backoff``, ``fsync``,
            ``max_asset_bytes``).

    Returns:
        One :class:`DownloadedAsset` per asset, in input order.

    Raises:
        UnsafeAssetPath: An asset name or a chosen path would leave ``root``.
        DownloadError: No assets, duplicate asset names, two assets sent to the same
            path, or a failed download (:class:`ChecksumMismatch` after failed
            verification, :class:`AssetRefused` for a body beyond its bounds).
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
