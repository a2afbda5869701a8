"""get_job_db / create_job_db: type by extension or URL, and the checks on job dataframes."""

from __future__ import annotations

import json

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import Point, box

from eoextract.errors import ConfigurationError, JobDatabaseError
from eoextract.jobs.db import SqlJobDatabase, create_job_db, get_job_db
from eoextract.jobs.db._connection import to_sqlalchemy_url

SUFFIXES = [".db", ".csv", ".parquet"]


def test_type_is_chosen_by_suffix_or_scheme(tmp_path):
    from eoextract.jobs.db import FileJobDatabase

    for name in ("a.db", "a.sqlite", "a.SQLITE3"):
        assert isinstance(get_job_db(tmp_path / name), SqlJobDatabase)
    assert isinstance(get_job_db(f"sqlite:///{tmp_path}/b.db"), SqlJobDatabase)
    for name in ("a.csv", "a.parquet", "a.geoparquet"):
        assert isinstance(get_job_db(tmp_path / name), FileJobDatabase)
    with pytest.raises(ConfigurationError):
        get_job_db(tmp_path / "a.txt")
    assert not list(tmp_path.iterdir())  # nothing created by looking


def test_postgresql_urls_use_psycopg3():
    for url in ("postgresql://u:p@localhost/db", "postgresql+psycopg://u:p@localhost/db",
                "postgres://u:p@localhost/db"):
        assert to_sqlalchemy_url(url).drivername == "postgresql+psycopg"
    assert to_sqlalchemy_url("jobs.db").drivername == "sqlite"


@pytest.fixture(params=SUFFIXES)
def path(request, tmp_path):
    return tmp_path / f"jobs{request.param}"


def test_create_get_skip_append(path):
    db = create_job_db(path, pd.DataFrame({"x": [1, 2]}))
    db.close()
    with pytest.raises(JobDatabaseError, match="already exists"):
        create_job_db(path, pd.DataFrame({"x": [3]}))
    assert len(create_job_db(path, pd.DataFrame({"x": [3]}), on_exists="skip").read()) == 2
    db = create_job_db(path, pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]}, index=[0, 1, 7]),
                       on_exists="append")
    db.close()
    out = get_job_db(path).read()
    assert list(out.index) == ["0", "1", "7"]
    assert out.loc["7", "x"] == 3 and out.loc["7", "y"] == "c"


def test_key_column(path):
    df = pd.DataFrame({"sample": ["a", "b"], "v": [1.0, 2.0]})
    db = create_job_db(path, df, key_column="sample")
    assert db.get("b").row["v"] == 2.0
    assert list(db.read()["sample"]) == ["a", "b"]


@pytest.mark.parametrize("df, match", [
    (pd.DataFrame({"x": [1, 2]}, index=[5, 5]), "duplicate job keys"),
    (pd.DataFrame({"status": ["todo", "done"]}), "reserved"),
    (pd.DataFrame({"attempt": [1.5]}), "reserved"),
    (pd.DataFrame({"attempt": [0.0, 2.0**63]}), "does not fit a 64-bit integer"),
    (pd.DataFrame({"attempt": pd.Series([0, 2**64 - 1], dtype="uint64")}), "does not fit a 64-bit integer"),
    (pd.DataFrame({"attempt": [1.0, float("inf")]}), "not an integer"),
    (pd.DataFrame({"attempt": pd.Series([1, 10**400], dtype=object)}), "does not fit a 64-bit integer"),
    (pd.DataFrame({"start_time": ["yesterday-ish"]}), "reserved"),
    (gpd.GeoDataFrame({"x": [1]}, geometry=[Point(0, 0)]), "no CRS"),
    (pd.DataFrame({"geometry": [Point(0, 0)]}), "without a CRS"),
])
def test_bad_job_dataframes_are_refused_before_writing(path, df, match):
    with pytest.raises(ConfigurationError, match=match):
        create_job_db(path, df)
    assert not path.exists()


