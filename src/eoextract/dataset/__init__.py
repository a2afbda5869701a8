"""From catalogue to training data: merged point tables, patch-to-point sampling, per-EPSG collections, a lazy
dataset loader, counts.

Names are imported lazily, so ``import eoextract.dataset`` stays cheap (DuckDB is loaded
only when a merge runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eoextract._util.lazy import lazy_exports

_EXPORTS = {
    "merge_points": "eoextract.dataset._points",
    "CompletenessReport": "eoextract.dataset._completeness",
    "expected_samples": "eoextract.dataset._completeness",
    "find_point_files": "eoextract.dataset._sources",
    "DatasetInfo": "eoextract.dataset._info",
    "Selection": "eoextract.dataset._selection",
    "SplitResult": "eoextract.dataset._split_epsg",
    "dataset_info": "eoextract.dataset._info",
    "iter_patches": "eoextract.dataset._loader",
    "open_patches": "eoextract.dataset._loader",
    "PatchPointsResult": "eoextract.dataset._patch_points",
    "patches_to_points": "eoextract.dataset._patch_points",
    "select_items": "eoextract.dataset._selection",
    "split_by_epsg": "eoextract.dataset._split_epsg",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.dataset._completeness import CompletenessReport, expected_samples
    from eoextract.dataset._points import merge_points
    from eoextract.dataset._sources import find_point_files
    from eoextract.dataset._info import DatasetInfo, dataset_info
    from eoextract.dataset._loader import iter_patches, open_patches
    from eoextract.dataset._patch_points import PatchPointsResult, patches_to_points
    from eoextract.dataset._selection import Selection, select_items
    from eoextract.dataset._split_epsg import SplitResult, split_by_epsg
