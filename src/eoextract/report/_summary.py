"""Run summaries computed from a job database: counts, timing, throughput, ETA, failures.

Everything here reads the job table and the status history
(``job_status_changes``) and returns plain data, so the command line, the HTML report
and user scripts share one implementation::

    from eoextract.jobs.db import get_job_db
    from eoextract.report import summarize

    summary = summarize(get_job_db("jobs.db"))
    print(summary.counts, summary.eta_s)
"""

from __future__ import annotations

import logging
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eoextract._util.lazy import lazy_module
from eoextract._util.utc import as_utc, format_duration
from eoextract.jobs.db import JobDatabase
from eoextract.jobs.status import FAILED, TERMINAL, JobStatus

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
else:  # summaries are computed without pandas (``eoextract status`` stays quick)
    pd = lazy_module("pandas", globals(), "pd")


logger = logging.getLogger(__name__)

#: Columns of :func:`history_frame`.
HISTORY_COLUMNS = ("job_key", "backend_name", "old", "new", "at", "manager_id", "message",
                   "backend_job_id")
#: Managed columns :func:`jobs_frame` keeps.
JOB_COLUMNS = ("status", "backend_name", "id", "backend_status", "attempt", "error_class",
               "error_message", "created_at", "start_time", "running_start_time", "end_time",
               "updated_at", "cpu", "memory", "duration", "costs", "output_dir",
               "input_published_at", "output_published_at", "claimed_by", "lease_until")


def status_order(statuses: Any) -> list[str]:
    """Statuses sorted as the status model lists them (unknown ones last, by name)."""
    rank = {s.value: i for i, s in enumerate(JobStatus)}
    return sorted({str(s) for s in statuses}, key=lambda s: (rank.get(s, len(rank)), s))


@dataclass(frozen=True)
class ErrorClassSummary:
    """Jobs sharing one ``error_class``.

    Attributes:
        error_class: The class, e.g. ``JobFailed`` or ``UserCodeError.KeyError``.
        failed: Jobs that ended with it (``error``, ``start_failed``, ``canceled``).
        retrying: Jobs waiting for another attempt after it.
        example_key: Key of one such job.
        example_message: Its error message.
    """

    error_class: str
    failed: int
    retrying: int
    example_key: str
    example_message: str

    @property
    def total(self) -> int:
        return self.failed + self.retrying


@dataclass(frozen=True)
class RunSummary:
    """Where a run stands.

    Attributes:
        total: Number of jobs.
        counts: Jobs per status, in status-model order.
        by_backend: Jobs per backend (``"-"`` for jobs never given one) and status.
        backends: Registered backends (name → URL without credentials).
        started_at: Start of the run: the first launch (first ``creating`` in the
            history); in a database whose jobs were all launched elsewhere (copied from
            another campaign, then followed), the first status change after they were
            written; ``None`` before either (no running time, throughput or ETA then).
        last_change_at: Latest status change.
        now: When the summary was made.
        done: Jobs in a final status.
        failed: Jobs in a final failure status.
        open: Jobs not final yet.
        retries: Automatic and user retries recorded in the history (a job put back to
            ``not_started`` after a failure).
        elapsed_s: Running time: from ``started_at`` to now while jobs are open, else to
            the last change.
        throughput_per_hour: Jobs reaching a final status per hour of running time.
        eta_s: Estimated seconds until every open job is final (``None`` when unknown).
        error_classes: Failure classes, most frequent first.
        published: Jobs whose output has been published (``output_published_at`` set).
        publication_latency_s: Seconds from ``input_published_at`` to
            ``output_published_at`` over the jobs that have both: ``median``, ``mean``,
            ``max`` and ``n``; ``None`` when no job has both.
    """

    total: int
    counts: dict[str, int]
    by_backend: dict[str, dict[str, int]]
    backends: dict[str, str | None]
    started_at: datetime | None
    last_change_at: datetime | None
    now: datetime
    done: int
    failed: int
    open: int
    retries: int
    elapsed_s: float | None
    throughput_per_hour: float | None
    eta_s: float | None
    error_classes: list[ErrorClassSummary] = field(default_factory=list)
    published: int = 0
    publication_latency_s: dict[str, float] | None = None
    #: Jobs put back to ``not_started`` because an interrupted run had not created them on
    #: their backend yet (not failures, not counted in :attr:`retries`).
    requeued: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "total": self.total,
            "counts": dict(self.counts),
            "by_backend": {k: dict(v) for k, v in self.by_backend.items()},
            "backends": dict(self.backends),
            "started_at": iso(self.started_at),
            "last_change_at": iso(self.last_change_at),
            "now": iso(self.now),
            "done": self.done,
            "failed": self.failed,
            "open": self.open,
            "retries": self.retries,
            "requeued": self.requeued,
            "elapsed_s": self.elapsed_s,
            "throughput_per_hour": self.throughput_per_hour,
            "eta_s": self.eta_s,
            "error_classes": [
                {"error_class": e.error_class, "failed": e.failed, "retrying": e.retrying,
                 "example_key": e.example_key, "example_message": e.example_message}
                for e in self.error_classes
            ],
            "published": self.published,
            "publication_latency_s": self.publication_latency_s,
        }


