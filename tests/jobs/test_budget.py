"""A credit budget: no job is created once what was spent plus the open jobs' estimate would
pass it; the run ends with "budget reached" and a run with a higher budget goes on."""

from __future__ import annotations

import logging
import uuid

import pandas as pd
import pytest

from eoextract.backend import LocalBackend
from eoextract.jobs import JobManager
from eoextract.jobs.db import get_job_db

from conftest import make_start_job  # noqa: I001 - the jobs tests' helpers


def _jobs(n: int, tag: str) -> pd.DataFrame:
    prefix = uuid.uuid4().hex[:6]
    return pd.DataFrame({"title": [f"{tag}-{prefix}-{i}" for i in range(n)]},
                        index=[f"{tag}-{i}" for i in range(n)])


def _manager(backend, root) -> JobManager:
    manager = JobManager(poll_sleep=0.1, retry_backoff=0.05, root_dir=root, download_results=False)
    manager.add_backend("cdse", backend.connect, parallel_jobs=2)
    return manager


@pytest.fixture(scope="module")
def cdse_backend():
    with LocalBackend(profile="cdse", workers=2) as backend:
        yield backend


def test_budget_stops_creation_within_one_jobs_cost_and_the_next_run_goes_on(cdse_backend, tmp_path, caplog):
    start = make_start_job()
    probe = _manager(cdse_backend, tmp_path).run_jobs(_jobs(1, "probe"), start, job_db=tmp_path / "probe.db")
    assert probe["status_counts"] == {"finished": 1}
    cost = get_job_db(tmp_path / "probe.db").cost_totals().spent
    assert cost > 0  # the production profile bills every job the same for the same graph

    budget = 3.5 * cost
    db_path = tmp_path / "jobs.db"
    with caplog.at_level(logging.WARNING, logger="eoextract.jobs.manager"):
        stats = _manager(cdse_backend, tmp_path).run_jobs(_jobs(10, "b"), start, job_db=db_path, budget=budget)
    assert stats["budget_reached"] is True
    assert stats["credits_spent"] <= budget and budget - stats["credits_spent"] < cost  # within one job
    assert stats["status_counts"] == {"finished": 3, "not_started": 7}
    assert stats["credits_by_backend"] == {"cdse": stats["credits_spent"]}
    assert get_job_db(db_path).backend_state()["budget"] == budget  # for the live status page
    assert "budget reached" in caplog.text

    more = _manager(cdse_backend, tmp_path).run_jobs(start_job=start, job_db=db_path, budget=100 * cost)
    assert more["status_counts"] == {"finished": 10} and more["budget_reached"] is False
    assert more["start_job call"] == 7
    assert get_job_db(db_path).cost_totals().jobs_with_costs == 10
    from typer.testing import CliRunner

    from eoextract.cli import app

    shown = CliRunner().invoke(app, ["status", str(db_path)])
    assert shown.exit_code == 0 and f"credits {10 * cost:.2f} (10 jobs; cdse {10 * cost:.2f})" in shown.output
    report = CliRunner().invoke(app, ["report", str(db_path), "-o", str(tmp_path / "report.html")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report.html").read_text()
    assert "credits spent" in page and f"{10 * cost:.2f} (10 jobs; cdse {10 * cost:.2f})" in page


def test_a_budget_without_reported_costs_is_not_enforced(local_backend, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="eoextract.jobs.manager"):
        stats = _manager(local_backend, tmp_path).run_jobs(_jobs(4, "free"), make_start_job(),
                                                           job_db=tmp_path / "jobs.db", budget=1.0)
    assert stats["status_counts"] == {"finished": 4} and stats["budget_reached"] is False
    assert "not enforced" in caplog.text


@pytest.mark.parametrize("suffix", [".db", ".csv"])
def test_cost_totals(tmp_path, suffix):
    from eoextract.jobs import create_job_db

    db = create_job_db(tmp_path / f"jobs{suffix}", pd.DataFrame({"x": range(4)}))
    for key, costs, backend in (("0", 1.5, "a"), ("1", 2.0, "b")):
        db.transition(key, "creating", backend_name=backend)
        db.transition(key, "finished", costs=costs)
    db.transition("2", "creating")
    db.transition("2", "error")
    totals = db.cost_totals()
    assert (totals.spent, totals.jobs_with_costs, totals.ended_without_costs) == (3.5, 2, 1)
    assert totals.by_backend == {"a": 1.5, "b": 2.0}


def test_usage_and_costs_of_a_listing_without_them_come_from_the_description(cdse_backend, tmp_path,
                                                                          monkeypatch):
    """Backends whose job listing leaves out usage and costs: the ended job is described once."""
    from eoextract.jobs import _backends

    listed = _backends.BackendSpec.poll_statuses

    def without_usage(self, job_ids, **kw):
        return {k: {f: v for f, v in item.items() if f not in ("usage", "costs")}
                for k, item in listed(self, job_ids, **kw).items()}

    monkeypatch.setattr(_backends.BackendSpec, "poll_statuses", without_usage)
    stats = _manager(cdse_backend, tmp_path).run_jobs(_jobs(2, "d"), make_start_job(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2} and stats["job describe"] == 2
    table = get_job_db(tmp_path / "jobs.db").read()
    assert table["costs"].notna().all() and table["usage"].str.contains("input_pixel").all()
