"""Quality gates: a finished job whose results fail a check gets a classified failure, and
none of its items reaches the catalogue."""

from __future__ import annotations

import json

import pytest

from eoextract.backend import LocalBackend
from eoextract.errors import QualityCheckFailed
from eoextract.jobs import ArrayCheck, ExpectedAssets, JobManager, JobOutput, UsageAtMost
from eoextract.jobs._quality import run_checks
from eoextract.jobs.db import get_job_db
from eoextract.stac import iter_catalog_items

from tests.extract.test_extraction_manager import create_datacube, job_dataframe, make_manager
from tests.jobs.conftest import make_start_job


def _statuses(db_path):
    db = get_job_db(db_path)
    try:
        return {r.job_key: (str(r.status), r.fields.get("error_class")) for r in db.jobs()}
    finally:
        db.close()


def test_asset_count_per_extracted_feature_passes_and_a_wrong_count_fails(local_backend, tmp_path):
    good = make_manager(tmp_path / "good", quality_checks=[ExpectedAssets(per_feature=True)])
    good.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = good.run_jobs(job_dataframe(2), create_datacube, tmp_path / "good.db")
    assert stats["status_counts"] == {"finished": 2}

    bad = make_manager(tmp_path / "bad", quality_checks=[ExpectedAssets(count=99)], max_attempts=1)
    bad.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = bad.run_jobs(job_dataframe(2), create_datacube, tmp_path / "bad.db")
    assert stats["status_counts"] == {"error": 2}
    for status, error_class in _statuses(tmp_path / "bad.db").values():
        assert (status, error_class) == ("error", "QualityCheck.ExpectedAssets")
    message = get_job_db(tmp_path / "bad.db").jobs()[0].fields["error_message"]
    assert "quality check ExpectedAssets failed" in message and "99 expected" in message
    assert not list((tmp_path / "bad" / ".eoextract").rglob("*items*.json*"))  # no item stored


def test_soft_errors_over_the_threshold_fail_only_that_job(tmp_path):
    df = job_dataframe(2)
    df["job_options"] = [json.dumps({"eoextract_soft_error_fraction": 0.5}),
                         json.dumps({"eoextract_soft_error_fraction": 0.0})]
    with LocalBackend(profile="cdse", workers=2) as backend:
        manager = make_manager(tmp_path / "out", quality_checks=[UsageAtMost("soft_errors", 0.3)])
        manager.add_backend("local", backend.connect, parallel_jobs=2)
        manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    outcome = _statuses(tmp_path / "jobs.db")
    assert sorted(outcome.values()) == [("error", "QualityCheck.UsageAtMost"), ("finished", None)]
    from eoextract.extract import build_catalogue

    root = build_catalogue(tmp_path / "out", collection_id="TEST-S2", description="d", validate=False)
    good_key = next(k for k, v in outcome.items() if v[0] == "finished")
    jobs = {item["properties"].get("eoextract:job_key") for item in iter_catalog_items(root)}
    assert jobs == {good_key}  # no item of the failing job


def test_array_checks_on_the_generic_manager_and_retry(local_backend, tmp_path):
    manager = JobManager(poll_sleep=0.1, retry_backoff=0.05, root_dir=tmp_path / "out", max_attempts=2,
                         quality_checks=[ArrayCheck(dims=("t", "y", "x"), max_nodata=1.0, retry=True)])
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    df = __import__("pandas").DataFrame({"title": ["q-a", "q-b"]})
    stats = manager.run_jobs(df, make_start_job(), job_db=tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 2}

    strict = JobManager(poll_sleep=0.1, retry_backoff=0.05, root_dir=tmp_path / "out2", max_attempts=2,
                        quality_checks=[ArrayCheck(sizes={"t": 999}, retry=True)])
    strict.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = strict.run_jobs(df.assign(title=["q-c", "q-d"]), make_start_job(), job_db=tmp_path / "jobs2.db")
    assert stats["status_counts"] == {"error": 2}
    assert stats["start_job call"] == 4  # retry=True: each job ran again once, then failed
    assert {v for v in _statuses(tmp_path / "jobs2.db").values()} == {("error", "QualityCheck.ArrayCheck")}


def test_checks_on_files(tmp_path):
    import numpy as np
    import xarray as xr

    path = tmp_path / "patch.nc"
    data = np.full((2, 4, 4), np.nan, dtype="float32")
    data[0] = 1.0
    xr.Dataset({"B04": (("t", "y", "x"), data)}).to_netcdf(path)
    out = JobOutput("k", {"usage": json.dumps({"soft_errors": {"value": 0.1, "unit": "fraction"}})}, [path])
    run_checks([ArrayCheck(dims=("t", "y", "x"), sizes={"x": 4}, max_nodata=0.5), UsageAtMost()], out)
    with pytest.raises(QualityCheckFailed, match="75%|50% nodata"):
        run_checks([ArrayCheck(max_nodata=0.25)], out)
    with pytest.raises(QualityCheckFailed, match="dims"):
        run_checks([ArrayCheck(dims=("y", "x", "band"))], out)
    (tmp_path / "broken.nc").write_bytes(b"not a netcdf")
    with pytest.raises(QualityCheckFailed, match="does not open"):
        run_checks([ArrayCheck()], JobOutput("k", {}, [tmp_path / "broken.nc"]))
    with pytest.raises(QualityCheckFailed, match="usage soft_errors is 0.1, above 0.05"):
        run_checks([UsageAtMost("soft_errors", 0.05)], out)


def _with_sample_ids(job_items, row, parameters):
    """The test's post-job action, and each item's ``sample_id`` (its data file's folder)."""
    from pathlib import Path

    from tests.extract.test_extraction_manager import post_job_action

    items = post_job_action(job_items, row, parameters)
    for item in items:
        data = next(a for a in item.assets.values() if "LABEL_" not in a.href)
        item.properties["sample_id"] = Path(data.href).parent.name
    return items


def test_skip_existing_extracts_only_new_samples(local_backend, tmp_path):
    """A second run over more samples: those in the first run's catalogue are not extracted again."""
    first = make_manager(tmp_path / "first", post_job_action=_with_sample_ids)
    first.add_backend("local", local_backend.connect, parallel_jobs=2)
    first.run_jobs(job_dataframe(2), create_datacube, tmp_path / "first.db")
    first.create_stac()
    done = {item["properties"]["sample_id"] for item in iter_catalog_items(tmp_path / "first" / "stac")
            if "sample_id" in item["properties"]}
    assert done

    more = job_dataframe(3)  # the same samples and one more per job
    second = make_manager(tmp_path / "second", post_job_action=_with_sample_ids)
    second.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = second.run_jobs(more, create_datacube, tmp_path / "second.db",
                            skip_existing=(tmp_path / "first", "sample_id"))
    assert stats["status_counts"] == {"finished": 2}
    second.create_stac()
    new = {item["properties"]["sample_id"] for item in iter_catalog_items(tmp_path / "second" / "stac")
           if "sample_id" in item["properties"]}
    assert new and not new & done  # nothing extracted twice
