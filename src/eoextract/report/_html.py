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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from eoextract.jobs.db import JobDatabase
from eoextract.report import _plots as plots
from eoextract.report._attempts import job_errors
from eoextract.report._map import map_figure, map_layers
from eoextract.report._sessions import ENDED, manager_sessions
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
.bad{color:#c62828}.ok{color:#1b5e20}.hist{color:#777;font-style:italic}
table.header th{color:#555;font-weight:normal;border:0}table.header td{border:0}
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


#: Jobs of a SQL database above which the plots, sessions and the job error table are
#: drawn from a sample (every k-th job and the latest failures); counts, error classes and
#: the summary always cover every job.
SAMPLE_ABOVE = 2000
#: The most recently changed failed jobs added to a sample.
LATEST_FAILURES = 50


@dataclass(frozen=True)
class _Run:
    """What the report reads: the summary, every error class, and the job rows drawn."""

    summary: RunSummary
    all_errors: list[Any]
    table: pd.DataFrame | None
    jobs: pd.DataFrame
    history: pd.DataFrame
    sample_note: str = ""


def _read(db: JobDatabase, now: datetime) -> _Run:
    """Every row of a small database; for a large SQL one the summary aggregated by the
    database and a bounded sample of rows."""
    engine = getattr(db, "engine", None)
    total = sum(db.count_by_status().values()) if engine is not None else 0
    if total <= SAMPLE_ABOVE:
        jobs, history = jobs_frame(db), history_frame(db)
        summary = summarize(db, now=now, jobs=jobs, history=history, top_errors=0)
        return _Run(replace(summary, error_classes=summary.error_classes[:10]),
                    summary.error_classes, None, jobs, history)
    from eoextract.report._sql_summary import sample_keys

    summary = summarize(db, now=now, top_errors=0)
    keys, step = sample_keys(engine, SAMPLE_ABOVE, LATEST_FAILURES)
    table = db.get_by_indices(keys)
    note = (f"Plots, manager sessions and job errors are drawn from {len(keys)} of {total} jobs "
            f"(one job in {step} and the {LATEST_FAILURES} latest failures); counts, error classes "
            f"and the figures above cover every job.")
    return _Run(replace(summary, error_classes=summary.error_classes[:10]), summary.error_classes,
                table, jobs_frame(db, table), history_frame(db, keys), note)


def _figures(db: JobDatabase, run: _Run, sessions: pd.DataFrame, output_dir: Path | None
             ) -> list[ReportFigure]:
    jobs, history, summary = run.jobs, run.history, run.summary
    now = summary.now if summary.open or summary.last_change_at is None else summary.last_change_at
    all_errors = run.all_errors
    made: list[ReportFigure] = []

    def add(name: str, title: str, fig: Any, empty_note: str, note: str = "") -> None:
        png = plots.figure_png(fig) if fig is not None else None
        made.append(ReportFigure(name, title, png, note if png else empty_note))

    add("timeline", "Job timeline per backend and manager sessions",
        plots.timeline_figure(history, jobs, now=now, sessions=sessions),
        "No job reached a backend yet.",
        "Times in UTC. Bars: creating (grey), queued (yellow), running (blue), downloading and "
        "post-processing (green); orange triangles: a failed attempt went back to the queue; crosses: final "
        "failures. Top band: manager sessions from their "
        "first to their last recorded change; a red X and a red dotted line mark a session killed or "
        "stopped with jobs in flight, a green triangle and dashed line a session that resumed them.")
    add("status_over_time", "Status counts over time",
        plots.status_over_time_figure(history, now=now, sessions=sessions), "No status history.",
        "Times in UTC; red dotted lines: sessions killed or stopped, green dashed: resumed.")
    add("distributions", "Durations and costs", plots.distributions_figure(history, jobs),
        "No finished job and no costs yet.")
    add("failures", "Failures by class", plots.failures_figure(all_errors), "No failures.")
    layers, note = _map_layers(db, output_dir, run.table)
    fig = map_figure(layers) if layers is not None else None
    add("footprints", "Status map", fig, note or
        "No item footprints (give the output folder) and no job geometries.",
        "Job footprints, samples and extracted items coloured by their job's status; footprints too "
        "small to see at this extent are drawn as markers; dashed: H3 cells or Sentinel-2 tiles of "
        "the jobs. " + note)
    return made


def _map_layers(db: JobDatabase, output_dir: Path | None, table: pd.DataFrame | None
                ) -> tuple[Any, str]:
    """The status map's layers from the job table and the output folder's items, if any."""
    from eoextract.report._items import footprints, iter_output_items

    items = None
    item_jobs: dict[str, str] = {}
    note = ""
    if output_dir is not None:
        try:
            items = footprints(iter_output_items(output_dir))
            note = f"{len(items)} item footprint(s) from {output_dir}."
            from eoextract.extract import ItemStore

            store = ItemStore(output_dir)
            if store:
                item_jobs = store.job_keys_by_item()
        except Exception as exc:  # noqa: BLE001 - the report still renders without the items
            logger.warning("cannot read items under %s: %s", output_dir, exc)
            note = f"Items under {output_dir} could not be read: {exc}"
    try:
        return map_layers(db.read() if table is None else table, items, item_jobs=item_jobs), note
    except Exception as exc:  # noqa: BLE001 - the report still renders without the map
        logger.warning("cannot draw the status map: %s", exc)
        return None, f"The status map could not be drawn: {exc}"


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
    run = _read(db, now)
    jobs, history, summary = run.jobs, run.history, run.summary
    sessions = manager_sessions(history, jobs, now=now)
    figures = _figures(db, run, sessions, Path(output_dir) if output_dir else None)
    title = title or "eoextract run report"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>",
             _header(db, summary, sessions),
             f"<p class='note'>{_e(run.sample_note)}</p>" if run.sample_note else "",
             _cards(summary), _counts_table(summary), _errors_table(summary),
             _job_errors_table(job_errors(jobs, history)), _sessions_table(sessions)]
    for fig in figures:
        parts.append(f"<h2 id='{fig.name}'>{_e(fig.title)}</h2>")
        if fig.png is not None:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f"<img alt='{_e(fig.title)}' src='data:image/png;base64,{data}'>")
        if fig.note:
            parts.append(f"<p class='note'>{_e(fig.note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts), figures


def describe_database(db: JobDatabase) -> tuple[str, str]:
    """Kind and location of a job database, credentials removed: ``("SQLite", "/x/jobs.db")``."""
    from eoextract._util.redact import redact, redact_url

    path = getattr(db, "path", None)
    if path is not None:
        kind = "CSV" if getattr(db, "is_csv", False) else "Parquet"
        return kind, redact(str(path))
    engine = getattr(db, "engine", None)
    if engine is not None:
        url = engine.url
        if url.get_backend_name() == "sqlite":
            return "SQLite", url.database or "(in memory)"
        return url.get_backend_name().replace("postgresql", "PostgreSQL"), redact_url(
            url.render_as_string(hide_password=True))
    return type(db).__name__, ""


def _utc(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _header(db: JobDatabase, s: RunSummary, sessions: pd.DataFrame) -> str:
    """Names and values of the run: database, backends, times, sessions."""
    kind, where = describe_database(db)
    interrupted = int(sessions["ended"].isin(["interrupted", "no clean stop"]).sum()) if len(sessions) else 0
    rows = [("job database", f"{where} ({kind})" if where else kind),
            ("backends", ", ".join(f"{n} ({u})" if u else n for n, u in s.backends.items()) or "-"),
            ("run started", _utc(s.started_at)), ("last status change", _utc(s.last_change_at)),
            ("generated", _utc(s.now)),
            ("manager sessions", f"{len(sessions)}" + (f", {interrupted} killed or stopped with jobs in flight"
                                                       if interrupted else ""))]
    learned = db.backend_state().get("capacity") or {}
    if learned:
        rows.append(("learned job limits", ", ".join(f"{n}: {c}" for n, c in sorted(learned.items()))))
    costs = db.cost_totals()
    if costs.jobs_with_costs:
        rows.append(("credits spent", f"{costs.spent:.2f} ({costs.jobs_with_costs} jobs"
                     + "".join(f"; {n} {v:.2f}" for n, v in sorted(costs.by_backend.items())) + ")"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table class='meta header'>{body}</table>"


def _job_errors_table(errors: pd.DataFrame, limit: int = 50) -> str:
    if errors.empty:
        return ""
    rows = []
    for key, e in errors.head(limit).iterrows():
        latest = (f"<span class='bad'>{_e(e['error'][:300])}</span>" if e["error"]
                  else "<span class='ok'>none</span>")
        earlier = "<br>".join(f"<span class='hist'>earlier, {_e(m[:300])}</span>" for m in e["earlier"])
        rows.append(f"<tr><td>{_e(key)}</td><td>{_e(e['status'])}</td><td class='n'>{e['attempt']}</td>"
                    f"<td>{latest}</td><td>{earlier}</td></tr>")
    more = f"<p class='note'>{len(errors) - limit} more not shown.</p>" if len(errors) > limit else ""
    return ("<h2 id='job_errors'>Job errors</h2><table><tr><th>job</th><th>status</th><th>attempts</th>"
            "<th>latest attempt's error</th><th>earlier attempts (history)</th></tr>"
            f"{''.join(rows)}</table>{more}")


def _sessions_table(sessions: pd.DataFrame) -> str:
    if sessions.empty:
        return ""
    rows = "".join(
        f"<tr><td>{_e(s['manager_id'])}</td><td>{_e(_utc(s['start']))}</td><td>{_e(_utc(s['end']))}</td>"
        f"<td class='n'>{_e(format_duration((s['end'] - s['start']).total_seconds()))}</td>"
        f"<td class='n'>{s['changes']}</td><td class='n'>{s['jobs']}</td><td class='n'>{s['left_in_flight']}</td>"
        f"<td title='{_e(ENDED[s['ended']])}'>{_e(s['ended'])}</td><td>{_e(s['resumed_from'] or '-')}</td></tr>"
        for _, s in sessions.iterrows())
    return ("<h2 id='sessions'>Manager sessions</h2><table><tr><th>manager</th><th>first change</th>"
            "<th>last change</th><th>span</th><th>changes</th><th>jobs</th><th>left in flight</th>"
            f"<th>ended</th><th>resumed jobs of</th></tr>{rows}</table>"
            "<p class='note'>A session is one manager process (host:pid:nonce), from its first to its "
            "last recorded status change (UTC). "
            + " ".join(f"<b>{_e(k)}</b>: {_e(v)}." for k, v in ENDED.items()) + "</p>")


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
