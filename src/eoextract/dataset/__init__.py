"""From catalogue to training data: merged point tables.

Names are imported lazily (DuckDB is loaded only when a merge runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eoextract._util.lazy import lazy_exports

_EXPORTS = {
    "merge_points": "eoextract.dataset._points",
    "CompletenessReport": "eoextract.dataset._completeness",
    "expected_samples": "eoextract.dataset._completeness",
    "find_point_files": "eoextract.dataset._sources",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.dataset._completeness import CompletenessReport, expected_samples
    from eoextract.dataset._points import merge_points
    from eoextract.dataset._sources import find_point_files
