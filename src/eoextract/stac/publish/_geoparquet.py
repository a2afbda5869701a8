"""Every item of a catalogue in one stac-geoparquet file (for analysis with pandas, DuckDB, ...).

The catalogue's item files are listed (not read) by a walk of its catalogues and cut into
chunks; each chunk is read, its GeoJSON geometries turned into WKB at once, the rest turned
into an Arrow record batch by stac-geoparquet (its layout: properties as top-level columns,
timestamps, a bbox struct, GeoArrow metadata), and written to a temporary Parquet file, in
worker processes for big catalogues (the conversion is CPU-bound). The schemas of all
chunks are unified and the chunks streamed, one batch at a time, into one GeoParquet file
(swapped in atomically), so memory stays bounded for any number of items. The collection
document goes into the file's metadata.

What a round trip (:func:`read_geoparquet_items`) does not give back as it was:

* ``links``: structural links (root, parent, collection, item) are dropped on export;
* numbers: a list column holding both ints and floats across items becomes floats
  (``proj:transform``, ``proj:bbox``); ints stay ints (``proj:shape``);
* missing fields: a property absent from one item but present in others comes back as
  ``None`` in the first when the Arrow column is nullable;
* asset hrefs: relative hrefs are made absolute (local paths) unless ``asset_base_url``
  is given, as a single file has no place relative hrefs could refer to;
* ``raster:bands`` ``nodata``: stored as a float (``"nan"``/``"inf"``/``"-inf"`` as the
  float they name, since one Arrow column cannot hold both), read back as a number or the
  same string;
* ``proj:geometry`` present in some items only: DuckDB and geopandas read the file, but
  stac-geoparquet's reader (and so :func:`read_geoparquet_items`) fails on the nulls.
"""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from eoextract._util.files import atomic_path
from eoextract._util.processes import spawned_pool
from eoextract.errors import ConfigurationError, StacError
from eoextract.stac.publish._publish_result import PublishError, PublishResult
from eoextract.stac.publish._walk import ApiItemMaker, api_collection, item_files

logger = logging.getLogger(__name__)

#: Below this many items a catalogue is exported in this process (no worker start-up).
PARALLEL_MIN_ITEMS = 20_000


def _require() -> Any:
    try:
        import stac_geoparquet.arrow as sga
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigurationError("stac-geoparquet export needs stac-geoparquet: pip install "
                                 "'eoextract[publish]'") from exc
    return sga


def _convert_chunk(maker: ApiItemMaker, paths: list[str], target: str) -> tuple[int, Any]:
    """Read the item files ``paths``, write them as one Parquet file; (items, Arrow schema)."""
    import pyarrow.parquet as pq

    gc_was_enabled = gc.isenabled()
    gc.disable()  # item dicts hold no cycles; collections over them cost more than the rest
    try:
        items = []
        for path in paths:
            item = maker.from_file(path)
            item.pop("links", None)
            _map_nodata(item, _nodata_to_float)
            items.append(item)
        table = _items_to_arrow(items)
        del items
    finally:
        if gc_was_enabled:
            gc.enable()
    pq.write_table(table, target)
    return table.num_rows, table.schema


def _items_to_arrow(items: list[dict[str, Any]]) -> Any:
    """The stac-geoparquet Arrow table of ``items`` (dicts this module owns: changed in place).

    stac-geoparquet's own entry point deep-copies every item before turning its GeoJSON
    geometries into WKB, which costs most of the conversion; here the geometries are
    turned into WKB in place, all at once, and the rest is left to stac-geoparquet.
    """
    import pyarrow as pa

    try:
        from stac_geoparquet.arrow._batch import StacJsonBatch
    except ImportError:  # pragma: no cover - a stac-geoparquet without that class
        sga = _require()
        return sga.parse_stac_items_to_arrow(items, chunk_size=len(items),
                                             schema="FirstBatch").read_all()
    places: list[tuple[dict[str, Any], str]] = []  # (dict, key) of each GeoJSON geometry
    for item in items:
        places.append((item, "geometry"))
        properties = item.get("properties")
        if isinstance(properties, dict) and "proj:geometry" in properties:
            places.append((properties, "proj:geometry"))
        for asset in (item.get("assets") or {}).values():
            if isinstance(asset, dict) and "proj:geometry" in asset:
                places.append((asset, "proj:geometry"))
    for (holder, key), wkb in zip(places, _wkb([h[k] for h, k in places]), strict=True):
        holder[key] = wkb
    batch = pa.RecordBatch.from_struct_array(pa.array(items))
    return pa.Table.from_batches([StacJsonBatch(batch).to_arrow_batch().inner])


def _wkb(geometries: list[Any]) -> list[bytes | None]:
    """ISO WKB of GeoJSON geometries (None stays None), parsed by GEOS in one call."""
    import shapely

    texts = [None if g is None else orjson.dumps(g).decode() for g in geometries]
    return list(shapely.to_wkb(shapely.from_geojson(texts), flavor="iso"))


