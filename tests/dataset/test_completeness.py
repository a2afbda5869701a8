"""The completeness report of a merge: expected samples from the job database, rows
without attributes, thresholds that refuse the merge; the command line."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from typer.testing import CliRunner

from eoextract.cli import app
from eoextract.dataset import expected_samples, merge_points
from eoextract.dataset._partitions import recover
from eoextract.errors import DatasetError, IncompleteDataset
from eoextract.jobs.db import create_job_db


def _feature_collection(ids):
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"sample_id": i}, "geometry": None} for i in ids]})


@pytest.fixture
def job_db(tmp_path):
    """Five jobs of four samples each in a real SQLite job database, samples in the
    geometry cell as GeoJSON (the GFMAP layout); the fixture files hold jobs 0-3 only."""
    df = pd.DataFrame({"geometry": [_feature_collection([f"j{j}-s{i}" for i in range(4)])
                                    for j in range(5)]})
    create_job_db(tmp_path / "jobs.db", df)
    return tmp_path / "jobs.db"


def test_expected_samples_from_the_job_database(job_db):
    ids = expected_samples(job_db)
    assert len(ids) == 20 and ids[0] == "j0-s0" and ids[-1] == "j4-s3"


def test_expected_samples_from_a_column(tmp_path):
    create_job_db(tmp_path / "jobs.db", pd.DataFrame({"sample_id": ["a", "b", "b"]}))
    assert expected_samples(tmp_path / "jobs.db") == ["a", "b"]
    create_job_db(tmp_path / "empty.db", pd.DataFrame({"year": [2020]}))
    with pytest.raises(DatasetError, match="names no 'sample_id'"):
        expected_samples(tmp_path / "empty.db")


def test_report_counts_missing_samples_and_rows_without_attributes(job_files, job_db, tmp_path):
    report = merge_points(tmp_path / "outputs", tmp_path / "ds", partition_by="ref_id",
                          attributes=["label"], expected=job_db, max_missing_fraction=0.25)
    assert report.samples_expected == 20 and report.samples_found == 16
    assert report.missing_count == 4 and report.missing_samples == tuple(f"j4-s{i}" for i in range(4))
    assert report.missing_fraction == 0.2
    assert report.rows_without_attributes == 4 * 3  # every fifth of 12 rows per job
    assert report.to_dict()["duplicates_dropped"] == 0


def test_a_threshold_exceeded_refuses_the_merge_and_writes_nothing(job_files, job_db, tmp_path):
    out = tmp_path / "ds"
    merge_points(job_files[:1], out, partition_by="ref_id")
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(IncompleteDataset, match=r"4 of 20 expected samples missing \(20.0% > 10.0%") as info:
        merge_points(tmp_path / "outputs", out, partition_by="ref_id", expected=job_db,
                     max_missing_fraction=0.1)
    assert info.value.report.missing_count == 4
    with pytest.raises(IncompleteDataset, match="rows without attributes"):
        merge_points(tmp_path / "outputs", out, partition_by="ref_id", attributes=["label"],
                     max_without_attributes_fraction=0.1)
    assert sorted(p.name for p in out.rglob("*")) == before
    assert len(gpd.read_parquet(out)) == 12


def test_a_crashed_swap_is_put_back(job_files, tmp_path):
    out = tmp_path / "ds"
    merge_points(job_files, out, partition_by="ref_id")
    aside = tmp_path / ".ds.replaced-crash"
    aside.mkdir()
    (out / "ref_id=ref0").rename(aside / "ref_id=ref0")  # a crash between the two moves
    assert recover(out) == ["ref_id=ref0"]
    assert not aside.exists() and len(gpd.read_parquet(out)) == 48
    staging = tmp_path / ".ds.staging-crash"  # the same crash, old partitions kept in staging
    staging.mkdir()
    (out / "ref_id=ref1").rename(staging / ".old-ref_id=ref1")
    assert recover(out) == ["ref_id=ref1"]
    assert not staging.exists() and len(gpd.read_parquet(out)) == 48


def test_a_swap_failing_between_its_moves_puts_the_old_partition_back(job_files, tmp_path,
                                                                     monkeypatch):
    import os

    out = tmp_path / "ds"
    merge_points(job_files, out, partition_by="ref_id")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    real_replace = os.replace

    def failing_replace(source, target):
        new_in = ".staging-" in str(source) and not Path(source).name.startswith(".old-")
        if new_in and Path(target) == out / "ref_id=ref1":
            raise OSError("disk gone")  # the new partition never arrives
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        merge_points(job_files, out, partition_by="ref_id")
    monkeypatch.setattr(os, "replace", real_replace)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []


def test_cli_points(job_files, job_db, tmp_path):
    runner = CliRunner()
    args = ["dataset", "points", str(tmp_path / "outputs"), "-o", str(tmp_path / "ds"),
            "--partition-by", "ref_id", "--band", "B02,B03", "--nodata", "0",
            "--attribute", "label", "--expected-from", str(job_db)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 48 rows in 2 partition(s)" in result.output
    assert "expected 20, missing 4 (20.0%)" in result.output
    result = runner.invoke(app, [*args, "--max-missing-fraction", "0.1", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["missing_count"] == 4
    result = runner.invoke(app, [*args[:5], "--partition-by", "tile"])
    assert result.exit_code == 1 and "no file has the partition column 'tile'" in result.output
    result = runner.invoke(app, [*args[:-1], str(tmp_path / "missing.db")])
    assert result.exit_code == 2 and f"error: no job database at {tmp_path / 'missing.db'}" in result.output
    assert not (tmp_path / "missing.db").exists()
    result = runner.invoke(app, [*args[:3], "-o", str(job_db), *args[5:]])
    assert result.exit_code == 2 and f"error: {job_db} is a file; the dataset is a folder" in result.output
    result = runner.invoke(app, [*args, "--parquet-version", "v3"])
    assert result.exit_code == 2 and "parquet_version must be one of v1, v2" in result.output


def test_cli_points_parquet_version_and_compression(tmp_path):
    import pyarrow.parquet as pq

    from .conftest import point_frame

    source = tmp_path / "many.parquet"  # enough distinct band values for v2's delta encoding
    point_frame(0, samples=400, dates=6).to_parquet(source)
    runner = CliRunner()
    args = ["dataset", "points", str(source), "--partition-by", "ref_id", "--band", "B02"]
    written = {}
    for version, compression in (("v1", "zstd"), ("v2", "snappy")):
        out = tmp_path / version
        result = runner.invoke(app, [*args, "-o", str(out), "--parquet-version", version,
                                     "--compression", compression])
        assert result.exit_code == 0, result.output
        meta = pq.read_metadata(next(out.glob("*/*.parquet")))
        column = meta.row_group(0).column(meta.schema.names.index("B02"))
        written[version] = (column.compression, "DELTA_BINARY_PACKED" in column.encodings)
    assert written == {"v1": ("ZSTD", False), "v2": ("SNAPPY", True)}


def test_empty_files_merge_to_nothing_and_miss_every_sample(tmp_path):
    from .conftest import point_frame

    point_frame(0).iloc[:0].to_parquet(tmp_path / "empty.parquet")
    report = merge_points([tmp_path / "empty.parquet"], tmp_path / "ds", partition_by="ref_id",
                          attributes=["label"], expected=["a", "b"])
    assert (report.rows, report.missing_count, report.missing_fraction) == (0, 2, 1.0)
    assert not (tmp_path / "ds").exists()


def test_cli_points_help_names_every_compression():
    from eoextract.dataset._points import COMPRESSIONS

    result = CliRunner().invoke(app, ["dataset", "points", "--help"])
    assert result.exit_code == 0
    # the help wraps at the terminal's width: read it as one line of words
    words = " ".join(result.output.replace("│", " ").split())
    option_help = words[words.index("--compression"):words.index("--parquet-version")]
    assert all(name in option_help for name in COMPRESSIONS), option_help
