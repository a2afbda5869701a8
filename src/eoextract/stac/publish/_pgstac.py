"""Load a catalogue straight into a pgstac database.

:func:`load_into_pgstac` uses pypgstac's ``Loader`` (the collection first, then the
items in chunks, ``Methods.upsert`` by default), the fastest path for large catalogues.
Documents are prepared as for a STAC API
(:func:`~eoextract.stac.publish._walk.api_documents`): no local structural links, each
item's ``collection`` set, asset hrefs absolute (under ``asset_base_url`` when given).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from eoextract._util.redact import redact
from eoextract.errors import ConfigurationError
from eoextract.stac.publish._publish_result import PublishError, PublishResult
from eoextract.stac.publish._walk import api_documents

logger = logging.getLogger(__name__)


def _psycopg_dsn(dsn: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix):]
    return dsn


def load_into_pgstac(
    catalog_dir: str | os.PathLike[str],
    dsn: str,
    *,
    method: str = "upsert",
    asset_base_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 10000,
) -> PublishResult:
    """Load a catalogue into a pgstac database with pypgstac (collection first).

    Args:
        catalog_dir: The catalogue (root document, its folder or the output folder).
        dsn: ``postgresql://user:password@host:port/db`` (``postgresql+psycopg://`` too)
            of a database migrated with ``pypgstac migrate``.
        method: pypgstac load method: ``upsert`` (default), ``insert``, ``ignore``,
            ``insert_ignore`` or ``delsert``.
        asset_base_url: Public URL of the base folder for asset hrefs (see module doc).
        base_dir: Folder asset paths are relative to under ``asset_base_url``.
        chunk_size: Items per load chunk.

    Returns:
        What was loaded.

    Raises:
        ConfigurationError: For an unknown method or missing pypgstac.
        PublishError: If loading fails (nothing of the failing chunk is kept).
    """
    try:
        from pypgstac.db import PgstacDB
        from pypgstac.load import Loader, Methods
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigurationError("load_into_pgstac needs pypgstac: pip install "
                                 "'eoextract[publish]'") from exc
    try:
        mode = Methods(method)
    except ValueError:
        raise ConfigurationError(f"unknown pypgstac method {method!r}: use one of "
                                 f"{', '.join(m.value for m in Methods)}") from None
    started = time.monotonic()
    result = PublishResult(target=redact(dsn))
    collection, items = api_documents(catalog_dir, asset_base_url=asset_base_url,
                                      base_dir=base_dir)

    def counted() -> Iterator[dict[str, Any]]:
        for item in items:
            result.n_items += 1
            result.published_items.append(item["id"])
            yield item

    try:
        with PgstacDB(dsn=_psycopg_dsn(dsn)) as db:
            loader = Loader(db=db)
            loader.load_collections(iter([collection]), insert_mode=mode)
            loader.load_items(counted(), insert_mode=mode, chunksize=chunk_size)
    except PublishError:
        raise
    except Exception as exc:
        raise PublishError(f"loading into pgstac at {redact(dsn)} failed: "
                           f"{redact(f'{type(exc).__name__}: {exc}')}", result=result) from exc
    result.n_written = result.n_items + 1
    result.elapsed_s = time.monotonic() - started
    logger.info("published %s", result.summary())
    return result
