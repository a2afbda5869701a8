"""STAC catalogues: streaming collection builder and offline validation.

Works on pystac objects or plain item dicts and knows nothing of jobs. Publishing a
catalogue (object storage, STAC APIs, pgstac, stac-geoparquet) is in
:mod:`eoextract.stac.publish`.
"""

from __future__ import annotations

from eoextract.stac._collection import CollectionBuilder, build_collection
from eoextract.stac._existing import drop_existing, existing_values
from eoextract.stac._extend import extend_collection, iter_catalog_items
from eoextract.stac._layout import Layout, layout_key
from eoextract.stac._validate import ValidationReport, validate, validate_catalog
from eoextract.stac._validate_schemas import validate_dict

__all__ = [
    "CollectionBuilder",
    "Layout",
    "ValidationReport",
    "build_collection",
    "drop_existing",
    "existing_values",
    "extend_collection",
    "iter_catalog_items",
    "layout_key",
    "validate",
    "validate_catalog",
    "validate_dict",
]
