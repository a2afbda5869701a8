"""Publishing a catalogue: object storage, STAC APIs, pgstac, stac-geoparquet.

A catalogue written by :func:`~eoextract.stac.build_collection` (``stac/collection.json``,
sub-catalogues, relative hrefs everywhere) is published as it is:

* :func:`publish_to_s3` uploads the JSON files and the asset files they reference, with
  the same relative layout, to ``s3://bucket/prefix`` (parallel, verified, incremental);
  :func:`publish_to_store` does the same through any :class:`ObjectStoreWriter`;
* :func:`publish_to_stac_api` loads the collection and its items into a STAC API with
  the Transactions extension;
* :func:`load_into_pgstac` loads them straight into a pgstac database;
* :func:`export_geoparquet` writes every item into one stac-geoparquet file.

:func:`publish` picks one of them from the target's URL (or a ``kind``); the command
line's ``eoextract stac publish`` goes through it too. Every function returns a
:class:`PublishResult` naming the items published and those that failed, so callers can
record the publication (``eoextract.extract.publish_catalogue`` marks the jobs that
produced the items). The optional dependencies (obstore, requests, pypgstac,
stac-geoparquet) are imported only by the target that needs them.

Credentials are taken from arguments or the environment and are never written to the
catalogue, the upload manifest or the log.
"""

from __future__ import annotations

from eoextract.stac.publish._geoparquet import export_geoparquet, read_geoparquet_items
from eoextract.stac.publish._pgstac import load_into_pgstac
from eoextract.stac.publish._publish_result import PublishError, PublishResult
from eoextract.stac.publish._s3 import ObstoreWriter, publish_to_s3, publish_to_store
from eoextract.stac.publish._stac_api import publish_to_stac_api
from eoextract.stac.publish._targets import TARGETS, PublishTarget, publish
from eoextract.stac.publish._uploader import ObjectStoreWriter, RemoteObject
from eoextract.stac.publish._walk import CatalogEntry, find_root, walk_catalog

__all__ = [
    "TARGETS",
    "CatalogEntry",
    "ObjectStoreWriter",
    "ObstoreWriter",
    "PublishError",
    "PublishResult",
    "PublishTarget",
    "RemoteObject",
    "export_geoparquet",
    "find_root",
    "load_into_pgstac",
    "publish",
    "publish_to_s3",
    "publish_to_stac_api",
    "publish_to_store",
    "read_geoparquet_items",
    "walk_catalog",
]
