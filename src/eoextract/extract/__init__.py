"""GFMAP-style extractions: output paths, verified downloads, STAC items, post-job actions.

``ExtractionManager`` (alias ``GFMAPJobManager``) runs the jobs; ``ItemStore`` reads and
writes the items stored per finished job; ``build_catalogue`` writes the catalogue of an
extraction from them, from any process; ``publish_catalogue`` publishes it and marks the
jobs whose items were published.
The manager's names are imported on first use, so importing the asset definitions
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eoextract.extract.assets import AUXILIARY, AssetDefinition

__all__ = ["AUXILIARY", "AssetDefinition", "ExtractionManager", "GFMAPJobManager", "ItemStore",
           "JobItems", "build_catalogue", "mark_jobs_published", "publish_catalogue"]

_LAZY = {
    "ExtractionManager": "eoextract.extract.manager",
    "GFMAPJobManager": "eoextract.extract.manager",
    "build_catalogue": "eoextract.extract._catalogue",
    "ItemStore": "eoextract.extract._store",
    "JobItems": "eoextract.extract._store",
    "mark_jobs_published": "eoextract.extract._publishing",
    "publish_catalogue": "eoextract.extract._publishing",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'eoextract.extract' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from eoextract.extract._catalogue import build_catalogue
    from eoextract.extract._publishing import mark_jobs_published, publish_catalogue
    from eoextract.extract._store import ItemStore, JobItems
    from eoextract.extract.manager import ExtractionManager, GFMAPJobManager
