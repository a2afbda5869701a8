"""GFMAP-style extractions: output paths, verified downloads, STAC items, post-job actions.

``ExtractionManager`` (alias ``GFMAPJobManager``) runs the jobs; ``ItemStore`` reads and
writes the items stored per finished job; ``build_catalogue`` writes the catalogue of an
extraction from them, from any process.
The manager's names are imported on first use, so importing the asset definitions
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eoextract.extract._assets import AUXILIARY, AssetDefinition

__all__ = ["AUXILIARY", "AssetDefinition", "ExtractionManager", "GFMAPJobManager", "ItemStore",
           "JobItems", "build_catalogue"]

_LAZY = {
    "ExtractionManager": "eoextract.extract._extraction",
    "GFMAPJobManager": "eoextract.extract._extraction",
    "build_catalogue": "eoextract.extract._catalogue",
    "ItemStore": "eoextract.extract._store",
    "JobItems": "eoextract.extract._store",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'eoextract.extract' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from eoextract.extract._catalogue import build_catalogue
    from eoextract.extract._store import ItemStore, JobItems
    from eoextract.extract._extraction import ExtractionManager, GFMAPJobManager
