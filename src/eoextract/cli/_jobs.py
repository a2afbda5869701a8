"""Commands on a job database: ``status``, ``jobs``, ``history``, ``retry``, ``cancel``, ``logs``, ``set``."""

from __future__ import annotations

import enum
import json
import time
from typing import Annotated, Any

import typer

from eoextract.cli._common import (
    EXIT_PROBLEMS,
    EXIT_USAGE,
    DbArg,
    UsageError,
    app,
    command,
    console,
    open_db,
    redact,
)
from eoextract.jobs.status import TERMINAL, JobStatus


class OutputFormat(str, enum.Enum):
    """Output formats of listings."""

    table = "table"
    csv = "csv"
    json = "json"


def _split_keys(values: list[str] | None) -> list[str]:
    """``--keys a,b --keys c`` → ``[a, b, c]``."""
    keys: list[str] = []
    for value in values or []:
        keys.extend(k.strip() for k in value.split(",") if k.strip())
    return list(dict.fromkeys(keys))


def _check_keys(db: Any, keys: list[str]) -> None:
    if not keys:
        return
    known = {r.job_key for r in db.jobs(keys=keys)}
    unknown = [k for k in keys if k not in known]
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise UsageError(f"unknown job key(s): {shown}")


def _when(value: Any) -> str:
    if value is None or value != value:  # None or NaN/NaT
        return "-"
    try:
        return value.strftime("%Y-%m-%d %H:%M:%S")
    except AttributeError:
        return str(value)


# ----------------------------------------------------------------------------- status
@app.command("status")
@command
def status(
    db: DbArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow the run live until every job is final.")] = False,
    interval: Annotated[float, typer.Option(min=0.01, help="Seconds between two refreshes with --watch.")] = 2.0,
    top: Annotated[int, typer.Option(min=0, help="Error classes shown.")] = 5,
) -> None:
    """Where a run stands: jobs per status and backend, running time, throughput, ETA and
    the most frequent error classes with an example each. Exits 0 even when jobs failed."""
    from eoextract.report._summary import format_duration, summarize

    database = open_db(db)
    if watch:
        _watch(database, interval)
    summary = summarize(database, top_errors=top)
    learned = database.backend_state().get("capacity") or {}
    costs = database.cost_totals()
    if as_json:
        typer.echo(redact(json.dumps({**summary.to_dict(), "backend_capacity": learned,
                                      "credits_spent": costs.spent,
                                      "credits_by_backend": dict(costs.by_backend)}, indent=2)))
        return
    from rich.table import Table

    out = console()
    out.print(f"[bold]{redact(db)}[/bold]: {summary.total} jobs, {summary.done} final "
              f"({summary.failed} failed), {summary.open} open")
    for name, url in summary.backends.items():
        limit = f" (runs at most {learned[name]} job(s), learned from its refusals)" if name in learned else ""
        out.print(f"  backend {name}: {redact(url or '(no URL)')}{limit}")
    table = Table(title=None, show_edge=False, pad_edge=False)
    table.add_column("status")
    table.add_column("total", justify="right")
    backends = list(summary.by_backend)
    for name in backends:
        table.add_column(name, justify="right")
    for state, n in summary.counts.items():
        table.add_row(state, str(n), *(str(summary.by_backend[b].get(state, "")) for b in backends))
    out.print(table)
    rate = f"{summary.throughput_per_hour:.1f} jobs/h" if summary.throughput_per_hour else "-"
    out.print(f"running time {format_duration(summary.elapsed_s)}  throughput {rate}  "
              f"ETA {format_duration(summary.eta_s) if summary.open else 'done'}  "
              f"retries {summary.retries}" + (f"  requeued {summary.requeued}" if summary.requeued else "")
              + (f"  credits {costs.spent:.2f} ({costs.jobs_with_costs} jobs"
                 + "".join(f"; {n} {v:.2f}" for n, v in sorted(costs.by_backend.items())) + ")"
                 if costs.jobs_with_costs else ""))
    if summary.published:
        lat = summary.publication_latency_s
        latency = (f"; publication latency median {format_duration(lat['median'])}, "
                   f"max {format_duration(lat['max'])}" if lat else "")
        out.print(f"published {summary.published} job(s){latency}")
    if summary.error_classes:
        out.print("[bold]top error classes[/bold]")
        for e in summary.error_classes:
            retrying = f", {e.retrying} retrying" if e.retrying else ""
            out.print(f"  {e.error_class}: {e.failed} failed{retrying}; e.g. job {e.example_key}: "
                      f"{redact(e.example_message)[:200]}", soft_wrap=True)


