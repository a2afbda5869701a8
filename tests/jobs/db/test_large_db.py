"""A job database of many jobs: ``status``, ``jobs`` and ``report`` count every job while
they read only aggregates and a bounded number of rows (the timings are in
``benchmarks/bench_bigdb.py``)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from eoextract.cli import app
from eoextract.jobs.db import create_job_db
from eoextract.jobs.db._sql_rows import CHANGES, JOBS
from eoextract.jobs.status import JobStatus
from eoextract.report import history_frame, jobs_frame, summarize

pytestmark = pytest.mark.slow

N = 20_000


def _expected(n: int) -> dict[str, int]:
    """The status mix :func:`_fill` writes, by primary key (1..n)."""
    counts = {"error": 0, "canceled": 0, "not_started": 0, "finished": 0}
    for pk in range(1, n + 1):
        counts[_status(pk)] += 1
    return counts


def _status(pk: int) -> str:
    if pk % 20 == 0:
        return "error"
    if pk % 50 == 1:
        return "canceled"
    if pk % 10 == 3:
        return "not_started"
    return "finished"


def _fill(location: str, n: int):
    """``n`` jobs: the bulk of them set by SQL (status mix of :func:`_status`, with the
    history rows a run writes), three of them moved by the real transitions."""
    db = create_job_db(location, pd.DataFrame({"title": [f"t{i}" for i in range(n)]}))
    db.register_backend("b1", None)
    c = JOBS.c
    ended = sa.case((c.pk % 20 == 0, "error"), (c.pk % 50 == 1, "canceled"), else_="finished")
    started = c.pk % 10 != 3
    with db.engine.begin() as conn:
        conn.execute(sa.update(JOBS).where(started).values(
            status=ended, backend_name="b1", attempt=1,
            error_class=sa.case((c.pk % 20 == 0, sa.case((c.pk % 3 == 0, "JobFailed"),
                                                          else_="DownloadFailed")), else_=None),
            error_message=sa.case((c.pk % 20 == 0, "failed"), else_=None)))
        added = datetime.now(UTC)  # the run starts after the jobs were added
        when = sa.literal(added + timedelta(seconds=1), c.updated_at.type)
        end = sa.literal(added + timedelta(seconds=2), c.updated_at.type)
        cols = ["job_pk", "old", "new", "at", "message"]
        conn.execute(sa.insert(CHANGES).from_select(cols, sa.select(
            c.pk, sa.literal("not_started"), sa.literal("creating"), when, sa.null()).where(
            c.status != "not_started")))
        conn.execute(sa.insert(CHANGES).from_select(cols, sa.select(
            c.pk, sa.literal("creating"), c.status, end, c.error_message).where(
            c.status != "not_started")))
    # three jobs through the manager's transitions: a retry, a failure, a finish
    for key in ("2", "12", "22"):  # pk 3, 13, 23: not_started
        db.transition(key, JobStatus.CREATING, backend_name="b1", attempt=1)
        db.transition(key, JobStatus.RUNNING, id=f"j{key}")
    db.transition("2", JobStatus.NOT_STARTED, error_class="JobFailed", error_message="retry")
    db.transition("12", JobStatus.ERROR, error_class="JobFailed", error_message="boom")
    db.transition("22", JobStatus.FINISHED)
    return db


def _run(*args: object):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_status_jobs_and_report_count_every_job(sql_location, tmp_path):
    db = _fill(sql_location, N)
    expected = _expected(N)
    expected.update(not_started=expected["not_started"] - 2, error=expected["error"] + 1,
                    finished=expected["finished"] + 1)
    assert db.count_by_status() == expected

    # the aggregated summary equals the one computed from every row
    now = datetime.now(UTC)
    from_sql = summarize(db, now=now, top_errors=0)
    from_rows = summarize(db, now=now, jobs=jobs_frame(db), history=history_frame(db), top_errors=0)
    assert from_sql.to_dict() == from_rows.to_dict()
    assert from_sql.counts == {s: expected[s] for s in ("not_started", "finished", "error", "canceled")}
    assert from_sql.retries == 1 and from_sql.total == N
    classes = {e.error_class: (e.failed, e.retrying) for e in from_sql.error_classes}
    errors_by_sql = expected["error"] - 1
    assert classes == {"JobFailed": (sum(1 for pk in range(20, N + 1, 20) if pk % 3 == 0) + 1, 1),
                       "DownloadFailed": (sum(1 for pk in range(20, N + 1, 20) if pk % 3), 0)}
    assert sum(classes["JobFailed"]) + classes["DownloadFailed"][0] == errors_by_sql + 2

    status = json.loads(_run("status", sql_location, "--json"))
    assert status["counts"] == from_sql.counts and status["total"] == N
    assert status["by_backend"]["b1"]["error"] == expected["error"]

    listing = _run("jobs", sql_location, "--status", "error", "--format", "csv")
    rows = pd.read_csv(io.StringIO(listing), index_col=0)
    assert len(rows) == expected["error"] and set(rows["status"]) == {"error"}
    table = _run("jobs", sql_location, "--status", "error")
    assert f"first 500 job(s) of {expected['error']} shown" in table
    assert "1 job(s)" in _run("jobs", sql_location, "--status", "error", "--limit", "1")

    out = tmp_path / "report.html"
    _run("report", sql_location, "-o", out, "--no-pngs")
    page = out.read_text()
    assert f"of {N} jobs" in page  # drawn from a sample, counted in full
    assert f"<td>error</td><td class='n'>{expected['error']}</td>" in page
    assert f"<td>finished</td><td class='n'>{expected['finished']}</td>" in page
    db.close()
