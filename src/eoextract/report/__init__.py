"""Run summaries, plots and the HTML run report.

* :func:`summarize` (counts, running time, throughput, ETA, error classes),
  :func:`history_frame`, :func:`jobs_frame`, :func:`format_duration`;
* :func:`write_report` / :func:`render_report`: one self-contained HTML page with matplotlib
  figures (timeline, status counts over time, durations and costs, failures, footprints);
* :func:`iter_output_items` / :func:`footprints`: the items of an output folder (item store
  or catalogue) and their footprints.

Plotting modules import matplotlib only when used.
"""

from __future__ import annotations

from typing import Any

from eoextract.report._summary import (
    ErrorClassSummary,
    RunSummary,
    format_duration,
    history_frame,
    jobs_frame,
    summarize,
)

__all__ = [
    "ErrorClassSummary",
    "RunSummary",
    "summarize",
    "history_frame",
    "jobs_frame",
    "format_duration",
    "write_report",
    "render_report",
    "footprints",
    "iter_output_items",
]

_LAZY = {
    "write_report": "eoextract.report._html",
    "render_report": "eoextract.report._html",
    "footprints": "eoextract.report._items",
    "iter_output_items": "eoextract.report._items",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
