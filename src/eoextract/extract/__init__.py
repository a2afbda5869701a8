"""GFMAP-style extractions: output paths, verified downloads, STAC items, post-job actions.

``ExtractionManager`` (alias ``GFMAPJobManager``) runs the jobs; ``ItemStore`` reads and
writes the items stored per finished job; ``build_catalogue`` writes the catalogue of an
extraction from them, from any process; ``AssetDefinition`` (``AUXILIARY``,
``SENTINEL2_L2A``, ``sentinel2_l2a_definition``) describes assets a post-job action adds. ``publish_catalogue`` publishes the catalogue and
marks the jobs whose items were published.
The manager's names are imported on first use, so importing the asset definitions
stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eoextract._util.lazy import lazy_exports
from eoextract.extract._assets import AUXILIARY, SENTINEL2_L2A, AssetDefinition, sentinel2_l2a_definition

_EXPORTS = {
    "ExtractionManager": "eoextract.extract._extraction",
    "GFMAPJobManager": "eoextract.extract._extraction",
    "PostJobAction": "eoextract.extract._extraction",
    "FILE_LOCK": "eoextract.extract._extraction",
    "build_catalogue": "eoextract.extract._catalogue",
    "ItemStore": "eoextract.extract._store",
    "JobItems": "eoextract.extract._store",
    "mark_jobs_published": "eoextract.extract._publishing",
    "publish_catalogue": "eoextract.extract._publishing",
}

__all__ = sorted(["AUXILIARY", "SENTINEL2_L2A", "AssetDefinition", "sentinel2_l2a_definition", *_EXPORTS])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # pragma: no cover
    from eoextract.extract._catalogue import build_catalogue
    from eoextract.extract._extraction import FILE_LOCK, ExtractionManager, GFMAPJobManager, PostJobAction
    from eoextract.extract._publishing import mark_jobs_published, publish_catalogue
    from eoextract.extract._store import ItemStore, JobItems