def _watch(db: Any, interval: float) -> None:
    """Follow the run until no job is open (live display on a terminal, else one line each)."""
    from eoextract.jobs._progress import RunProgress, _per_backend
    from eoextract.report._summary import summarize

    out = console()
    progress = RunProgress(enabled=True, console=out, min_interval=0.0)
    try:
        while True:
            counts = db.count_by_status()
            if progress.active:
                progress.update(counts, _per_backend(db), force=True)
            else:
                s = summarize(db)
                typer.echo(f"{s.done}/{s.total} final, {s.failed} failed, {s.open} open")
            if not any(n for k, n in counts.items() if k not in _FINAL):
                break
            time.sleep(interval)
    finally:
        progress.close()


_FINAL = frozenset(s.value for s in TERMINAL)


# ----------------------------------------------------------------------------- jobs
#: Jobs the ``jobs`` table shows unless ``--limit`` is given.
TABLE_ROWS = 500
_TABLE_COLUMNS = ("status", "backend_name", "id", "attempt", "error_class", "error_message", "updated_at")


@app.command("jobs")
@command
def jobs(
    db: DbArg,
    status: Annotated[list[JobStatus] | None, typer.Option("--status", "-s", help="Only jobs in this status (repeatable).")] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="Only jobs of this backend.")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, csv or json.")] = OutputFormat.table,
    limit: Annotated[int | None, typer.Option(min=0, help=f"At most this many jobs (table: {TABLE_ROWS} unless given).")] = None,
) -> None:
    """List jobs in table order, optionally filtered by status and backend (csv/json: every
    column). The table shows the first 500 unless --limit is given."""
    database = open_db(db)
    if fmt is OutputFormat.table:  # records, no pandas: a quick answer on any table size
        _jobs_table(database, status, backend, limit)
        return
    df = database.read_where(status or None, backend_name=backend, limit=limit)
    plain = _plain_frame(df)
    if fmt is OutputFormat.csv:
        typer.echo(plain.to_csv(index=True), nl=False)
    else:
        typer.echo(plain.reset_index().to_json(orient="records", date_format="iso", indent=2))


def _jobs_table(database: Any, status: list[JobStatus] | None, backend: str | None,
                limit: int | None) -> None:
    """The ``jobs`` table: the first ``limit`` matching jobs (:data:`TABLE_ROWS` unless given)."""
    from rich.table import Table

    records = database.jobs(status or None, backend_name=backend,
                            limit=TABLE_ROWS + 1 if limit is None else limit)
    more = limit is None and len(records) > TABLE_ROWS
    records = records[:TABLE_ROWS] if more else records
    table = Table(show_edge=False, pad_edge=False)
    for column in ("job_key", "status", "backend", "backend job", "attempt", "error", "updated"):
        table.add_column(column, overflow="fold")
    for rec in records:
        fields = rec.fields
        error = ""
        if _present(fields.get("error_class")):
            error = f"{fields['error_class']}: {redact(str(fields.get('error_message') or ''))}"[:120]
        table.add_row(rec.job_key, rec.status.value, _text(fields.get("backend_name")),
                      _text(fields.get("id")), str(fields.get("attempt", "")), error,
                      _when(fields.get("updated_at")))
    out = console()
    out.print(table)
    cut = more or (limit is not None and len(records) >= limit)
    total = None if not cut or backend else sum(database.count_by_status(status or ()).values())
    if cut and total != len(records):
        matching = "" if total is None else f" of {total}"
        hint = "give --limit N or --format csv for more" if more else f"--limit {limit}"
        out.print(f"first {len(records)} job(s){matching} shown; {hint}")
    else:
        out.print(f"{len(records)} job(s)")


def _present(value: Any) -> bool:
    return value is not None and value == value and str(value) != ""


def _text(value: Any) -> str:
    return str(value) if _present(value) else "-"


