"""Every item of a catalogue in one stac-geoparquet file (for analysis with pandas, DuckDB, ...).

Items are streamed from the catalogue on disk in batches through stac-geoparquet's
Arrow API: each batch becomes an Arrow record batch written to a temporary Parquet
file, the schemas of all batches are unified, and the batches are written into one
GeoParquet file (swapped in atomically), so memory stays bounded for any number of
items. The collection document goes into the file's metadata.

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
  same string.
"""

from __future__ import annotations

import itertools
import math
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eoextract._util.files import atomic_path
from eoextract.errors import ConfigurationError
from eoextract.stac.publish._publish_result import PublishError, PublishResult
from eoextract.stac.publish._walk import api_documents

logger = logging.getLogger(__name__)


def _require() -> Any:
    try:
        import stac_geoparquet.arrow as sga
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigurationError("stac-geoparquet export needs stac-geoparquet: pip install "
                                 "'eoextract[publish]'") from exc
    return sga


def export_geoparquet(
    catalog_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    chunk_size: int = 8192,
    asset_base_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
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

    Returns:
        What was written (``n_items``; ``target`` is the file).

    Raises:
        PublishError: If the catalogue has no items.
    """
    sga = _require()
    started = time.monotonic()
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    collection, items = api_documents(catalog_dir, asset_base_url=asset_base_url,
                                      base_dir=base_dir)
    first = next(items, None)
    if first is None:
        raise PublishError(f"{catalog_dir} holds no items to export")
    items = itertools.chain([first], items)
    result = PublishResult(target=str(target))

    def counted() -> Iterator[dict[str, Any]]:
        for item in items:
            result.n_items += 1
            item.pop("links", None)
            _map_nodata(item, _nodata_to_float)
            yield item

    with tempfile.TemporaryDirectory(prefix=".geoparquet-", dir=target.parent) as tmp:
        chunks = Path(tmp) / "chunks"
        chunks.mkdir()
        reader = sga.parse_stac_items_to_arrow(counted(), chunk_size=chunk_size,
                                               schema="ChunksToDisk", tmpdir=chunks)
        with atomic_path(target, suffix=".parquet") as staging:
            sga.to_parquet(reader, staging, collections={collection["id"]: collection})
    result.n_written = 1
    result.n_bytes = target.stat().st_size
    result.elapsed_s = time.monotonic() - started
    logger.info("wrote %d item(s) to %s (%.1f MiB) in %.1f s", result.n_items, target,
                result.n_bytes / 2**20, result.elapsed_s)
    return result


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
