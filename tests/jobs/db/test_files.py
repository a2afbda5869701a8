"""FileJobDatabase: openeo interoperability both ways, atomic batched saves, history, dtypes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openeo.extra.job_management import CsvJobDatabase, ParquetJobDatabase
from shapely.geometry import Point, box

from eoextract.errors import InvalidTransition, JobDatabaseError
from eoextract.jobs.db import FileJobDatabase, create_job_db, get_job_db
from eoextract.jobs.status import JobStatus

S = JobStatus
NOW = datetime(2025, 1, 1, tzinfo=UTC)
OPENEO = {".csv": CsvJobDatabase, ".parquet": ParquetJobDatabase}


@pytest.fixture(params=[".csv", ".parquet"])
def suffix(request):
    return request.param


def _gdf(n=4):
    return gpd.GeoDataFrame(
        {"name": [f"f{i}" for i in range(n)], "year": np.arange(2020, 2020 + n)},
        geometry=[box(5 + i, 51, 5.1 + i, 51.1) for i in range(n)], crs=4326)


def test_reads_files_written_by_openeo(tmp_path, suffix):
    path = tmp_path / f"openeo{suffix}"
    odb = OPENEO[suffix](path).initialize_from_df(_gdf())
    # what openeo's manager writes while running
    df = odb.read()
    df.loc[1, ["status", "id", "backend_name", "start_time"]] = [
        "queued_for_start", "j-1", "vito", "2024-03-07T14:32:38Z"]
    df.loc[2, ["status", "id", "backend_name", "start_time"]] = [
        "finished", "j-2", "vito", "2024-03-07T14:32:40Z"]
    df["cpu"] = [None, None, "1234 cpu-seconds", None]
    odb.persist(df)

    db = get_job_db(path)
    assert isinstance(db, FileJobDatabase)
    out = db.read()
    assert list(out.index) == ["0", "1", "2", "3"]
    assert list(out["status"]) == ["not_started", "queued", "finished", "not_started"]
    assert out.loc["2", "cpu"] == "1234 cpu-seconds" and out.loc["1", "id"] == "j-1"
    assert out.loc["2", "start_time"] == pd.Timestamp("2024-03-07T14:32:40Z")
    assert isinstance(out, gpd.GeoDataFrame) and out.crs.to_epsg() == 4326
    assert out.geometry.iloc[3].equals_exact(box(8, 51, 8.1, 51.1), 1e-9)
    assert list(out["name"]) == ["f0", "f1", "f2", "f3"]


def test_openeo_reads_our_files(tmp_path, suffix):
    path = tmp_path / f"ours{suffix}"
    db = create_job_db(path, _gdf())
    db.transition("0", S.CREATING)
    db.transition("1", S.CREATING)
    db.transition("1", S.RUNNING, id="j-1", backend_name="vito", start_time=NOW)
    db.transition("1", S.DOWNLOADING)
    db.transition("2", S.SKIPPED)
    db.close()

    odb = OPENEO[suffix](path)
    df = odb.read()
    assert list(df["status"]) == ["not_started", "running", "skipped", "not_started"]
    assert df.loc[1, "id"] == "j-1" and df.loc[1, "start_time"] == "2025-01-01T00:00:00Z"
    assert len(odb.get_by_status(["not_started"])) == 2
    assert isinstance(df, gpd.GeoDataFrame)
    assert df.geometry.iloc[0].equals_exact(box(5, 51, 5.1, 51.1), 1e-9)

    # our manager reads back exact statuses
    back = FileJobDatabase(path).read()
    assert list(back["status"]) == ["creating", "downloading", "skipped", "not_started"]
    assert back.crs.to_epsg() == 4326 and back["year"].dtype == np.int64

    # openeo's manager moves a job on: its `status` wins over our stale exact one
    df.loc[1, "status"] = "finished"
    df.loc[3, "status"] = "queued"
    odb.persist(df)
    back = FileJobDatabase(path).read()
    assert list(back["status"]) == ["creating", "finished", "skipped", "queued"]


def test_crs_other_than_wgs84_survives(tmp_path, suffix):
    gdf = gpd.GeoDataFrame({"n": [1]}, geometry=[Point(500000.123456, 5600000.5)], crs=32631)
    create_job_db(tmp_path / f"utm{suffix}", gdf).close()
    out = get_job_db(tmp_path / f"utm{suffix}").read()
    assert out.crs.to_epsg() == 32631
    assert out.geometry.iloc[0].equals_exact(Point(500000.123456, 5600000.5), 1e-6)


def test_appending_rows_to_an_openeo_file(tmp_path, suffix):
    path = tmp_path / f"openeo{suffix}"
    OPENEO[suffix](path).initialize_from_df(_gdf(2))
    more = _gdf(4)
    db = create_job_db(path, more, on_exists="append")
    assert list(db.read().index) == ["0", "1", "2", "3"]
    db.close()
    assert len(OPENEO[suffix](path).read()) == 4
    assert list(FileJobDatabase(path).read()["name"]) == ["f0", "f1", "f2", "f3"]


def test_saves_are_batched_and_flushed(tmp_path, suffix):
    path = tmp_path / f"jobs{suffix}"
    create_job_db(path, _gdf()).close()
    before = path.read_bytes()
    db = FileJobDatabase(path, flush_interval=3600)
    db.transition("0", S.CREATING)
    db.update("0", create_tag="x")
    assert path.read_bytes() == before
    assert db.history("0")[-1].new is S.CREATING  # pending history is visible
    db.flush()
    assert FileJobDatabase(path).get("0").status is S.CREATING
    db.transition("0", S.CREATED)
    db.close()
    assert FileJobDatabase(path).get("0").status is S.CREATED

    eager = FileJobDatabase(path, flush_interval=0)
    eager.transition("1", S.CREATING)
    assert FileJobDatabase(path).get("1").status is S.CREATING


def test_crash_while_writing_leaves_the_old_file(tmp_path, suffix, monkeypatch):
    path = tmp_path / f"jobs{suffix}"
    create_job_db(path, _gdf()).close()
    before = path.read_bytes()
    method = "to_csv" if suffix == ".csv" else "to_parquet"
    original = getattr(gpd.GeoDataFrame, method)

    def half_written(self, target, *args, **kwargs):
        with open(target, "wb") as fh:
            fh.write(b"id,status\nhalf")
        raise OSError("disk full")

    db = FileJobDatabase(path, flush_interval=3600)
    db.transition("0", S.CREATING)
    monkeypatch.setattr(gpd.GeoDataFrame, method, half_written)
    monkeypatch.setattr(pd.DataFrame, method, half_written)
    with pytest.raises(OSError, match="disk full"):
        db.flush()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, f"{path.name}.meta.json", f"{path.name}.history.csv", f"{path.name}.state.csv"])
    monkeypatch.setattr(gpd.GeoDataFrame, method, original)
    monkeypatch.undo()
    db.flush()
    assert FileJobDatabase(path).get("0").status is S.CREATING


def test_history_sidecar_is_append_only(tmp_path):
    path = tmp_path / "jobs.csv"
    db = create_job_db(path, pd.DataFrame({"x": [1, 2]}))
    first = (tmp_path / "jobs.csv.history.csv").read_text()
    db.transition("0", S.CREATING, manager_id="m", message="go")
    db.transition("0", S.CREATED, id="j-0")
    db.flush()
    text = (tmp_path / "jobs.csv.history.csv").read_text()
    assert text.startswith(first) and len(text.splitlines()) == 5
    hist = FileJobDatabase(path).history("0")
    assert [(h.old, h.new) for h in hist] == [
        (None, S.NOT_STARTED), (S.NOT_STARTED, S.CREATING), (S.CREATING, S.CREATED)]
    assert hist[1].manager_id == "m" and hist[2].backend_job_id == "j-0"


def test_transitions_and_claims_in_process(tmp_path):
    db = create_job_db(tmp_path / "jobs.parquet", pd.DataFrame({"x": range(4)}))
    with pytest.raises(InvalidTransition):
        db.transition("0", S.FINISHED)
    with pytest.raises(InvalidTransition):
        db.transition("0", S.CREATING, expect=S.CREATED)
    db.update("0", next_attempt_at=NOW + timedelta(minutes=1))
    assert [r.job_key for r in db.claim(2, manager_id="a", now=NOW, lease_seconds=60)] == ["1", "2"]
    assert [r.job_key for r in db.claim(5, manager_id="b", now=NOW)] == ["3"]
    later = NOW + timedelta(minutes=2)
    # never-tried jobs first (in order), then due retries; b keeps its own claim on "3"
    assert [r.job_key for r in db.claim(5, manager_id="b", now=later)] == ["1", "2", "3", "0"]
    db.register_backend("vito", "https://u:p@vito.test/openeo")
    db.close()
    again = FileJobDatabase(tmp_path / "jobs.parquet")
    assert again.backends() == {"vito": "https://vito.test/openeo"}
    assert again.get("1").fields["claimed_by"] == "b"


def test_seed_style_csv_as_live_database(tmp_path):
    fc = gpd.GeoDataFrame({"sample_id": ["s1"]}, geometry=[box(5, 51, 5.1, 51.1)], crs=4326).to_json()
    df = pd.DataFrame({"backend_name": ["cdse"], "out_prefix": ["S2_10m"], "start_date": ["2020-01-01"],
                       "geometry": [fc]})
    db = create_job_db(tmp_path / "job_tracker.csv", df)
    db.transition("0", S.CREATING, backend_name="cdse-staging")
    db.close()
    out = FileJobDatabase(tmp_path / "job_tracker.csv").read()
    assert out.loc["0", "geometry"] == fc and out.loc["0", "status"] == "creating"
    assert len(CsvJobDatabase(tmp_path / "job_tracker.csv").read()) == 1


def test_missing_folder_and_unknown_file(tmp_path):
    with pytest.raises(JobDatabaseError, match="does not exist"):
        FileJobDatabase(tmp_path / "nope" / "jobs.csv")
    with pytest.raises(JobDatabaseError):
        FileJobDatabase(tmp_path / "jobs.csv").read()


_row = st.fixed_dictionaries({
    "i": st.integers(-2**62, 2**62),
    "f": st.floats(allow_nan=True, allow_infinity=True),
    "b": st.booleans(),
    "s": st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]),
                 min_size=1, max_size=8),
    "t": st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 1, 1)),
    "x": st.floats(-1e6, 1e6),
})


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_row, min_size=1, max_size=5))
def test_dtype_round_trip_property(tmp_path_factory, rows):
    df = gpd.GeoDataFrame(
        {"i": pd.Series([r["i"] for r in rows], dtype="int64"),
         "f": pd.Series([r["f"] for r in rows], dtype="float64"),
         "b": pd.Series([r["b"] for r in rows], dtype="bool"),
         "s": pd.Series([r["s"] for r in rows], dtype=object),
         "t": pd.Series([r["t"] for r in rows], dtype="datetime64[ns]")},
        geometry=[Point(r["x"], -r["x"]) for r in rows], crs=3035)
    folder = tmp_path_factory.mktemp("rt")
    for suffix in (".csv", ".parquet"):
        create_job_db(folder / f"j{suffix}", df).close()
        out = FileJobDatabase(folder / f"j{suffix}").read()
        expected = df.set_axis(df.index.astype(str).rename("job_key"))
        pd.testing.assert_frame_equal(pd.DataFrame(out[["i", "f", "b", "s", "t"]]),
                                      pd.DataFrame(expected[["i", "f", "b", "s", "t"]]),
                                      check_index_type=False)
        assert out.crs.to_epsg() == 3035
        assert all(a.equals_exact(b, 1e-6) for a, b in zip(out.geometry, df.geometry, strict=True))


def test_file_of_another_kind_is_refused_clearly(tmp_path):
    path = tmp_path / "other.csv"
    pd.DataFrame({"status": ["paid", "open"], "amount": [3, 4]}).to_csv(path, index=False)
    with pytest.raises(JobDatabaseError, match="cannot be read as a job database"):
        FileJobDatabase(path).read()
