"""A self-contained HTML report of a run.

One page, no external resources (plots are PNGs embedded as base64, styles inline), so
it opens offline and can be mailed or archived; the PNGs are also written beside it
unless asked not to::

    from eoextract.report import write_report

    write_report("jobs.db", "report.html", output_dir="extraction/")
"""

from __future__ import annotations

import base64
import html
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from eoextract.jobs.db import JobDatabase
from eoextract.report import _plots as plots
from eoextract.report._summary import RunSummary, format_duration, history_frame, jobs_frame, summarize


logger = logging.getLogger(__name__)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1140px;
color:#222;background:#fff;padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#555}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:120px}
.card .v{font-size:1.5em;font-weight:600}.card .k{color:#666;font-size:.85em}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border-bottom:1px solid #e5e5e5;padding:4px 10px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee}.note{color:#666;font-size:.9em}
.bad{color:#c62828}.ok{color:#1b5e20}
"""


@dataclass(frozen=True)
class ReportFigure:
    """One plot of the report.

    Attributes:
        name: File stem (``timeline``).
        title: Section heading.
        png: The PNG bytes, or ``None`` when there was nothing to draw.
        note: Shown when there is no plot (or under it).
    """

    name: str
    title: str
    png: bytes | None
    note: str = ""


def _e(value: Any) -> str:
    """Text for the page: redacted (no credential, whatever a database holds), escaped."""
    from eoextract._util.redact import redact

    return html.escape("" if value is None else redact(value))


def _figures(db: JobDatabase, jobs: pd.DataFrame, history: pd.DataFrame, summary: RunSummary,
             output_dir: Path | None) -> list[ReportFigure]:
    now = summary.now if summary.open or summary.last_change_at is None else summary.last_change_at
    all_errors = summarize(db, now=now, jobs=jobs, history=history, top_errors=0).error_classes
    made: list[ReportFigure] = []

    def add(name: str, title: str, fig: Any, empty_note: str, note: str = "") -> None:
        png = plots.figure_png(fig) if fig is not None else None
        made.append(ReportFigure(name, title, png, note if png else empty_note))

    add("timeline", "Job timeline per backend", plots.timeline_figure(history, jobs, now=now),
        "No job reached a backend yet.",
        "Bars: creating (grey), queued (yellow), running (blue), downloading and post-processing "
        "(green); crosses: final failures.")
    add("status_over_time", "Status counts over time", plots.status_over_time_figure(history, now=now),
        "No status history.")
    add("distributions", "Durations and costs", plots.distributions_figure(history, jobs),
        "No finished job and no costs yet.")
    add("failures", "Failures by class", plots.failures_figure(all_errors), "No failures.")
    items_gdf, job_geoms, note = _geometries(db, output_dir)
    add("footprints", "Item footprints", plots.footprints_figure(items_gdf, job_geoms), note or
        "No item footprints (give the output folder) and no job geometries.", note)
    return made


def _geometries(db: JobDatabase, output_dir: Path | None) -> tuple[Any, Any, str]:
    """Item footprints from the output folder and the jobs' own geometries, if any."""
    from eoextract.report._items import footprints, iter_output_items

    items = None
    note = ""
    if output_dir is not None:
        try:
            items = footprints(iter_output_items(output_dir))
            note = f"{len(items)} item footprint(s) from {output_dir}."
        except Exception as exc:  # noqa: BLE001 - the report still renders without the map
            logger.warning("cannot read items under %s: %s", output_dir, exc)
            note = f"Items under {output_dir} could not be read: {exc}"
    job_geoms = None
    try:
        df = db.read()
        geometry = getattr(df, "geometry", None) if hasattr(df, "crs") else None
        if geometry is not None and geometry.notna().any():
            import geopandas as gpd

            job_geoms = gpd.GeoDataFrame({"status": df["status"].astype(str)}, geometry=geometry,
                                         crs=df.crs)
            job_geoms = job_geoms[job_geoms.geometry.notna()]
    except Exception as exc:  # noqa: BLE001
        logger.debug("no job geometries: %s", exc)
    return items, job_geoms, note


def render_report(
    db: JobDatabase | str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str] | None = None,
    title: str | None = None,
    now: datetime | None = None,
) -> tuple[str, list[ReportFigure]]:
    """The report's HTML (PNGs inlined) and its figures.

    Args:
        db: The job database (or its path/URL).
        output_dir: The extraction's output folder, for the map of item footprints.
        title: Page title.
        now: Time to report against (default: now).
    """
    from eoextract.jobs.db import get_job_db

    db = get_job_db(db)
    now = now or datetime.now(UTC)
    jobs = jobs_frame(db)
    history = history_frame(db)
    summary = summarize(db, now=now, jobs=jobs, history=history, top_errors=10)
    figures = _figures(db, jobs, history, summary, Path(output_dir) if output_dir else None)
    title = title or "eoextract run report"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             f"<p class='meta'>Job database {_e(_describe(db))} &middot; generated "
             f"{_e(now.strftime('%Y-%m-%d %H:%M:%S UTC'))}</p>",
             _cards(summary), _counts_table(summary), _errors_table(summary)]
    for fig in figures:
        parts.append(f"<h2 id='{fig.name}'>{_e(fig.title)}</h2>")
        if fig.png is not None:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f"<img alt='{_e(fig.title)}' src='data:image/png;base64,{data}'>")
        if fig.note:
            parts.append(f"<p class='note'>{_e(fig.note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts), figures


def _describe(db: JobDatabase) -> str:
    from eoextract._util.redact import redact

    return redact(repr(db))


def _cards(s: RunSummary) -> str:
    rate = f"{s.throughput_per_hour:.1f}/h" if s.throughput_per_hour else "-"
    eta = format_duration(s.eta_s) if s.open else "done"
    cards = [("jobs", s.total), ("final", s.done), ("failed", s.failed), ("open", s.open),
             ("retries", s.retries), ("running time", format_duration(s.elapsed_s)),
             ("throughput", rate), ("ETA", eta)]
    body = "".join(f"<div class='card'><div class='v'>{_e(v)}</div><div class='k'>{_e(k)}</div></div>"
                   for k, v in cards)
    return f"<div class='cards'>{body}</div>"


def _counts_table(s: RunSummary) -> str:
    backends = list(s.by_backend)
    head = "".join(f"<th>{_e(b)}</th>" for b in backends)
    rows = []
    for status, n in s.counts.items():
        cells = "".join(f"<td class='n'>{_e(s.by_backend[b].get(status, ''))}</td>" for b in backends)
        rows.append(f"<tr><td>{_e(status)}</td><td class='n'>{n}</td>{cells}</tr>")
    urls = "".join(f"<li>{_e(name)}: {_e(url or '(no URL)')}</li>" for name, url in s.backends.items())
    return (f"<h2>Jobs per status and backend</h2><table><tr><th>status</th><th>total</th>{head}</tr>"
            f"{''.join(rows)}</table>" + (f"<ul class='meta'>{urls}</ul>" if urls else ""))


def _errors_table(s: RunSummary) -> str:
    if not s.error_classes:
        return "<h2>Top error classes</h2><p class='ok'>No failed jobs.</p>"
    rows = "".join(
        f"<tr><td>{_e(e.error_class)}</td><td class='n'>{e.failed}</td><td class='n'>{e.retrying}</td>"
        f"<td>{_e(e.example_key)}</td><td>{_e(e.example_message[:300])}</td></tr>"
        for e in s.error_classes)
    return ("<h2>Top error classes</h2><table><tr><th>class</th><th>failed</th><th>retrying</th>"
            f"<th>example job</th><th>message</th></tr>{rows}</table>")


def write_report(
    db: JobDatabase | str | os.PathLike[str],
    output: str | os.PathLike[str] = "report.html",
    *,
    output_dir: str | os.PathLike[str] | None = None,
    title: str | None = None,
    write_pngs: bool = True,
    now: datetime | None = None,
) -> Path:
    """Write the HTML report (and its PNGs into ``<output stem>_files/``).

    Args:
        db: The job database (or its path/URL).
        output: The HTML file to write.
        output_dir: The extraction's output folder, for the map of item footprints.
        title: Page title.
        write_pngs: Also write each plot as a PNG beside the page.
        now: Time to report against (default: now).

    Returns:
        The path of the HTML file.
    """
    output = Path(output)
    page, figures = render_report(db, output_dir=output_dir, title=title, now=now)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(output)
    if write_pngs:
        folder = output.with_name(f"{output.stem}_files")
        folder.mkdir(exist_ok=True)
        for fig in figures:
            if fig.png is not None:
                (folder / f"{fig.name}.png").write_bytes(fig.png)
    logger.info("wrote report %s", output)
    return output
