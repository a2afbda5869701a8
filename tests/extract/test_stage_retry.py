"""Redoing one stage of a failed job (download or post-processing) without a new backend
job, the tracebacks of user code kept per job, and an extraction with nothing to catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pystac
import pytest
from typer.testing import CliRunner

from eoextract.cli import app
from eoextract.errors import ConfigurationError, EmptyCatalogue
from eoextract.extract import build_catalogue
from eoextract.jobs import retry_jobs
from eoextract.jobs.db import get_job_db
from eoextract.jobs.status import JobStatus, is_allowed
from eoextract.stac import validate_catalog

from tests.extract.test_extraction_manager import create_datacube, job_dataframe, make_manager

S = JobStatus
runner = CliRunner()


def _backend_job_count(backend) -> int:
    return len(backend.connect().list_jobs(limit=10_000))


def _keep_items(job_items, row, parameters):
    return job_items


def test_a_user_retry_may_put_a_job_in_error_back_to_one_stage():
    assert is_allowed(S.ERROR, S.DOWNLOADING, user_retry=True)
    assert is_allowed(S.ERROR, S.POSTPROCESSING, user_retry=True)
    assert not is_allowed(S.ERROR, S.DOWNLOADING)
    assert not is_allowed(S.CANCELED, S.POSTPROCESSING, user_retry=True)
    assert not is_allowed(S.FINISHED, S.DOWNLOADING, user_retry=True)


def test_a_failed_post_job_action_keeps_its_traceback_and_is_redone_alone(local_backend, tmp_path, caplog):
    df = job_dataframe(2).iloc[:1]
    calls: list[str] = []

    def labelling_step_that_fails(job_items, row, parameters):
        calls.append(row.name)
        raise RuntimeError("label file missing")

    manager = make_manager(tmp_path / "out", post_job_action=labelling_step_that_fails, max_attempts=2)
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    caplog.set_level("DEBUG", logger="eoextract")
    manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    db = get_job_db(tmp_path / "jobs.db")
    (rec,) = db.jobs()
    assert rec.status is S.ERROR and rec.fields["error_class"] == "UserCodeError.RuntimeError"
    backend_job = rec.backend_job_id
    # the traceback is kept in the job's history and logged at DEBUG
    failure = db.history(rec.job_key)[-1]
    assert failure.new is S.ERROR and failure.summary.startswith("results: RuntimeError: label file missing")
    assert "Traceback (most recent call last)" in failure.traceback
    assert "labelling_step_that_fails" in failure.traceback
    assert any("labelling_step_that_fails" in r.getMessage() for r in caplog.records if r.levelname == "DEBUG")
    # ... and shown by the CLI (the latest by default; JSON splits it off)
    shown = runner.invoke(app, ["history", str(tmp_path / "jobs.db"), rec.job_key])
    assert shown.exit_code == 0, shown.output
    assert "labelling_step_that_fails" in shown.output and "(traceback below)" in shown.output
    as_json = json.loads(runner.invoke(app, ["history", str(tmp_path / "jobs.db"), rec.job_key, "--json"]).output)
    assert as_json[-1]["message"].startswith("results: RuntimeError") and "\n" not in as_json[-1]["message"]
    assert "labelling_step_that_fails" in as_json[-1]["traceback"]

    # redo only the post-processing: the same backend job, the verified files reused
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.nc")}
    assert files
    before = _backend_job_count(local_backend)
    result = runner.invoke(app, ["retry", str(tmp_path / "jobs.db"), "--stage", "postprocess"])
    assert result.exit_code == 0, result.output
    assert get_job_db(tmp_path / "jobs.db").get(rec.job_key).status is S.POSTPROCESSING
    fixed = make_manager(tmp_path / "out", post_job_action=_keep_items)
    fixed.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = fixed.run_jobs(None, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 1}
    done = get_job_db(tmp_path / "jobs.db").get(rec.job_key)
    assert done.status is S.FINISHED and done.backend_job_id == backend_job
    assert _backend_job_count(local_backend) == before  # no new backend job
    assert {p: p.stat().st_mtime_ns for p in files} == files  # nothing downloaded again
    assert validate_catalog(fixed.create_stac(), check_assets=True).n_items == len(files)
    changes = [(c.old, c.new) for c in get_job_db(tmp_path / "jobs.db").history(rec.job_key)]
    assert (S.ERROR, S.POSTPROCESSING) in changes and changes[-1] == (S.POSTPROCESSING, S.FINISHED)


def test_a_failed_download_is_redone_from_the_same_backend_job(local_backend, tmp_path):
    df = job_dataframe(2).iloc[:1]
    failing = {"on": True}

    def paths(root: Path, tmp: Path, index: int, row: pd.Series) -> Path:
        if failing["on"]:
            raise OSError(13, "Permission denied", str(root / "restricted"))
        return root / f"{row.name}_{index}.nc"

    manager = make_manager(tmp_path / "out", generator=paths, post_job_action=_keep_items, max_attempts=1)
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    db = get_job_db(tmp_path / "jobs.db")
    (rec,) = db.jobs()
    assert rec.status is S.ERROR and rec.backend_job_id
    # post-processing alone cannot help: the files never were in place
    (refused,) = retry_jobs(db, keys=[rec.job_key], stage="postprocess")
    assert not refused.ok and "--stage download" in refused.message
    before = _backend_job_count(local_backend)
    (done,) = retry_jobs(db, keys=[rec.job_key], stage="download")
    assert done.ok and done.new is S.DOWNLOADING
    failing["on"] = False
    stats = manager.run_jobs(None, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 1}
    assert get_job_db(tmp_path / "jobs.db").get(rec.job_key).backend_job_id == rec.backend_job_id
    assert _backend_job_count(local_backend) == before
    assert list((tmp_path / "out").glob(f"{rec.job_key}_*.nc"))


def test_stage_retries_of_jobs_without_results_are_refused(local_backend, tmp_path):
    def no_cube(row, connection, **kwargs):
        raise ValueError("no collection for this row")

    manager = make_manager(tmp_path / "out", max_attempts=1)
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    manager.run_jobs(job_dataframe(2).iloc[:1], no_cube, tmp_path / "jobs.db")
    db = get_job_db(tmp_path / "jobs.db")
    (rec,) = db.jobs()
    assert rec.status is S.START_FAILED
    # start_job's traceback is kept too
    assert "no_cube" in db.history(rec.job_key)[-1].traceback
    (res,) = retry_jobs(db, statuses=None, keys=[rec.job_key], stage="download")
    assert not res.ok and "only a job in error" in res.message
    with pytest.raises(ConfigurationError, match="stage"):
        retry_jobs(db, keys=[rec.job_key], stage="upload")
    with pytest.raises(ConfigurationError, match="start_failed"):
        retry_jobs(db, statuses=[S.START_FAILED], stage="download")
    result = runner.invoke(app, ["retry", str(tmp_path / "jobs.db"), "-k", rec.job_key, "--stage", "download"])
    assert result.exit_code == 1 and "only a job in error" in result.output
    assert get_job_db(tmp_path / "jobs.db").get(rec.job_key).status is S.START_FAILED


def test_a_run_whose_jobs_all_failed_writes_no_catalogue(local_backend, tmp_path):
    def always_fails(job_items, row, parameters):
        raise RuntimeError("broken")

    manager = make_manager(tmp_path / "out", post_job_action=always_fails, max_attempts=1)
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    manager.run_jobs(job_dataframe(2).iloc[:1], create_datacube, tmp_path / "jobs.db")
    with pytest.raises(EmptyCatalogue, match="no finished job stored any item"):
        manager.create_stac()
    assert not (tmp_path / "out" / "stac" / "collection.json").exists()
    result = runner.invoke(app, ["stac", "build", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert not (tmp_path / "out" / "stac" / "collection.json").exists()


def test_an_extraction_without_items_has_no_catalogue(tmp_path):
    with pytest.raises(EmptyCatalogue):
        build_catalogue(tmp_path / "out", "EMPTY", "nothing extracted yet")
    assert not (tmp_path / "out" / "stac").exists()
    with pytest.raises(ConfigurationError, match="collection id"):
        build_catalogue(tmp_path / "elsewhere")