def _chunks(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(paths)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def export_geoparquet(
    catalog_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    chunk_size: int = 8192,
    asset_base_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> PublishResult:
    """Write every item of a catalogue into one stac-geoparquet file.

    Args:
        catalog_dir: The catalogue (root document, its folder or the output folder).
        output: The ``.parquet`` file to write (replaced atomically when it exists).
        chunk_size: Items per Arrow record batch.
        asset_base_url: URL asset paths relative to ``base_dir`` are appended to
            (default: absolute local paths).
        base_dir: Folder the asset paths are relative to (default: the parent of the
            catalogue's folder).
        workers: Processes converting chunks (default: the CPUs, at most 4); catalogues
            of fewer than ``PARALLEL_MIN_ITEMS`` items are converted in this process.

    Returns:
        What was written (``n_items``; ``target`` is the file).

    Raises:
        PublishError: If the catalogue has no items.
        ConfigurationError: ``output`` is a folder.
    """
    sga = _require()
    import pyarrow as pa

    started = time.monotonic()
    target = Path(output)
    if target.is_dir():
        raise ConfigurationError(f"{target} is a folder; give the path of the .parquet file to write")
    target.parent.mkdir(parents=True, exist_ok=True)
    collection, maker = api_collection(catalog_dir, asset_base_url=asset_base_url,
                                       base_dir=base_dir)
    paths = item_files(catalog_dir)
    head = list(itertools.islice(paths, PARALLEL_MIN_ITEMS))
    if not head:
        raise PublishError(f"{catalog_dir} holds no items to export")
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    parallel = workers > 1 and len(head) == PARALLEL_MIN_ITEMS
    chunks = _chunks(itertools.chain(head, paths), chunk_size)
    del head
    result = PublishResult(target=str(target))

    with tempfile.TemporaryDirectory(prefix=".geoparquet-", dir=target.parent) as tmp:
        files: list[str] = []
        schema: Any = None

        def collect(n_items: int, chunk_schema: Any) -> None:
            nonlocal schema
            result.n_items += n_items
            schema = chunk_schema if schema is None else pa.unify_schemas(
                [schema, chunk_schema], promote_options="permissive")

        tasks = ((chunk, os.path.join(tmp, f"{i:06d}.parquet")) for i, chunk in enumerate(chunks))
        if parallel:
            with spawned_pool(workers, error=StacError, option="workers") as pool:
                pending: deque[Future[tuple[int, Any]]] = deque()
                for chunk, file in tasks:
                    files.append(file)
                    pending.append(pool.submit(_convert_chunk, maker, chunk, file))
                    while len(pending) > 2 * workers:
                        collect(*pending.popleft().result())
                while pending:
                    collect(*pending.popleft().result())
        else:
            for chunk, file in tasks:
                files.append(file)
                collect(*_convert_chunk(maker, chunk, file))
        reader = pa.RecordBatchReader.from_batches(schema,
                                                   _read_as(files, schema, chunk_size))
        with atomic_path(target, suffix=".parquet") as staging:
            sga.to_parquet(reader, staging, collections={collection["id"]: collection})
    result.n_written = 1
    result.n_bytes = target.stat().st_size
    result.elapsed_s = time.monotonic() - started
    logger.info("wrote %d item(s) to %s (%.1f MiB) in %.1f s", result.n_items, target,
                result.n_bytes / 2**20, result.elapsed_s)
    return result


def _read_as(files: list[str], schema: Any, batch_size: int) -> Iterator[Any]:
    """The record batches of the Parquet ``files`` in ``schema``, one file at a time.

    A file of that schema is read batch by batch without read-ahead (memory stays at about
    one batch); one of another schema (fewer fields, narrower types) is cast by a dataset.
    """
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    for file in files:
        with pq.ParquetFile(file, pre_buffer=False) as parquet:
            if parquet.schema_arrow.equals(schema):
                yield from parquet.iter_batches(batch_size=batch_size, use_threads=False)
                continue
        dataset = pads.dataset(file, schema=schema, format="parquet")
        yield from dataset.to_batches(batch_size=batch_size, use_threads=False)


def read_geoparquet_items(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the items of a stac-geoparquet file as dicts, batch by batch."""
    import pyarrow.parquet as pq

    sga = _require()
    parquet = pq.ParquetFile(str(path))
    for batch in parquet.iter_batches():
        for item in sga.stac_table_to_items(batch):
            _map_nodata(item, _nodata_from_float)
            yield item


def _map_nodata(item: dict[str, Any], convert: Any) -> None:
    for asset in (item.get("assets") or {}).values():
        for band in asset.get("raster:bands") or []:
            if isinstance(band, dict) and band.get("nodata") is not None:
                band["nodata"] = convert(band["nodata"])


def _nodata_to_float(value: Any) -> Any:
    try:
        return float(value)  # also "nan", "inf", "-inf"
    except (TypeError, ValueError):
        return value


def _nodata_from_float(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value
