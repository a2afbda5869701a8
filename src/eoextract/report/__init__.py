"""Run summaries, plots and the HTML run report.

* :mod:`eoextract.report.summary`: :func:`summarize` (counts, running time, throughput,
  ETA, error classes), :func:`history_frame`, :func:`jobs_frame`;
* :mod:`eoextract.report.plots`: matplotlib figures (timeline, status counts over time,
  durations and costs, failures, footprints);
* :mod:`eoextract.report.html`: :func:`write_report`, one self-contained HTML page;
* :mod:`eoextract.report.items`: items of an output folder (per-job item files or the
  catalogue) and their footprints.

Plotting modules import matplotlib only when used.
"""

from __future__ import annotations

from typing import Any

from eoextract.report.summary import (
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
]


def __getattr__(name: str) -> Any:
    if name in ("write_report", "render_report"):
        from eoextract.report import html

        return getattr(html, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
