"""Patch to point: values sampled from real NetCDF patches of a catalogue."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import netCDF4
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from eoextract.dataset import patches_to_points
from eoextract.errors import DatasetError
from tests.dataset.patch_catalogue import BANDS, make_extraction


@pytest.fixture
def extraction(tmp_path: Path) -> Path:
    make_extraction(tmp_path / "ex", per_zone=2)
    return tmp_path / "ex"


def _patch(extraction: Path, sample_id: str) -> Path:
    return next(extraction.rglob(f"S2_{sample_id}.nc"))


def _raw(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, int]:
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        wkt = nc.variables["crs"].crs_wkt
        from pyproj import CRS
        return ({b: np.asarray(nc.variables[b][...]) for b in BANDS},
                np.asarray(nc.variables["x"][...]), np.asarray(nc.variables["y"][...]),
                CRS.from_wkt(wkt).to_epsg())


def _block(path: Path, sample_id: str, rows: slice, cols: slice) -> gpd.GeoDataFrame:
    """A sample polygon covering exactly the pixels ``rows, cols`` of a patch, in WGS84."""
    _, x, y, epsg = _raw(path)
    box = shapely.box(x[cols.start] - 5, y[rows.stop - 1] - 5, x[cols.stop - 1] + 5, y[rows.start] + 5)
    box = shapely.buffer(box, -2)  # well inside the block's outer pixels, beyond the others' centres
    t = Transformer.from_crs(epsg, 4326, always_xy=True)
    geom = shapely.transform(box, lambda c: np.column_stack(t.transform(c[:, 0], c[:, 1])))
    return gpd.GeoDataFrame({"sample_id": [sample_id]}, geometry=[geom], crs=4326)


def test_centre_is_the_centre_pixel(extraction: Path, tmp_path: Path) -> None:
    result = patches_to_points(extraction, tmp_path / "centre.parquet", how="centre",
                               labels=("croptype", "LABEL", "ref_id"), processes=1)
    table = gpd.read_parquet(result.path)
    assert result.patches == 4 and result.rows == 4 * 3 == len(table)
    assert table.crs == "OGC:CRS84"
    rows = table[table.sample_id == "sample-001"].sort_values("time")
    data, x, y, _ = _raw(_patch(extraction, "sample-001"))
    # an 8x8 footprint's centroid is where the four middle pixels meet: one of them is sampled
    middle = [(r, c) for r in (3, 4) for c in (3, 4)
              if all(rows[b].tolist() == data[b][:, r, c].tolist() for b in BANDS)]
    assert len(middle) == 1
    assert set(rows.croptype) == {"maize"} and set(rows.LABEL) == {2} and set(rows.ref_id) == {"2021_TEST"}
    assert rows.time.tolist() == list(pd.date_range("2021-03-01", periods=3, freq="5D", tz="UTC"))


def test_centre_of_given_points(extraction: Path, tmp_path: Path) -> None:
    path = _patch(extraction, "sample-003")
    data, x, y, epsg = _raw(path)
    t = Transformer.from_crs(epsg, 4326, always_xy=True)
    picks = [(1, 6), (7, 0), (5, 5)]
    lon, lat = t.transform([x[c] + 2 for _, c in picks], [y[r] - 3 for r, _ in picks])
    samples = gpd.GeoDataFrame({"sample_id": ["sample-003"] * 3},
                               geometry=shapely.points(lon, lat), crs=4326)
    table = pd.read_parquet(patches_to_points(extraction, tmp_path / "p.parquet", samples=samples,
                                              processes=1).path)
    assert len(table) == 3 * 3
    for band in BANDS:
        assert table[band].tolist() == [v for r, c in picks for v in data[band][:, r, c].tolist()]


def test_mean_and_all_over_a_polygon(extraction: Path, tmp_path: Path) -> None:
    path = _patch(extraction, "sample-002")
    samples = _block(path, "sample-002", slice(2, 5), slice(1, 4))
    data, x, y, epsg = _raw(path)
    mean = pd.read_parquet(patches_to_points(extraction, tmp_path / "m.parquet", how="mean",
                                             samples=samples, processes=1).path)
    assert mean.sample_id.unique().tolist() == ["sample-002"] and len(mean) == 3
    for band in BANDS:
        np.testing.assert_allclose(mean[band], data[band][:, 2:5, 1:4].mean(axis=(1, 2)))
    every = pd.read_parquet(patches_to_points(extraction, tmp_path / "a.parquet", how="all",
                                              samples=samples, processes=1).path)
    assert len(every) == 3 * 3 * 3  # dates x pixels inside
    assert sorted(set(every.x)) == sorted(x[1:4]) and sorted(set(every.y)) == sorted(y[2:5])
    assert set(every.epsg) == {epsg}
    first = every[every.time == every.time.min()]
    expected = {(xx, yy): data["B03"][0, r, c] for r, yy in enumerate(y) for c, xx in enumerate(x)}
    assert all(v == expected[(xx, yy)] for xx, yy, v in zip(first.x, first.y, first.B03))


def test_a_sample_outside_its_patch_warns_and_is_skipped(extraction: Path, tmp_path: Path) -> None:
    inside = _block(_patch(extraction, "sample-000"), "sample-000", slice(0, 2), slice(0, 2))
    outside = gpd.GeoDataFrame({"sample_id": ["sample-001"]}, geometry=[shapely.Point(0.0, 0.0)], crs=4326)
    with pytest.warns(UserWarning, match="sample 'sample-001' lies outside"):
        result = patches_to_points(extraction, tmp_path / "o.parquet", how="centre",
                                   samples=pd.concat([inside, outside]), processes=1)
    assert result.skipped == 1 and set(pd.read_parquet(result.path).sample_id) == {"sample-000"}


def test_a_patch_in_another_crs_than_its_item_is_refused(extraction: Path, tmp_path: Path) -> None:
    from tests.dataset.patch_catalogue import write_patch
    path = _patch(extraction, "sample-000")
    write_patch(path, 32632, 9.5, 50.8)  # the item says EPSG:32631
    with pytest.raises(DatasetError, match=r"S2_sample-000\.nc is in EPSG:32632 but its item"):
        patches_to_points(extraction, tmp_path / "x.parquet", processes=1)
    assert not (tmp_path / "x.parquet").exists()


def test_process_pool_gives_the_same_table(extraction: Path, tmp_path: Path) -> None:
    one = pd.read_parquet(patches_to_points(extraction, tmp_path / "1.parquet", how="all",
                                            labels=("LABEL",), processes=1).path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two = pd.read_parquet(patches_to_points(extraction, tmp_path / "2.parquet", how="all",
                                                labels=("LABEL",), processes=2).path)
    pd.testing.assert_frame_equal(one, two)
    assert len(one) == 4 * 64 * 3


def test_cli_writes_the_table(extraction: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from eoextract.cli import app

    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(app, ["dataset", "patches-to-points", str(extraction), "-o", str(out),
                                      "--how", "mean", "--label", "croptype", "--processes", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 12 rows from 4 patch(es)" in result.output
    assert set(pd.read_parquet(out).croptype) == {"wheat", "maize", "barley"}
    assert "empty in every row" not in result.output
    result = CliRunner().invoke(app, ["dataset", "patches-to-points", str(extraction), "-o", str(out),
                                      "--label", "croptype,no_such_label", "--processes", "1"])
    assert result.exit_code == 0, result.output
    assert "label(s) no_such_label empty in every row" in result.output
    assert "UserWarning" not in result.output  # said once, plainly


def test_a_label_no_item_holds_is_warned_about(extraction: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"label\(s\) 'typo_label' empty in every row"):
        result = patches_to_points(extraction, tmp_path / "w.parquet", labels=("croptype", "typo_label"),
                                   processes=1)
    assert result.empty_labels == ("typo_label",)
    table = pd.read_parquet(result.path)
    assert table.typo_label.isna().all() and table.croptype.notna().all()


def test_an_unreadable_patch_is_named_from_a_worker(extraction: Path, tmp_path: Path) -> None:
    _patch(extraction, "sample-002").write_bytes(b"not a netcdf file")
    with pytest.raises(DatasetError, match=r"S2_sample-002\.nc.*item") as err:
        patches_to_points(extraction, tmp_path / "u.parquet", processes=2)
    assert err.value.path and err.value.path.endswith("S2_sample-002.nc")
    assert not (tmp_path / "u.parquet").exists()
    assert not list(tmp_path.glob(".u.parquet*"))


def test_an_unguarded_script_with_workers_gets_told_what_to_do(extraction: Path, tmp_path: Path) -> None:
    """Spawned workers import the calling script again: one without a __main__ guard fails
    with a message saying so, not only "terminated abruptly"."""
    import os
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("from eoextract.dataset import patches_to_points\n"
                      f"patches_to_points({str(extraction)!r}, 'out.parquet', processes=2)\n")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0
    raised = [ln for ln in run.stderr.splitlines() if ln.startswith("eoextract.errors.DatasetError: ")]
    assert len(raised) == 1, run.stderr[-3000:]  # (a resource_tracker warning may follow it)
    assert raised[0].startswith("eoextract.errors.DatasetError: a worker process ended abruptly")
    assert 'if __name__ == "__main__":' in raised[0] and "processes=1" in raised[0]
    assert not (tmp_path / "out.parquet").exists()


def test_labels_from_the_job_database(extraction: Path, tmp_path: Path) -> None:
    from eoextract.jobs import create_job_db

    db = tmp_path / "jobs.db"
    create_job_db(db, pd.DataFrame({"region": ["be", "de"], "croptype": ["x", "y"]}))
    table = pd.read_parquet(patches_to_points(extraction, tmp_path / "j.parquet", job_db=db,
                                              labels=("region", "croptype"), processes=1).path)
    by_sample = table.groupby("sample_id").first()
    assert by_sample.region.tolist() == ["be", "be", "de", "de"]
    assert by_sample.croptype.tolist() == ["wheat", "maize", "barley", "wheat"]  # item first
