"""The SQL of docs/job-database.md runs against the SQLite database of a real small run, and
says what the page says; ``eoextract set`` adds the user's fields it queries."""

from __future__ import annotations

import re
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eoextract.cli import app
from eoextract.extract import ItemStore, mark_jobs_published
from eoextract.jobs.db import get_job_db

sys.path.insert(0, str(Path(__file__).parent))
from instant_jobs import create_instant_job, instant_jobs, instant_manager  # noqa: E402

PAGE = Path(__file__).resolve().parents[2] / "docs" / "job-database.md"
_SQL = re.compile(r"^```sql\n(.*?)^```", re.S | re.M)


def sql_blocks() -> list[str]:
    return _SQL.findall(PAGE.read_text(encoding="utf-8"))


def by_tile(root_dir, idx, row, asset_id):
    return root_dir / row["tile"] / asset_id


@pytest.fixture(scope="module")
def run(local_backend, tmp_path_factory):
    """Three jobs; the third aims at the second's file and fails; the others are published."""
    root = tmp_path_factory.mktemp("jobdb")
    published_in = datetime.now(UTC) - timedelta(hours=3)
    df = instant_jobs(3, product_id=["S2A_MSIL2A_1", "S2B_MSIL2A_2", "S2A_MSIL2A_3"],
                      input_published_at=[published_in] * 3)
    df["tile"] = ["31UFS", "31UGS", "31UGS"]
    stats = instant_manager(root / "out", local_backend, by_tile).run_jobs(df, create_instant_job, root / "jobs.db")
    assert stats["status_counts"] == {"finished": 2, "error": 1}
    items = [i["id"] for i in ItemStore(root / "out").iter_items()]
    assert sorted(mark_jobs_published(root / "jobs.db", items, root / "out")) == ["0", "1"]
    result = CliRunner().invoke(app, ["set", str(root / "jobs.db"), "0",
                                      "output_path=s3://bucket/products/S2A_MSIL2A_1", "qa_passed=true"])
    assert result.exit_code == 0, result.output
    return root


def query(db: Path, sql: str) -> list[sqlite3.Row]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql).fetchall()


def test_every_query_of_the_page_runs_and_finds_rows(run):
    blocks = sql_blocks()
    assert len(blocks) >= 6
    for sql in blocks:
        rows = query(run / "jobs.db", sql)
        assert rows, f"no rows from:\n{sql}"


def test_the_queries_say_what_the_page_says(run):
    blocks = sql_blocks()
    counts = {(r["backend_name"], r["status"]): r["jobs"] for r in query(run / "jobs.db", blocks[0])}
    assert counts == {("local", "finished"): 2, ("local", "error"): 1}
    timeliness = query(run / "jobs.db", blocks[1])
    assert sorted(r["product_id"] for r in timeliness) == ["S2A_MSIL2A_1", "S2B_MSIL2A_2"]
    assert {r["tile"] for r in timeliness} == {"31UFS", "31UGS"}
    assert all(2.9 < r["hours"] < 4 for r in timeliness)
    history = query(run / "jobs.db", blocks[2])
    assert history[0]["message"] == "added" and history[-1]["new"] == "finished"
    assert history[-1]["backend_job_id"] == get_job_db(run / "jobs.db").get("0").backend_job_id
    failed = query(run / "jobs.db", blocks[4])
    assert [(r["job_key"], r["error_class"]) for r in failed] == [("2", "UnsafeAssetPath")]
    assert "'1'" in failed[0]["error_message"]
    places = {r["job_key"]: r for r in query(run / "jobs.db", blocks[-1])}
    assert set(places) == {"0", "1"}
    assert places["0"]["output_path"] == "s3://bucket/products/S2A_MSIL2A_1"
    assert Path(places["0"]["output_dir"]) == (run / "out" / "31UFS").resolve()
    assert places["1"]["output_path"] is None
    # the user's field is a column of the job like the others
    assert get_job_db(run / "jobs.db").get("0").row["qa_passed"] is True


def test_the_page_documents_the_real_tables(run):
    text = PAGE.read_text(encoding="utf-8")
    with sqlite3.connect(run / "jobs.db") as conn:
        for table in ("jobs", "job_status_changes"):
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            section = text.split(f"### `{table}`", 1)[1].split("###", 1)[0]
            documented = set(re.findall(r"`([a-z_]+)`", section))
            assert set(columns) <= documented, set(columns) - documented


def test_set_refuses_what_it_cannot_set(run):
    runner = CliRunner()
    db = str(run / "jobs.db")
    assert runner.invoke(app, ["set", db, "nope", "a=1"]).exit_code == 2
    status = runner.invoke(app, ["set", db, "0", "status=finished"])
    assert status.exit_code == 2 and "use 'eoextract retry' or 'eoextract cancel'" in status.output
    assert "Set fields of one job, such as" in runner.invoke(app, ["--help"]).output
    assert runner.invoke(app, ["set", db, "0", "no-equals-sign"]).exit_code == 2
