"""Scripts written for openeo's and WorldCereal's job managers run with our manager.

Against the embedded backend over real HTTP, with openeo's own job database objects.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pandas as pd
import pytest
from openeo.extra.job_management import (
    CsvJobDatabase,
    JobDatabaseInterface,
    ParquetJobDatabase,
)
from openeo.extra.job_management import create_job_db as openeo_create_job_db
from openeo.extra.job_management import get_job_db as openeo_get_job_db

from eoextract.errors import ConfigurationError
from eoextract.jobs import MultiBackendJobManager, get_job_db


def _manager(local_backend, **kw):
    kw.setdefault("poll_sleep", 0.1)
    kw.setdefault("retry_backoff", 0.05)
    m = MultiBackendJobManager(**kw)
    m.add_backend("local", local_backend.connect(), parallel_jobs=2)
    return m


def test_seed_000_openeo_create_job_db_with_our_manager(local_backend, start_jobs, job_df, tmp_path):
    """The seed snippet: openeo's create_job_db, our manager, a relative root_dir."""
    job_db = openeo_create_job_db("jobs.csv", df=job_df(3))  # cwd is tmp_path
    m = _manager(local_backend, root_dir="out", download_results=True)
    stats = m.run_jobs(job_db=job_db, start_job=start_jobs())
    assert stats["start_job call"] == 3 and stats["job finished"] == 3
    table = pd.read_csv(tmp_path / "jobs.csv")
    assert list(table["status"]) == ["finished"] * 3
    assert table["id"].notna().all() and set(table["backend_name"]) == {"local"}
    assert {"title", "value", "id", "status", "start_time", "running_start_time", "costs"} <= set(table.columns)
    assert not any(c.startswith("eoextract") or c in ("attempt", "claimed_by") for c in table.columns)
    assert list(CsvJobDatabase(tmp_path / "jobs.csv").read()["status"]) == ["finished"] * 3
    for job_id in table["id"]:
        job_dir = tmp_path / "out" / f"job_{job_id}"
        names = {p.name for p in job_dir.iterdir()}
        assert {"job-results.json", f"job_{job_id}.json"} <= names
        assert any(n.endswith(".nc") for n in names)
        assert ".eoextract" not in names
        assert json.loads((job_dir / "job-results.json").read_text())["assets"]
    assert not (tmp_path / "out" / "out").exists()
    assert m.get_job_dir("x") == tmp_path / "out" / "job_x"  # resolved once, at construction


def test_relative_root_dir_resolved_at_construction(local_backend, start_jobs, job_df, tmp_path, monkeypatch):
    m = _manager(local_backend, root_dir="results", download_results=True)
    monkeypatch.chdir(tmp_path.parent)  # moving away afterwards changes nothing
    m.run_jobs(job_df(1), start_jobs(), job_db=tmp_path / "jobs.db")
    job_id = get_job_db(tmp_path / "jobs.db").read()["id"].iloc[0]
    assert (tmp_path / "results" / f"job_{job_id}" / "job-results.json").exists()


@pytest.mark.parametrize("db_class", [CsvJobDatabase, ParquetJobDatabase])
def test_openeo_job_database_classes_keep_the_state(local_backend, start_jobs, job_df, tmp_path, db_class):
    path = tmp_path / ("jobs.csv" if db_class is CsvJobDatabase else "jobs.parquet")
    job_db = db_class(path).initialize_from_df(job_df(3))
    _manager(local_backend).run_jobs(job_db=job_db, start_job=start_jobs())
    fresh = db_class(path).read()
    assert list(fresh["status"]) == ["finished"] * 3
    assert fresh["start_time"].str.endswith("Z").all()
    assert openeo_get_job_db(path).count_by_status() == {"finished": 3}


class MemoryJobDatabase(JobDatabaseInterface):
    """A user's database with only openeo's five methods (no read())."""

    def __init__(self, df: pd.DataFrame):
        self.df = df.assign(status="not_started", id=None, backend_name=None)
        self.persisted = 0

    def exists(self) -> bool:
        return True

    def persist(self, df: pd.DataFrame) -> None:
        self.persisted += 1
        for col in df.columns:
            if col not in self.df.columns:
                self.df[col] = None
            self.df[col] = self.df[col].astype(object)
        self.df.loc[df.index, list(df.columns)] = df.to_numpy()

    def count_by_status(self, statuses=()) -> dict:
        counts = self.df["status"].value_counts().to_dict()
        return {k: v for k, v in counts.items() if not statuses or k in statuses}

    def get_by_status(self, statuses, max=None) -> pd.DataFrame:
        found = self.df[self.df["status"].isin(statuses)]
        return found.head(max) if max is not None else found

    def get_by_indices(self, indices) -> pd.DataFrame:
        return self.df.loc[list(indices)]


