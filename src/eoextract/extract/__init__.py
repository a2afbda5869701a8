"""GFMAP-style extractions: output paths, verified downloads, STAC items, post-job actions.

``ExtractionManager`` (alias ``GFMAPJobManager``) runs the jobs; ``build_catalogue``
writes the catalogue of an extraction from its stored items, from any process.
The manager's names are imported on first use, so importing the asset definitions
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from eoextract.extract.assets import AUXILIARY, AssetDefinition

__all__ = ["AUXILIARY", "AssetDefinition", "ExtractionManager", "GFMAPJobManager", "build_catalogue"]

_LAZY = {
    "ExtractionManager": "eoextract.extract.manager",
    "GFMAPJobManager": "eoextract.extract.manager",
    "build_catalogue": "eoextract.extract.catalogue",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'eoextract.extract' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from eoextract.extract.catalogue import build_catalogue
    from eoextract.extract.manager import ExtractionManager, GFMAPJobManager
