"""The figures of a run summary aggregated by a SQL job database.

Each figure is one aggregate query answered from an index (schema version 5): counts per
status and backend from ``ix_jobs_status_backend``, failures per error class from
``ix_jobs_status_error`` (jobs with an error), the first launch and the latest change from
the history's ``(new, at)`` index, retries and requeues from its partial ``(new, old)``
one. No job or history row is read into Python except one example per error class and the
few requeue rows, so a summary of a million jobs takes well under a second.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from eoextract._util.utc import as_utc
from eoextract.jobs.db._models import REQUEUES, Job, JobStatusChange
from eoextract.jobs.status import FAILED, TERMINAL, JobStatus

_JOBS: sa.Table = Job.__table__  # type: ignore[assignment]
_CHANGES: sa.Table = JobStatusChange.__table__  # type: ignore[assignment]
_FAILED = sorted(s.value for s in FAILED)
_TERMINAL = sorted(s.value for s in TERMINAL)
_NOT_STARTED = JobStatus.NOT_STARTED.value


@dataclass
class SqlFigures:
    """Aggregates of one job database (see :func:`sql_figures`).

    Attributes:
        counts: ``(backend_name, status) → jobs``.
        error_classes: ``error_class → [failed, retrying, example key, example message]``.
        started_at: First ``creating`` change, else the first change of a job already
            written (``old`` set), else ``None``.
        last_change_at: Latest change.
        ended_before_start: Jobs in a final status with no change since ``started_at``.
        retries_and_requeues: Changes back to ``not_started`` after another status.
        requeue_messages: Messages of the changes ``creating → not_started``.
        published: Jobs with ``output_published_at``.
        latency_s: Seconds from input to output publication: median, mean, max, n.
    """

    counts: dict[tuple[str | None, str], int] = field(default_factory=dict)
    error_classes: dict[str, list[Any]] = field(default_factory=dict)
    started_at: datetime | None = None
    last_change_at: datetime | None = None
    ended_before_start: int = 0
    retries_and_requeues: int = 0
    requeue_messages: list[str | None] = field(default_factory=list)
    published: int = 0
    latency_s: dict[str, float] | None = None


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text from aggregates
        value = datetime.fromisoformat(value)
    return as_utc(value)


def _change_times(conn: sa.Connection) -> tuple[datetime | None, datetime | None]:
    """First launch and latest change: a min or max per status, one index lookup each.
    Without a launch, the first change of a job already written (one scan of the history,
    made only until a manager launches a job)."""
    at, new = _CHANGES.c.at, _CHANGES.c.new
    parts = [sa.select(sa.func.min(at)).where(new == JobStatus.CREATING.value).scalar_subquery()]
    parts += [sa.select(sa.func.max(at)).where(new == s.value).scalar_subquery() for s in JobStatus]
    row = conn.execute(sa.select(*parts)).one()
    launch = _when(row[0])
    lasts = [t for t in (_when(v) for v in row[1:]) if t is not None]
    if launch is None and lasts:
        launch = _when(conn.scalar(sa.select(sa.func.min(at)).where(_CHANGES.c.old.is_not(None))))
    return launch, (max(lasts) if lasts else None)


def _error_classes(conn: sa.Connection) -> dict[str, list[Any]]:
    c = _JOBS.c
    failed = c.status.in_(_FAILED)
    retrying = (c.status == _NOT_STARTED) & (c.attempt > 0)
    # 1: failed, 0: to be retried, else neither; only jobs with an error are read (the
    # partial index ix_jobs_status_error holds just them, and covers this query)
    is_failed = sa.case((failed, 1), (retrying, 0), else_=None).label("is_failed")
    stmt = (sa.select(c.error_class, is_failed, sa.func.count(), sa.func.min(c.pk))
            .where(c.error_class.is_not(None), c.error_class != "")
            .group_by(c.error_class, is_failed))
    classes: dict[str, list[Any]] = {}
    examples: dict[str, tuple[int, int]] = {}  # class -> (failed first, pk)
    for name, was_failed, n, pk in conn.execute(stmt):
        if was_failed is None:
            continue
        entry = classes.setdefault(str(name), [0, 0, None, None])
        entry[0 if was_failed else 1] += int(n)
        rank = (0 if was_failed else 1, int(pk))
        if name not in examples or rank < examples[name]:
            examples[str(name)] = rank
    if examples:
        pks = {pk: name for name, (_, pk) in examples.items()}
        for pk, key, message in conn.execute(sa.select(c.pk, c.job_key, c.error_message)
                                             .where(c.pk.in_(list(pks)))):
            classes[pks[pk]][2:] = [key, message]
    return classes


def _seconds(dialect: str, later: sa.ColumnElement[Any], earlier: sa.ColumnElement[Any]
             ) -> sa.ColumnElement[float]:
    if dialect == "postgresql":
        return sa.func.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def _publication(conn: sa.Connection) -> tuple[int, dict[str, float] | None]:
    c = _JOBS.c
    published = int(conn.scalar(sa.select(sa.func.count()).where(
        c.output_published_at.is_not(None))) or 0)
    if not published:
        return 0, None
    latency = _seconds(conn.dialect.name, c.output_published_at, c.input_published_at).label("s")
    both = sa.and_(c.output_published_at.is_not(None), c.input_published_at.is_not(None))
    n, mean, top = conn.execute(sa.select(sa.func.count(), sa.func.avg(latency),
                                          sa.func.max(latency)).where(both)).one()
    if not n:
        return published, None
    middle = list(conn.scalars(sa.select(latency).where(both).order_by(latency)
                               .offset((n - 1) // 2).limit(2 - n % 2)))
    return published, {"median": float(statistics.fmean(middle)), "mean": float(mean),
                       "max": float(top), "n": int(n)}


def _ended_before(conn: sa.Connection, started_at: datetime) -> int:
    """Jobs in a final status without a change since ``started_at``: those that ended
    before (few, found through the history's ``(new, at)`` index)."""
    c, h = _JOBS.c, _CHANGES.c
    early = sa.select(h.job_pk).where(h.new.in_(_TERMINAL), h.at < started_at)
    later = sa.select(h.id).where(h.job_pk == c.pk, h.at >= started_at).exists()
    stmt = sa.select(sa.func.count()).where(c.pk.in_(early), c.status.in_(_TERMINAL), ~later)
    return int(conn.scalar(stmt) or 0)


def sql_figures(engine: sa.Engine) -> SqlFigures:
    """The aggregates of a summary, in one read transaction of ``engine``'s database."""
    c, h = _JOBS.c, _CHANGES.c
    out = SqlFigures()
    with engine.connect() as conn, conn.begin():
        counts = sa.select(c.backend_name, c.status, sa.func.count()).group_by(c.status, c.backend_name)
        out.counts = {(b, str(s)): int(n) for b, s, n in conn.execute(counts)}
        out.error_classes = _error_classes(conn)
        out.started_at, out.last_change_at = _change_times(conn)
        back = sa.text(REQUEUES)  # as written in the partial index (a literal, not a parameter)
        out.retries_and_requeues = int(conn.scalar(sa.select(sa.func.count()).select_from(_CHANGES)
                                                   .where(back)) or 0)
        out.requeue_messages = list(conn.scalars(sa.select(h.message).where(
            back, h.old == JobStatus.CREATING.value)))
        if out.started_at is not None:
            out.ended_before_start = _ended_before(conn, out.started_at)
        out.published, out.latency_s = _publication(conn)
    return out


def sample_keys(engine: sa.Engine, jobs: int, latest_failures: int) -> tuple[list[str], int]:
    """Keys of about ``jobs`` jobs spread evenly over the table (every k-th primary key)
    and of the ``latest_failures`` most recently changed failed jobs; returns them and k."""
    c = _JOBS.c
    with engine.connect() as conn, conn.begin():
        # two statements: each is one lookup at an end of the primary key
        first = conn.scalar(sa.select(sa.func.min(c.pk)))
        last = conn.scalar(sa.select(sa.func.max(c.pk)))
        step = max(1, -(-((last or 0) - (first or 0) + 1) // max(1, jobs)))
        pks = list(range(first or 0, (last or -1) + 1, step))
        keys = [key for i in range(0, len(pks), 500)
                for key in conn.scalars(sa.select(c.job_key).where(c.pk.in_(pks[i:i + 500])))]
        keys += conn.scalars(sa.select(c.job_key).where(c.status.in_(_FAILED))
                             .order_by(c.updated_at.desc()).limit(latest_failures))
    return list(dict.fromkeys(keys)), step
