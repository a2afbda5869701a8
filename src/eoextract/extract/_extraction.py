"""The extraction manager: openEO jobs in, files in a tidy tree and one STAC catalogue out.

:class:`ExtractionManager` (also exported as ``GFMAPJobManager``) is a
:class:`~eoextract.jobs.JobManager` with openeo-gfmap's constructor and three
extra steps for every finished job, in its finished-job hook
(:meth:`~eoextract.jobs.JobManager.process_finished_job`, run in a worker thread while the
job is ``downloading`` and then ``postprocessing``):

1. the job's result assets are streamed to temporary files inside ``output_dir``,
   verified, and moved to the path the user's ``output_path_generator`` chooses
   (:mod:`eoextract.extract._placement`, :mod:`eoextract.jobs._download`), once that
   path is registered for the job (:mod:`eoextract.extract._output_registry`: no two jobs
   share a file, and the manager's own files are never replaced);
2. one STAC item is built per data asset (one per sampled feature with
   ``sample_by_feature``) from the file itself (:mod:`eoextract.extract._stac_item`);
3. the user's ``post_job_action(job_items, row, parameters)`` (or ``(job_items, row)``)
   runs in a pool of
   ``n_threads`` (or a given executor); it may edit, add or drop items and add local
   assets. ``file:size``/``file:checksum`` are then computed from the files as they
   are, and the job's items are written at once to
   ``output_dir/.eoextract/items/<job>.json`` (hrefs relative to ``output_dir``), each
   item naming its job (``eoextract:job_key``, ``eoextract:job_id``). The job's
   ``output_dir`` column records its own folder (the deepest one holding its files).

A failure in any step marks that job only (retried when retryable). Results whose
checksum stays wrong after repeated downloads make the job run again on the backend.
:meth:`ExtractionManager.create_stac` (or :func:`build_catalogue`, from any process)
streams the stored items into a relocatable catalogue and validates it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pystac

from eoextract.errors import ChecksumMismatch, ConfigurationError, StacError
from eoextract.extract._catalogue import build_catalogue
from eoextract.extract._store import ItemStore
from eoextract.extract._filemeta import FileIndex
from eoextract.extract._stac_item import build_item, make_item_id, read_file_metadata, refresh_file_metadata
from eoextract.extract._callbacks import check_job_inputs, check_start_job, post_job_action_arity
from eoextract.extract._output_registry import PATHS_DIR, OutputRegistry, database_files
from eoextract.extract._placement import OutputPathGenerator
from eoextract.jobs import FinishedJob, FinishedJobResult, JobManager
from eoextract.jobs._download import (
    STATE_DIR,
    TEMP_PREFIX,
    DownloadedAsset,
    RemoteAsset,
    download_job_assets,
    fetch_job_assets,
    remove_stale_temp_files,
)
from eoextract.extract._skip_existing import without_extracted
from eoextract.jobs._quality import JobOutput, gate
from eoextract.jobs.db import JobDatabase
from eoextract.jobs.status import JobStatus

_log = logging.getLogger(__name__)

#: Held around every file access of the manager and, by default, each post-job action run
#: in this process: netCDF-C and HDF5 (under xarray's default NetCDF engine and GDAL) are
#: not thread-safe; two threads writing different NetCDF files can corrupt or hang both.
FILE_LOCK = threading.RLock()

#: Temporary download files untouched for this long (seconds) are removed when a run starts.
STALE_TEMP_SECONDS = 3600.0

#: ``post_job_action(job_items, row, parameters) -> list[pystac.Item]`` (or, as ESA
#: WorldCereal's, ``post_job_action(job_items, row)``).
PostJobAction = (Callable[[list[pystac.Item], pd.Series, dict], list[pystac.Item]]
                 | Callable[[list[pystac.Item], pd.Series], list[pystac.Item]])

#: Item properties naming the job an item came from: its key in the job database and its
#: id on the backend.
JOB_KEY_PROPERTY = "eoextract:job_key"
JOB_ID_PROPERTY = "eoextract:job_id"


# --------------------------------------------------------------------------- the manager


def _locked(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        with FILE_LOCK:
            return fn(*args)

    return call


#: ``common_name`` values of the eo extension v1.1.0, which the items declare.
_EO_V1_COMMON_NAMES = frozenset({
    "coastal", "blue", "green", "red", "rededge", "yellow", "pan", "nir", "nir08", "nir09",
    "cirrus", "swir16", "swir22", "lwir", "lwir11", "lwir12",
})


def _eo_v1_common_names(item: pystac.Item) -> None:
    """Map newer common names (``rededge071``, as STAC 1.1 ``bands`` use) onto eo v1.1.0's."""
    for asset in item.assets.values():
        for band in asset.extra_fields.get("eo:bands") or []:
            name = band.get("common_name") if isinstance(band, dict) else None
            if name is None or name in _EO_V1_COMMON_NAMES:
                continue
            base = re.sub(r"\d+$", "", str(name))
            if base in _EO_V1_COMMON_NAMES:
                band["common_name"] = base
            else:
                del band["common_name"]


