"""STAC catalogues: streaming collection builder and offline validation.

Works on pystac objects or plain item dicts and knows nothing of jobs.
"""

from __future__ import annotations

from eoextract.stac.collection import CollectionBuilder, build_collection
from eoextract.stac.extend import extend_collection, iter_catalog_items
from eoextract.stac.layout import layout_key
from eoextract.stac.validate import (
    ValidationReport,
    validate,
    validate_catalog,
    validate_dict,
)

__all__ = [
    "CollectionBuilder",
    "ValidationReport",
    "build_collection",
    "extend_collection",
    "iter_catalog_items",
    "layout_key",
    "validate",
    "validate_catalog",
    "validate_dict",
]