def _aware(series: pd.Series) -> pd.Series:
    values = pd.to_datetime(series, utc=True, errors="coerce", format="mixed")
    return values


def jobs_frame(db: JobDatabase, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The jobs of ``db`` (or those of ``table``, read from it) with the managed columns
    only, indexed by ``job_key``.

    Timestamps are tz-aware UTC; missing managed columns are added empty.
    """
    df = pd.DataFrame(db.read() if table is None else table)
    out = pd.DataFrame(index=df.index.astype(str))
    out.index.name = "job_key"
    for column in JOB_COLUMNS:
        out[column] = df[column].to_numpy() if column in df.columns else None
    for column in ("created_at", "start_time", "running_start_time", "end_time", "updated_at",
                   "input_published_at", "output_published_at", "lease_until"):
        out[column] = _aware(out[column])
    out["status"] = out["status"].astype(str)
    out["attempt"] = pd.to_numeric(out["attempt"], errors="coerce").fillna(0).astype(int)
    out["costs"] = pd.to_numeric(out["costs"], errors="coerce")
    return out


def history_frame(db: JobDatabase, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Every status change of ``db`` (or of the jobs ``keys``) as one dataframe.

    Columns: ``job_key``, ``backend_name`` (the job's current backend), ``old``, ``new``,
    ``at`` (tz-aware UTC), ``manager_id``, ``message``, ``backend_job_id``; sorted by time.
    SQL databases answer with one query, others read their history once.
    """
    engine = getattr(db, "engine", None)
    if engine is not None:
        frame = _sql_history(engine, keys)
    else:
        rows: list[dict[str, Any]] = []
        jobs = db.jobs(keys=list(keys)) if keys is not None else db.jobs()
        changes = db.histories(None if keys is None else [rec.job_key for rec in jobs])
        for rec in jobs:
            for change in changes.get(rec.job_key, ()):
                rows.append({
                    "job_key": rec.job_key, "backend_name": rec.backend_name,
                    "old": None if change.old is None else str(change.old), "new": str(change.new),
                    "at": change.at, "manager_id": change.manager_id, "message": change.message,
                    "backend_job_id": change.backend_job_id,
                })
        frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    frame["at"] = _aware(frame["at"])
    frame = frame.sort_values("at", kind="stable").reset_index(drop=True)
    return frame


def _sql_history(engine: Any, keys: Sequence[str] | None) -> pd.DataFrame:
    return pd.DataFrame(_sql_history_rows(engine, keys), columns=list(HISTORY_COLUMNS))


def _sql_history_rows(engine: Any, keys: Sequence[str] | None) -> list[tuple[Any, ...]]:
    """The history as tuples of :data:`HISTORY_COLUMNS`, in the order it was written."""
    from eoextract.jobs.db._sql_rows import CHANGES, JOBS, history_rows

    columns = [JOBS.c.job_key, JOBS.c.backend_name, *(CHANGES.c[name] for name in HISTORY_COLUMNS[2:])]
    with engine.connect() as conn:
        return [tuple(r) for r in history_rows(conn, columns, keys)]


#: Fields of the job rows a summary reads.
_SUMMARY_FIELDS = ("job_key", "status", "backend_name", "attempt", "error_class", "error_message",
                   "input_published_at", "output_published_at")


def _time(value: Any) -> datetime | None:
    """An aware UTC datetime of a datetime or Timestamp; None for missing values."""
    if value is None or value != value:  # None, NaN, NaT
        return None
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    return as_utc(value) if isinstance(value, datetime) else None


def _text(value: Any) -> str | None:
    return None if value is None or value != value or str(value) == "" else str(value)


def _job_rows(db: JobDatabase, jobs: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The jobs as dicts of :data:`_SUMMARY_FIELDS`: from ``jobs`` when given, else from
    ``db`` (SQL databases with one query of these columns only)."""
    if jobs is not None:
        frame = pd.DataFrame(jobs)
        records = frame.to_dict("records")
        return [{"job_key": str(key), **{f: record.get(f) for f in _SUMMARY_FIELDS[1:]}}
                for key, record in zip(frame.index, records)]
    engine = getattr(db, "engine", None)
    if engine is not None:
        import sqlalchemy as sa

        from eoextract.jobs.db._models import Job

        table: sa.Table = Job.__table__  # type: ignore[assignment]
        with engine.connect() as conn:
            result = conn.execute(sa.select(*(table.c[f] for f in _SUMMARY_FIELDS)).order_by(table.c.pk))
            return [dict(zip(_SUMMARY_FIELDS, row)) for row in result]
    return [{"job_key": rec.job_key, "status": rec.status.value,
             **{f: rec.fields.get(f) for f in _SUMMARY_FIELDS[2:]}} for rec in db.jobs()]


def _history_rows(db: JobDatabase, history: pd.DataFrame | None) -> list[tuple[str, str | None, str, datetime, str]]:
    """The history as ``(job_key, old, new, at, message)``, sorted by time."""
    if history is not None:
        frame = pd.DataFrame(history)
        raw: Iterable[tuple[Any, ...]] = zip(frame["job_key"], frame["old"], frame["new"], frame["at"],
                                             frame["message"])
    else:
        engine = getattr(db, "engine", None)
        if engine is not None:
            raw = ((r[0], r[2], r[3], r[4], r[6]) for r in _sql_history_rows(engine, None))
        else:
            raw = ((key, None if c.old is None else c.old.value, c.new.value, c.at, c.message)
                   for key, changes in db.histories().items() for c in changes)
    rows = []
    for key, old, new, at, message in raw:
        when = _time(at)
        if when is not None:
            rows.append((str(key), _text(old), str(new), when, _text(message) or ""))
    rows.sort(key=lambda r: r[3])
    return rows


def is_requeue(old: str | None, new: str, message: str | None) -> bool:
    """Whether a history row puts back a job an interrupted run had not created on its
    backend (``creating → not_started``, "...; requeued"): no failure, no retry."""
    return (new == JobStatus.NOT_STARTED.value and old == JobStatus.CREATING.value
            and (message or "").rstrip().endswith("requeued"))


def _error_classes(jobs: Sequence[Mapping[str, Any]], limit: int) -> list[ErrorClassSummary]:
    failed_values = {s.value for s in FAILED}
    classes: dict[str, list[Any]] = {}
    with_error = [j for j in jobs if _text(j.get("error_class"))]
    failed = [j for j in with_error if str(j["status"]) in failed_values]
    retrying = [j for j in with_error
                if str(j["status"]) == JobStatus.NOT_STARTED.value and int(j.get("attempt") or 0) > 0]
    for rows, slot in ((failed, 0), (retrying, 1)):
        for row in rows:
            entry = classes.setdefault(str(row["error_class"]), [0, 0, row["job_key"], row.get("error_message")])
            entry[slot] += 1
    result = [
        ErrorClassSummary(error_class=name, failed=f, retrying=r, example_key=str(key),
                          example_message=" ".join(str(_text(msg) or "").split()))
        for name, (f, r, key, msg) in classes.items()
    ]
    result.sort(key=lambda e: (-e.total, e.error_class))
    return result[:limit] if limit else result


def summarize(
    db: JobDatabase,
    *,
    now: datetime | None = None,
    jobs: pd.DataFrame | None = None,
    history: pd.DataFrame | None = None,
    top_errors: int = 5,
) -> RunSummary:
    """Summarise the run recorded in ``db``.

    Computed on plain rows: pandas is only imported when ``jobs``/``history`` frames are
    passed or the database is not an SQL one.

    Args:
        db: The job database.
        now: The time to measure against (default: now, UTC).
        jobs: :func:`jobs_frame` of ``db`` if already read.
        history: :func:`history_frame` of ``db`` if already read.
        top_errors: Most error classes returned (0: all).

    Returns:
        The summary.
    """
    now = now or datetime.now(UTC)
    engine = getattr(db, "engine", None)
    if engine is not None and jobs is None and history is None:
        return _sql_summarize(db, engine, now, top_errors)
    job_rows = _job_rows(db, jobs)
    changes = _history_rows(db, history)
    for row in job_rows:
        row["status"] = str(row["status"])
    counts_raw = Counter(row["status"] for row in job_rows)
    counts = {s: int(counts_raw[s]) for s in status_order(counts_raw)}
    per_backend: dict[str, Counter[str]] = {}
    for row in job_rows:
        per_backend.setdefault(_text(row.get("backend_name")) or "-", Counter())[row["status"]] += 1
    by_backend = {b: {s: v[s] for s in status_order(v)} for b, v in sorted(per_backend.items())}
    terminal = {s.value for s in TERMINAL}
    done = int(sum(n for s, n in counts.items() if s in terminal))
    failed = int(sum(n for s, n in counts.items() if s in {x.value for x in FAILED}))
    open_ = int(len(job_rows) - done)

    started_at = last_change = None
    retries = requeued = 0
    if changes:
        launches = [at for _, _, new, at, _ in changes if new == JobStatus.CREATING.value]
        moves = [at for _, old, _, at, _ in changes if old is not None]  # sorted by time
        started_at = min(launches) if launches else (moves[0] if moves else None)
        last_change = changes[-1][3]
        for _, old, new, _, message in changes:
            if new == JobStatus.NOT_STARTED.value and old is not None:
                if is_requeue(old, new, message):
                    requeued += 1
                else:
                    retries += 1
    finished_in_run = _final_since(changes, started_at) if started_at is not None else 0
    elapsed, throughput, eta = _timing(started_at, last_change, now, open_, finished_in_run)
    try:
        backends = db.backends()
    except Exception:  # noqa: BLE001 - file databases may not record backends
        backends = {}
    return RunSummary(
        total=int(len(job_rows)), counts=counts, by_backend=by_backend, backends=backends,
        started_at=started_at, last_change_at=last_change, now=now, done=done, failed=failed,
        open=open_, retries=retries, elapsed_s=elapsed, throughput_per_hour=throughput,
        eta_s=eta, error_classes=_error_classes(job_rows, top_errors), requeued=requeued,
        **_publication(job_rows),
    )


def _timing(started_at: datetime | None, last_change: datetime | None, now: datetime, open_: int,
            finished_in_run: int) -> tuple[float | None, float | None, float | None]:
    """Running time, throughput (jobs per hour) and ETA of a run."""
    elapsed = throughput = eta = None
    if started_at is not None:
        end = now if open_ else (last_change or now)
        elapsed = max(0.0, (end - started_at).total_seconds())
        if elapsed > 0 and finished_in_run:
            throughput = finished_in_run / elapsed * 3600.0
            if open_:
                eta = open_ / throughput * 3600.0
        if not open_:
            eta = 0.0
    return elapsed, throughput, eta


def _sql_summarize(db: JobDatabase, engine: Any, now: datetime, top_errors: int) -> RunSummary:
    """:func:`summarize` of a SQL database from aggregate queries (never reads every row).

    """
    from eoextract.report._sql_summary import sql_figures

    figures = sql_figures(engine)
    statuses = Counter[str]()
    per_backend: dict[str, Counter[str]] = {}
    for (backend, status), n in figures.counts.items():
        statuses[status] += n
        per_backend.setdefault(_text(backend) or "-", Counter())[status] += n
    counts = {s: int(statuses[s]) for s in status_order(statuses)}
    by_backend = {b: {s: v[s] for s in status_order(v)} for b, v in sorted(per_backend.items())}
    terminal = {s.value for s in TERMINAL}
    total = int(sum(counts.values()))
    done = int(sum(n for s, n in counts.items() if s in terminal))
    failed = int(sum(n for s, n in counts.items() if s in {x.value for x in FAILED}))
    requeued = sum(1 for message in figures.requeue_messages
                   if is_requeue(JobStatus.CREATING.value, JobStatus.NOT_STARTED.value, message))
    elapsed, throughput, eta = _timing(figures.started_at, figures.last_change_at, now, total - done,
                                       done - figures.ended_before_start)
    errors = [ErrorClassSummary(error_class=name, failed=f, retrying=r, example_key=str(key),
                                example_message=" ".join(str(_text(msg) or "").split()))
              for name, (f, r, key, msg) in figures.error_classes.items()]
    errors.sort(key=lambda e: (-e.total, e.error_class))
    return RunSummary(
        total=total, counts=counts, by_backend=by_backend, backends=db.backends(),
        started_at=figures.started_at, last_change_at=figures.last_change_at, now=now, done=done,
        failed=failed, open=total - done, retries=figures.retries_and_requeues - requeued,
        elapsed_s=elapsed, throughput_per_hour=throughput, eta_s=eta,
        error_classes=errors[:top_errors] if top_errors else errors, requeued=requeued,
        published=figures.published, publication_latency_s=figures.latency_s)


def _publication(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Published jobs and the latency input published → output published (seed 002)."""
    published = 0
    latency: list[float] = []
    for row in jobs:
        out = _time(row.get("output_published_at"))
        if out is None:
            continue
        published += 1
        inp = _time(row.get("input_published_at"))
        if inp is not None:
            latency.append((out - inp).total_seconds())
    stats = None
    if latency:
        stats = {"median": float(statistics.median(latency)), "mean": float(statistics.fmean(latency)),
                 "max": float(max(latency)), "n": len(latency)}
    return {"published": published, "publication_latency_s": stats}


def _final_since(changes: Sequence[tuple[str, str | None, str, datetime, str]], since: datetime) -> int:
    """Jobs whose latest change moved them into a final status at or after ``since`` (a
    job written already final, e.g. copied from another database, did not end in the run)."""
    last: dict[str, tuple[str | None, str, datetime]] = {}
    for key, old, new, at, _ in changes:
        last[key] = (old, new, at)
    terminal = {s.value for s in TERMINAL}
    return sum(1 for old, new, at in last.values()
               if old is not None and new in terminal and at >= since)