def test_user_subclass_of_the_interface(local_backend, start_jobs, job_df):
    db = MemoryJobDatabase(job_df(4))
    _manager(local_backend).run_jobs(start_job=start_jobs(), job_db=db)
    assert list(db.df["status"]) == ["finished"] * 4
    assert db.df["id"].notna().all()
    assert db.persisted <= 12  # only changed rows, in batches, never one call per cell


def test_get_and_create_job_db_of_either_package_with_either_manager(local_backend, start_jobs, job_df,
                                                                      tmp_path):
    wrapped = get_job_db(CsvJobDatabase(tmp_path / "a.csv"))
    assert not wrapped.exists()
    wrapped.initialize_from_df(job_df(1))
    _manager(local_backend).run_jobs(start_job=start_jobs(), job_db=wrapped)
    assert list(CsvJobDatabase(tmp_path / "a.csv").read()["status"]) == ["finished"]
    # a file our factory made is read by openeo's reader
    from eoextract.jobs import create_job_db

    ours = create_job_db(tmp_path / "b.csv", job_df(1))
    _manager(local_backend).run_jobs(start_job=start_jobs(), job_db=ours)
    assert list(openeo_get_job_db(tmp_path / "b.csv").read()["status"]) == ["finished"]


def test_not_a_job_database_is_a_clear_error(local_backend, start_jobs):
    with pytest.raises(ConfigurationError, match="JobDatabaseInterface"):
        _manager(local_backend).run_jobs(start_job=start_jobs(), job_db={"jobs": []})
    with pytest.raises(ConfigurationError, match="status_callback"):
        _manager(local_backend).run_jobs(start_jobs(), "jobs.db", "not callable")


def test_worldcereal_status_callback_that_raises_is_logged(local_backend, start_jobs, job_df, tmp_path,
                                                           caplog):
    create = __import__("eoextract.jobs", fromlist=["create_job_db"]).create_job_db
    db = create(tmp_path / "jobs.db", job_df(2))
    seen: list[pd.DataFrame] = []

    def status_callback(df: pd.DataFrame) -> None:
        seen.append(df)
        raise RuntimeError("widget failed")

    with caplog.at_level(logging.ERROR):
        stats = _manager(local_backend).run_jobs(start_jobs(), db, status_callback)  # WorldCereal's order
    assert stats["status_counts"] == {"finished": 2}
    assert seen and all(isinstance(df, pd.DataFrame) for df in seen)
    assert "status_callback raised" in caplog.text


def test_legacy_output_file_returns(local_backend, start_jobs, job_df, tmp_path):
    m = _manager(local_backend)
    with pytest.warns(DeprecationWarning, match="output_file"):
        stats = m.run_jobs(df=job_df(2), start_job=start_jobs(), output_file=tmp_path / "jobs.csv")
    assert stats["status_counts"] == {"finished": 2}
    stats = m.run_jobs(job_df(1), start_jobs(), tmp_path / "more.csv")  # positional form
    assert stats["status_counts"] == {"finished": 1}


def test_exits_when_all_jobs_are_final_with_time_sleep_patched(local_backend, start_jobs, job_df, tmp_path,
                                                               monkeypatch):
    """openeo's tests patch time.sleep: no decision may wait for the wall clock."""
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", lambda s: calls.append(s))
    m = _manager(local_backend, poll_sleep=60)  # a minute between polls, in sleep calls only
    started = time.monotonic()
    stats = m.run_jobs(job_df(3), start_jobs(), job_db=tmp_path / "jobs.csv")
    assert stats["status_counts"] == {"finished": 3}
    assert time.monotonic() - started < 30
    assert calls and max(calls) <= 60


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_our_files_have_openeos_columns_and_keep_our_state_aside(local_backend, start_jobs, job_df, tmp_path,
                                                                 suffix):
    from eoextract.jobs import create_job_db

    path = tmp_path / f"jobs{suffix}"
    db = create_job_db(path, job_df(2))
    written = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(written.columns) == ["title", "value", "id", "backend_name", "status", "start_time",
                                     "running_start_time", "costs"]  # as openeo 0.53 initialises
    if suffix == ".csv":
        assert path.read_text().splitlines()[1].endswith(",,,not_started,,,")  # empty cells
    _manager(local_backend).run_jobs(start_job=start_jobs(), job_db=db)
    theirs = (CsvJobDatabase if suffix == ".csv" else ParquetJobDatabase)(path).read()
    assert list(theirs["status"]) == ["finished"] * 2
    assert "attempt" not in theirs.columns and "eoextract_status" not in theirs.columns
    state = pd.read_csv(tmp_path / f"jobs{suffix}.state.csv")
    assert {"job_key", "attempt", "eoextract_status", "claimed_by"} <= set(state.columns)
    again = get_job_db(path)
    assert [r.status.value for r in again.jobs()] == ["finished"] * 2
    assert [c.new.value for c in again.history(again.jobs()[0].job_key)][-1] == "finished"