def _plain_frame(df: Any) -> Any:
    """The listing with geometry as WKT and timestamps as ISO text."""
    import pandas as pd

    out = pd.DataFrame(df).copy()
    for column in out.columns:
        series = out[column]
        if getattr(series.dtype, "name", "") == "geometry" or (
                len(series) and hasattr(series.dropna().iloc[0] if series.notna().any() else None, "wkt")):
            out[column] = [g.wkt if g is not None and hasattr(g, "wkt") else None for g in series]
        elif pd.api.types.is_datetime64_any_dtype(series):
            out[column] = series.map(lambda v: v.isoformat() if pd.notna(v) else None)
    out.index.name = "job_key"
    for column in out.columns[out.dtypes == object]:  # text, as a database holds it: redacted
        out[column] = out[column].map(lambda v: redact(v) if isinstance(v, str) else v)
    return out


# ----------------------------------------------------------------------------- history
@app.command("history")
@command
def history(
    db: DbArg,
    job_key: Annotated[str, typer.Argument(help="The job's key.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    tracebacks: Annotated[bool, typer.Option("--traceback", "-t", help="Print the traceback of every failure of user code (default: the latest one).")] = False,
) -> None:
    """The status changes of one job, oldest first (with backend job ids of every attempt),
    and the traceback of the latest failure of user code (start_job, post_job_action, ...)."""
    database = open_db(db)
    _check_keys(database, [job_key])
    changes = database.history(job_key)
    if as_json:
        typer.echo(json.dumps([
            {"old": c.old.value if c.old else None, "new": c.new.value, "at": c.at.isoformat(),
             "manager_id": c.manager_id, "message": redact(c.summary or "") or None,
             "traceback": redact(c.traceback) if c.traceback else None,
             "backend_job_id": c.backend_job_id}
            for c in changes], indent=2))
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for column in ("at", "change", "backend job", "by", "message"):
        table.add_column(column, overflow="fold")
    for c in changes:
        change = f"{c.old.value} → {c.new.value}" if c.old else f"→ {c.new.value}"
        table.add_row(_when(c.at), change, c.backend_job_id or "-", c.manager_id or "-",
                      redact(c.summary or "") + (" (traceback below)" if c.traceback else ""))
    out = console()
    out.print(f"job {job_key}: {database.get(job_key).status.value}")
    out.print(table)
    failures = [c for c in changes if c.traceback]
    for c in failures if tracebacks else failures[-1:]:
        out.print(f"\n{_when(c.at)} {c.new.value}: {redact(c.summary or '')}", markup=False)
        out.print(redact(c.traceback or ""), markup=False, highlight=False)


# ----------------------------------------------------------------------------- retry / cancel
def _report_results(results: list[Any], verb: str) -> int:
    done = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    shown = ", ".join(r.job_key for r in done[:20]) + (" ..." if len(done) > 20 else "")
    typer.echo(f"{verb} {len(done)} job(s)" + (f": {shown}" if done else ""))
    if failed:
        from eoextract.cli._backend_failures import explain_failure

        for r in failed:
            typer.echo(f"error: job {r.job_key}: {redact(explain_failure(r.message))}", err=True)
    return EXIT_PROBLEMS if failed else 0


class RetryStage(str, enum.Enum):
    """What ``eoextract retry`` redoes."""

    JOB = "job"
    DOWNLOAD = "download"
    POSTPROCESS = "postprocess"


@app.command("retry")
@command
def retry(
    db: DbArg,
    status: Annotated[list[JobStatus] | None, typer.Option("--status", "-s", help="Retry jobs in this final status (repeatable; default: error, or any final failure with --keys).")] = None,
    keys: Annotated[list[str] | None, typer.Option("--keys", "-k", help="Only these job keys (comma-separated or repeated).")] = None,
    stage: Annotated[RetryStage, typer.Option("--stage", help="What to redo: the whole job (a new backend job), or only the download or the post-processing of a job in error, reusing its backend job's results and the files already verified.")] = RetryStage.JOB,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be retried.")] = False,
) -> None:
    """Put failed jobs back to work (recorded in their history); the next run of the
    manager picks them up. By default they start over (not_started, a fresh attempt
    count); --stage download|postprocess redoes only that stage of jobs in error."""
    from eoextract.jobs import retry_jobs
    from eoextract.jobs.status import USER_RETRYABLE

    database = open_db(db)
    key_list = _split_keys(keys)
    _check_keys(database, key_list)
    if stage is not RetryStage.JOB:  # named jobs are each told why their stage cannot be redone
        statuses = list(status) if status else (None if key_list else [JobStatus.ERROR])
    else:
        statuses = list(status) if status else ([JobStatus.ERROR] if not key_list else list(USER_RETRYABLE))
    results = retry_jobs(database, statuses=statuses, keys=key_list or None, stage=stage.value,
                         dry_run=dry_run)
    if key_list:  # named jobs that are not final failures are reported
        selected = {r.job_key for r in results}
        for rec in database.jobs(keys=key_list):
            if rec.job_key not in selected:
                results.append(_not_selected(rec, "retry"))
    code = _report_results(results, "would retry" if dry_run else "retried")
    raise typer.Exit(code)


def _not_selected(rec: Any, verb: str) -> Any:
    from eoextract.jobs import ActionResult

    return ActionResult(rec.job_key, False, rec.status, rec.status,
                        f"cannot {verb} it: it is {rec.status.value}")


@app.command("cancel")
@command
def cancel(
    db: DbArg,
    keys: Annotated[list[str] | None, typer.Option("--keys", "-k", help="Only these job keys (comma-separated or repeated).")] = None,
    status: Annotated[list[JobStatus] | None, typer.Option("--status", "-s", help="Only jobs in this status (repeatable).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Needed to cancel without --keys (every matching unfinished job).")] = False,
    db_only: Annotated[bool, typer.Option("--db-only", help="Do not contact the backends; only mark the jobs canceled.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be cancelled.")] = False,
) -> None:
    """Cancel unfinished jobs on their backend (through the URL stored in the database,
    credentials from the environment) and mark them canceled."""
    from eoextract.jobs import cancel_jobs

    database = open_db(db)
    key_list = _split_keys(keys)
    _check_keys(database, key_list)
    if not key_list and not yes and not dry_run:
        open_count = sum(n for s, n in database.count_by_status().items() if s not in _FINAL)
        raise UsageError(f"this would cancel every unfinished job ({open_count}); give --keys, "
                         f"or --yes to confirm")
    results = cancel_jobs(database, keys=key_list or None, statuses=status or None,
                          on_backend=not db_only, dry_run=dry_run)
    code = _report_results(results, "would cancel" if dry_run else "canceled")
    raise typer.Exit(code)


# ----------------------------------------------------------------------------- logs
class LogLevel(str, enum.Enum):
    """Least severity of log entries."""

    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


@app.command("logs")
@command
def logs(
    db: DbArg,
    job_key: Annotated[str, typer.Argument(help="The job's key.")],
    level: Annotated[LogLevel | None, typer.Option(help="Least severity shown.")] = None,
    backend_job_id: Annotated[str | None, typer.Option(help="Another backend job of this job (see its history).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON.")] = False,
) -> None:
    """The backend's logs of one job (its current backend job, or the latest one)."""
    from eoextract.jobs import job_logs

    database = open_db(db)
    _check_keys(database, [job_key])
    job_id, entries = job_logs(database, job_key, level=level.value if level else None,
                               backend_job_id=backend_job_id)
    if as_json:
        typer.echo(json.dumps({"job_key": job_key, "backend_job_id": job_id, "logs": entries},
                              indent=2, default=str))
        return
    typer.echo(f"# job {job_key}, backend job {job_id}: {len(entries)} log entries")
    for entry in entries:
        when = entry.get("time") or ""
        lvl = str(entry.get("level") or "").upper()
        typer.echo(redact(f"{when} {lvl:7} {entry.get('message', '')}".strip()))




# ----------------------------------------------------------------------------- set
@app.command("set")
@command
def set_fields(
    db: DbArg,
    key: Annotated[str, typer.Argument(help="The job's key.")],
    assignments: Annotated[list[str], typer.Argument(metavar="FIELD=VALUE...", help="Fields to set: your own columns (new ones are added) or output_dir, output_published_at, ... Values are read as JSON where they parse (7, true, null), else as text; quote to force text ('\"007\"').")],
) -> None:
    """Set fields of one job, such as where its product was published and when."""
    fields: dict[str, Any] = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"expected FIELD=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        fields[name.strip()] = value if not isinstance(value, (list, dict)) else text
    if "status" in fields:
        raise UsageError("status cannot be set: use 'eoextract retry' or 'eoextract cancel' "
                         "(every status change is recorded in the job's history)")
    database = open_db(db)
    _check_keys(database, [key])
    try:
        database.update(key, **fields)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        database.close()
    console().print(f"job {key}: set {', '.join(fields)}")