def test_job_key_named_as_key_column_survives_reopening(path):
    """``key_column="job_key"`` says what the default already does: the keys are kept."""
    df = pd.DataFrame({"v": [1, 2], "job_key": ["a", "b"]})
    create_job_db(path, df, key_column="job_key").close()
    back = get_job_db(path)
    assert sorted(back.read().index) == ["a", "b"]
    assert back.get("b").row["v"] == 2


def test_duplicate_key_column_is_refused(path):
    with pytest.raises(ConfigurationError, match="duplicate"):
        create_job_db(path, pd.DataFrame({"k": ["a", "a"]}), key_column="k")
    with pytest.raises(ConfigurationError, match="not a column"):
        create_job_db(path, pd.DataFrame({"k": ["a"]}), key_column="nope")


@pytest.mark.parametrize("index", [
    [0.0, float("nan"), 2.0],
    ["a", None, "c"],
    pd.to_datetime(["2024-01-01", None, "2024-01-03"]),
])
def test_missing_index_values_are_refused_naming_their_rows(path, index):
    """``str(nan)`` / ``str(None)`` would make jobs keyed 'nan' / 'None'."""
    df = pd.DataFrame({"x": [1, 2, 3]}, index=index)
    with pytest.raises(ConfigurationError, match=r"1 missing job key\(s\) in the index .* row position\(s\) 1;"):
        create_job_db(path, df)
    assert not path.exists()
    with pytest.raises(ConfigurationError, match=r"column 'k' .* position\(s\) 0, 2;"):
        create_job_db(path, pd.DataFrame({"k": [None, "b", float("nan")]}), key_column="k")


def test_openeo_style_columns_load(path):
    df = pd.DataFrame({
        "title": ["a", "b", "c"],
        "id": [None, "j-1", "j-2"],
        "status": ["not_started", "queued_for_start", "finished"],
        "backend_name": [None, "vito", "vito"],
        "start_time": [None, "2024-03-07T14:32:38Z", "2024-03-07T14:32:40Z"],
        "running_start_time": [None, None, None],
        "cpu": [None, None, "1234 cpu-seconds"],
        "costs": [None, None, 1.5],
    })
    db = create_job_db(path, df)
    assert db.count_by_status() == {"not_started": 1, "queued": 1, "finished": 1}
    rec = db.get("2")
    assert rec.backend_job_id == "j-2" and rec.fields["cpu"] == "1234 cpu-seconds"
    assert rec.fields["start_time"].isoformat() == "2024-03-07T14:32:40+00:00"
    assert rec.row == {"title": "c"}


def test_seed_style_geojson_strings_stay_user_text(path):
    fc = gpd.GeoDataFrame({"sample_id": ["s1"]}, geometry=[box(5, 51, 5.1, 51.1)], crs=4326).to_json()
    df = pd.DataFrame({"backend_name": ["cdse"], "out_prefix": ["S2_10m"], "geometry": [fc]})
    db = create_job_db(path, df)
    out = db.read()
    assert not isinstance(out, gpd.GeoDataFrame)
    assert json.loads(out.loc["0", "geometry"])["type"] == "FeatureCollection"


def test_empty_dataframe_makes_an_empty_database(path):
    db = create_job_db(path, pd.DataFrame({"x": pd.Series([], dtype="int64")}))
    assert db.exists() and len(db.read()) == 0
    db = create_job_db(path, pd.DataFrame({"x": [4]}), on_exists="append")
    assert db.read()["x"].tolist() == [4]


def test_input_published_at_from_user_column(path):
    df = pd.DataFrame({"input_published_at": pd.to_datetime(["2024-05-01T12:00"]), "x": [1]})
    rec = create_job_db(path, df).get("0")
    assert rec.fields["input_published_at"].isoformat() == "2024-05-01T12:00:00+00:00"
    assert rec.fields["output_published_at"] is None


def test_geometry_crs_round_trips(path):
    gdf = gpd.GeoDataFrame({"n": [1, 2]}, geometry=[Point(1, 2), Point(3, 4)], crs=32631)
    create_job_db(path, gdf).close()
    out = get_job_db(path).read()
    assert isinstance(out, gpd.GeoDataFrame) and out.crs.to_epsg() == 32631
    assert out.geometry.iloc[1].equals(Point(3, 4))
    assert out["n"].dtype == "int64"