def _is_data_asset(asset: RemoteAsset) -> bool:
    return not asset.roles or "data" in asset.roles


def _order_key(done: DownloadedAsset) -> tuple[int, int, str]:
    index = done.asset.geometry_index
    return (0, index, done.asset.name) if index is not None else (1, 0, done.asset.name)


class ExtractionManager(JobManager):
    """Run extraction jobs, place their results, describe them in STAC.

    The constructor follows openeo-gfmap's ``GFMAPJobManager``, so scripts written for
    it run with an import change.

    Args:
        output_dir: Folder for every file of the extraction (results, auxiliary files,
            stored items, the catalogue); nothing is written outside it.
        output_path_generator: ``(root_folder, tmp_path, geometry_index, row) -> Path``
            giving each result file's final place inside ``output_dir``; it may open
            ``tmp_path`` (openeo-gfmap 0.4.7's and ESA WorldCereal's
            ``(root_dir, idx, row, asset_id)`` works too). Each path is registered for
            its job before the file is moved there: a job aiming at a path another job
            took fails with :class:`~eoextract.errors.OutputPathConflict`, and the
            manager's own files (``.eoextract/``, ``stac/``, the job database) are refused.
        collection_id: Id of the STAC collection.
        collection_description: Its description.
        post_job_action: ``(job_items, row, parameters) -> list[pystac.Item]`` (or
            ``(job_items, row)``, as ESA WorldCereal's), called once per finished job after
            its files are in place. The items carry the properties ``eoextract:job_key``
            and ``eoextract:job_id`` (the job's key and its backend job id).
        poll_sleep: Seconds between two polls of the backends.
        n_threads: Threads running post-job actions (when no ``executor`` is given).
        post_job_params: The ``parameters`` passed to ``post_job_action``.
        stac: Path of an existing ``collection.json`` that :meth:`create_stac` extends.
        executor: A ``concurrent.futures.Executor`` (or a ``distributed.Client``) that
            runs post-job actions instead of the thread pool; the manager does not shut
            it down.
        download_workers: Parallel downloads per job.
        max_attempts: Attempts per job for retryable failures.
        retry_backoff: Seconds before the first retry (see
            :class:`~eoextract.jobs.JobManager`).
        data_asset_key: Key of the result file's asset in each item (``None``: the
            backend's asset name, e.g. ``openEO_3.nc``).
        serialize_post_job_actions: Run post-job actions of this process one at a
            time, under the lock that also guards the manager's own file reading
            (:data:`FILE_LOCK`), because the NetCDF and HDF5 libraries are not
            thread-safe. Set it False only when post-job actions use thread-safe I/O;
            actions sent to another process (a ``distributed.Client`` or a
            ``ProcessPoolExecutor`` as ``executor``) never take the lock.
        required_columns: Columns the job dataframe must have (checked before
            anything is submitted).
        **job_manager_kwargs: Further :class:`~eoextract.jobs.JobManager`
            options (``cancel_running_job_after``, ``lease_seconds``, ...).

    Raises:
        ConfigurationError: For callbacks that cannot be called as described.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        output_path_generator: Callable[..., Any],
        collection_id: str,
        collection_description: str = "",
        post_job_action: PostJobAction | None = None,
        poll_sleep: float = 5,
        n_threads: int = 1,
        post_job_params: Mapping[str, Any] | None = None,
        stac: str | os.PathLike[str] | None = None,
        *,
        executor: Executor | Any | None = None,
        download_workers: int = 4,
        max_attempts: int = 3,
        retry_backoff: Any = None,
        data_asset_key: str | None = "data",
        required_columns: Sequence[str] = (),
        serialize_post_job_actions: bool = True,
        **job_manager_kwargs: Any,
    ) -> None:
        job_manager_kwargs.pop("root_dir", None)
        job_manager_kwargs.pop("download_results", None)
        super().__init__(poll_sleep=poll_sleep, root_dir=output_dir, download_results=True,
                         max_attempts=max_attempts, retry_backoff=retry_backoff, **job_manager_kwargs)
        if not collection_id:
            raise ConfigurationError("collection_id must not be empty")
        if n_threads < 1:
            raise ConfigurationError("n_threads must be at least 1")
        if download_workers < 1:
            raise ConfigurationError("download_workers must be at least 1")
        self._post_job_arity = 3 if post_job_action is None else post_job_action_arity(post_job_action)
        if executor is not None and not callable(getattr(executor, "submit", None)):
            raise ConfigurationError("executor must have a submit() method (concurrent.futures.Executor)")
        self.output_dir = Path(output_dir).absolute()
        self.output_path_generator = OutputPathGenerator(output_path_generator, self.output_dir)
        self.collection_id = collection_id
        self.collection_description = collection_description
        self.post_job_action = post_job_action
        self.n_threads = int(n_threads)
        self.post_job_params: dict[str, Any] = dict(post_job_params or {})
        self.stac = Path(stac) if stac is not None else None
        self.download_workers = int(download_workers)
        self.data_asset_key = data_asset_key
        self.required_columns = tuple(required_columns)
        self.serialize_post_job_actions = bool(serialize_post_job_actions)
        self._executor = executor
        self._own_pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._job_db_files: list[Path] = []

    # ------------------------------------------------------------------ running
    def get_job_dir(self, job_id: str) -> Path:
        """Folder for a job's metadata and error logs (:meth:`on_job_error`): in the
        output's ``.eoextract`` state folder, so the data folder holds only extracted files."""
        return self.output_dir / STATE_DIR / "jobs" / f"job_{job_id}"

    def run_jobs(
        self,
        df: pd.DataFrame | None = None,
        start_job: Callable[..., Any] | None = None,
        job_db: str | Path | JobDatabase | None = None,
        **kwargs: Any,
    ) -> dict:
        """Run every job to a final status (as openeo-gfmap: ``run_jobs(df, create_datacube_fn, path)``).

        Temporary files that interrupted runs left in ``output_dir/.eoextract`` (partial
        downloads, download records and item files being written) and that nobody touched
        for :data:`STALE_TEMP_SECONDS` are removed first.

        Args:
            df: Job dataframe (one row per job); rows already in ``job_db`` are kept.
            start_job: ``create_datacube_fn(row, connection, provider=None,
                connection_provider=None) -> BatchJob``.
            job_db: Job database path (``.csv``, ``.parquet``, ``.db``), URL or object.
            skip_existing: ``(source, property)``: samples already in a catalogue, a
                stac-geoparquet file or a STAC API are not extracted again.

        Returns:
            Run statistics (see :meth:`JobManager.run_jobs`).

        Raises:
            ConfigurationError: For a missing or empty job dataframe (with no jobs in
                ``job_db`` either), missing required columns, or a ``start_job`` that
                cannot be called as described — all before anything is submitted.
        """
        if start_job is None:
            raise ConfigurationError("run_jobs needs a create_datacube_fn: run_jobs(df, create_datacube_fn, job_db)")
        self._check_ready(start_job)
        check_start_job(start_job)
        if (skip := kwargs.pop("skip_existing", None)) is not None and df is not None:
            df = without_extracted(df, *skip)
        check_job_inputs(df, job_db, self.required_columns)
        self._job_db_files = database_files(job_db)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        ItemStore(self.output_dir).write_settings(collection_id=self.collection_id,
                                  description=self.collection_description)
        # left by interrupted runs (downloads, download records, item files); live ones are recent
        leftovers = (("tmp", TEMP_PREFIX), ("downloads", TEMP_PREFIX), ("items", ".tmp-"), (".", ".tmp-"),
                     *((f"paths/{p.name}", ".tmp-") for p in (self.output_dir / PATHS_DIR).glob("??")))
        for folder, prefix in leftovers:
            removed = remove_stale_temp_files(self.output_dir / STATE_DIR / folder, STALE_TEMP_SECONDS,
                                              prefix=prefix)
            if removed:
                _log.info("removed %d stale temporary file(s) from %s/%s", removed, STATE_DIR, folder)
        try:
            return super().run_jobs(df, start_job, job_db, **kwargs)
        finally:
            self._close_pool()

    def stop_job_thread(self, *args: Any, **kwargs: Any) -> None:
        """Stop the background thread (see :meth:`JobManager.stop_job_thread`)."""
        super().stop_job_thread(*args, **kwargs)
        self._close_pool()

    def start_job_thread(self, start_job: Callable[..., Any], job_db: str | Path | JobDatabase) -> None:
        """Run the jobs in a background thread (see :meth:`JobManager.start_job_thread`)."""
        check_start_job(start_job)
        self._job_db_files = database_files(job_db)
        super().start_job_thread(start_job, job_db)

    # ------------------------------------------------------------------ finished jobs
    def process_finished_job(self, job: FinishedJob) -> FinishedJobResult:
        """Download, describe and post-process one finished job's results, then store its items.

        The files are placed (job status ``downloading``), one item is built per data file,
        then the job is ``postprocessing`` while ``post_job_action`` runs and the items are
        stored. Results that keep failing verification are corrupt on the backend: the job
        runs again. A custom :meth:`on_job_done` is called last.
        """
        row = job.row
        connection = job.connection
        assets, session, headers = fetch_job_assets(connection, job.backend_job_id)
        data_assets = [a for a in assets if _is_data_asset(a)]
        if not data_assets:
            raise StacError(f"job {job.job_key}: the results have no data assets "
                            f"({', '.join(a.name for a in assets)})")
        try:
            done = download_job_assets(
                session, data_assets, self.output_dir, self._chooser(row, data_assets, job.job_key),
                max_workers=self.download_workers, headers=headers, job_key=job.job_key,
                max_asset_bytes=self.max_asset_bytes, checksum_algorithm=self.checksum_algorithm,
            )
        except ChecksumMismatch as exc:
            return FinishedJobResult(run_again=exc)
        done.sort(key=_order_key)
        again = gate(self.quality_checks, JobOutput(job.job_key, row, [d.path for d in done]))
        if again is not None:  # before any item is built: a failing job adds none to the catalogue
            return FinishedJobResult(run_again=again)
        fetched = sum(not d.reused for d in done)
        if job.status == JobStatus.POSTPROCESSING and fetched:
            _log.warning("job %s: %d of %d file(s) were no longer in place and verified; fetched them "
                         "again from backend job %s", job.job_key, fetched, len(done), job.backend_job_id)
        with FILE_LOCK:
            items = [self._item_for(job.job_key, d) for d in done]
        for item in items:
            _mark_job(item, job)
        job.postprocessing(f"{len(done)} file(s) in place")
        if self.post_job_action is not None:
            items = self._run_post_job_action(items, row, job.job_key)
        store = ItemStore(self.output_dir)
        stored = []
        seen: set[str] = set()
        known = FileIndex(done)  # once per job: each item then looks its files up
        for item in items:
            with FILE_LOCK:
                refresh_file_metadata(item, self.output_dir, known=known, algorithm=self.checksum_algorithm)
            _eo_v1_common_names(item)
            _mark_job(item, job)
            if item.id in seen:
                raise StacError(f"job {job.job_key}: two items have the id {item.id!r}")
            seen.add(item.id)
            stored.append(store.stored_item(item, job.job_key))
        path = store.write_job(job.job_key, job.backend_job_id, stored)
        _log.info("job %s: %d item(s) stored in %s", job.job_key, len(stored), path.name)
        if type(self).on_job_done is not JobManager.on_job_done:
            self.on_job_done(job.batch_job, row)
        return FinishedJobResult(fields={"output_dir": str(_job_folder(done, self.output_dir))})

    def _chooser(self, row: pd.Series, assets: Sequence[RemoteAsset],
                 job_key: str) -> Callable[[RemoteAsset, Path], Path]:
        """The job's ``choose_path``: user generators are never called concurrently, and
        each path is registered for the job before the file goes there."""
        choose = self.output_path_generator.chooser(row, assets)
        registry = OutputRegistry(self.output_dir, reserved_files=self._job_db_files)

        def serialised(asset: RemoteAsset, tmp_path: Path) -> Path:
            with FILE_LOCK:
                path = choose(asset, tmp_path)
            return registry.register(path, job_key, asset=asset.name)

        return serialised

    def _item_for(self, job_key: str, done: DownloadedAsset) -> pystac.Item:
        meta = read_file_metadata(done.path, checksum=done.checksum)
        return build_item(
            done.asset, meta,
            item_id=make_item_id(job_key, done.asset.name, done.path),
            collection_id=self.collection_id,
            asset_key=self.data_asset_key,
        )

    def _run_post_job_action(self, items: list[pystac.Item], row: pd.Series, job_key: str) -> list[pystac.Item]:
        assert self.post_job_action is not None
        pool = self._pool()
        action: Callable[..., Any] = self.post_job_action
        if self.serialize_post_job_actions and isinstance(pool, ThreadPoolExecutor):
            action = _locked(action)
        args = (items, row, dict(self.post_job_params))[:self._post_job_arity]
        if _is_dask_client(pool):
            # not "pure": a retried job must run its action again, not get a cached result
            future = pool.submit(action, *args, pure=False)
        else:
            future = pool.submit(action, *args)
        result = future.result()
        if isinstance(result, pystac.Item):
            result = [result]
        if not isinstance(result, (list, tuple)) or not all(isinstance(i, pystac.Item) for i in result):
            got = type(result).__name__
            if isinstance(result, (list, tuple)):
                got += " of " + ", ".join(sorted({type(i).__name__ for i in result}))
            raise TypeError(f"post_job_action returned {got} for job {job_key}; "
                            "it must return a list of pystac.Item")
        return list(result)

    def _pool(self) -> Any:
        if self._executor is not None:
            return self._executor
        with self._pool_lock:
            if self._own_pool is None:
                self._own_pool = ThreadPoolExecutor(max_workers=self.n_threads,
                                                    thread_name_prefix="eoextract-postjob")
            return self._own_pool

    def _close_pool(self) -> None:
        with self._pool_lock:
            pool, self._own_pool = self._own_pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # ------------------------------------------------------------------ catalogue
    def create_stac(
        self,
        output_path: str | os.PathLike[str] | None = None,
        catalog_type: pystac.CatalogType | str | None = None,
        *,
        validate: bool = True,
        **collection_options: Any,
    ) -> Path:
        """Write the STAC catalogue of every finished job and validate it.

        Args:
            output_path: Folder of the catalogue (default ``output_dir/stac``).
            catalog_type: Accepted for compatibility; the catalogue is always
                self-contained (relative hrefs), so ``ABSOLUTE_PUBLISHED`` is refused.
            validate: Validate the result (schemas, links, asset files).
            **collection_options: ``title``, ``license``, ``providers``, ``keywords``,
                ``extra_fields``, ``layout``, ``max_links_per_catalog`` (see
                :func:`~eoextract.stac.build_collection`).

        Returns:
            Path of ``collection.json``.

        Raises:
            ConfigurationError: For ``catalog_type=ABSOLUTE_PUBLISHED``.
            StacValidationError: When the catalogue does not validate.
        """
        if catalog_type is not None and str(pystac.CatalogType(catalog_type)) == str(
                pystac.CatalogType.ABSOLUTE_PUBLISHED):
            raise ConfigurationError("the catalogue is written with relative hrefs only; "
                                     "use SELF_CONTAINED or RELATIVE_PUBLISHED")
        return build_catalogue(
            self.output_dir, self.collection_id, self.collection_description,
            output_path=output_path, existing=self.stac, validate=validate, **collection_options,
        )


def _mark_job(item: pystac.Item, job: FinishedJob) -> None:
    """Name the job an item came from in its properties."""
    item.properties[JOB_KEY_PROPERTY] = job.job_key
    item.properties[JOB_ID_PROPERTY] = job.backend_job_id


def _job_folder(done: Sequence[DownloadedAsset], output_dir: Path) -> Path:
    """The job's own folder: the deepest folder holding all its placed files."""
    folders = {str(d.path.parent) for d in done}
    try:
        return Path(os.path.commonpath(sorted(folders))) if folders else output_dir
    except ValueError:  # different drives
        return output_dir


def _is_dask_client(pool: Any) -> bool:
    """Whether ``pool`` is a ``distributed.Client`` (its ``submit`` caches pure calls)."""
    return type(pool).__module__.split(".")[0] == "distributed" and hasattr(pool, "gather")


#: openeo-gfmap's name, for scripts that port with an import change.
GFMAPJobManager = ExtractionManager
