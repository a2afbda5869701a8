"""Hostile inputs, fuzzed: job dataframes, GeoJSON, asset names, results documents, CSV edits.

Each input either works as documented or fails with the library's own error for that input
(``ConfigurationError``, ``JobDatabaseError``, ``DownloadError``, ``UnsafeAssetPath``) —
never with another exception, never silently wrong. Example counts grow with
``EOEXTRACT_CHAOS_SCALE=full``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import string
import tempfile
import warnings
from datetime import datetime
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from chaos_callbacks import scaled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eoextract._util.checksum import parse_checksum
from eoextract.errors import ConfigurationError, DownloadError, JobDatabaseError, UnsafeAssetPath
from eoextract.jobs.db import create_job_db, get_job_db
from eoextract.jobs._download import parse_job_results, place_file, safe_relative_path
from eoextract.jobs.status import JobStatus
from eoextract.split import split_job_hex, split_job_s2grid

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=scaled(60, 1000), deadline=None, derandomize=os.environ.get("CI") is not None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])

any_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
names = st.one_of(any_text, st.sampled_from(["status", "id", "job_key", "geometry", "backend_name", "attempt",
                                             "title", "", " ", "index", "level_0", "a b", "é", "1"]))


# --------------------------------------------------------------------------- job dataframes


@st.composite
def columns(draw: st.DrawFn, n: int) -> pd.Series:
    kind = draw(st.sampled_from(["int", "float", "bool", "text", "mixed", "datetime", "tzdatetime", "none",
                                 "category", "bytes", "list", "nullable_int"]))
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)), dtype="int64")
    if kind == "nullable_int":
        return pd.Series(draw(st.lists(st.one_of(st.none(), st.integers(-10, 10)), min_size=n, max_size=n)),
                         dtype="Int64")
    if kind == "float":
        return pd.Series(draw(st.lists(st.floats(), min_size=n, max_size=n)), dtype="float64")
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype="bool")
    if kind == "text":
        return pd.Series(draw(st.lists(any_text, min_size=n, max_size=n)), dtype=object)
    times = st.lists(st.datetimes(datetime(1700, 1, 1), datetime(2200, 1, 1)), min_size=n, max_size=n)
    if kind == "datetime":
        return pd.Series(pd.to_datetime(draw(times)))
    if kind == "tzdatetime":
        return pd.Series(pd.to_datetime(draw(times))).dt.tz_localize(
            "Europe/Brussels", ambiguous="NaT", nonexistent="NaT")
    if kind == "none":
        return pd.Series([None] * n, dtype=object)
    if kind == "category":
        return pd.Series(draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n)), dtype="category")
    if kind == "bytes":
        return pd.Series(draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n)), dtype=object)
    if kind == "list":
        return pd.Series(draw(st.lists(st.lists(st.integers(0, 3), max_size=2), min_size=n, max_size=n)), dtype=object)
    values = st.one_of(st.none(), st.integers(-5, 5), st.floats(), any_text, st.booleans())
    return pd.Series(draw(st.lists(values, min_size=n, max_size=n)), dtype=object)


@st.composite
def job_frames(draw: st.DrawFn) -> tuple[pd.DataFrame, str | None]:
    n = draw(st.integers(0, 6))
    cols = draw(st.lists(names, max_size=5))
    frame = pd.DataFrame({f"c{i}": draw(columns(n)) for i in range(len(cols))})
    frame.columns = cols  # may repeat names
    index_kind = draw(st.sampled_from(["range", "text", "dupes", "nan", "mixed", "key_column"]))
    key_column = None
    if index_kind == "text":
        frame.index = draw(st.lists(any_text, min_size=n, max_size=n))
    elif index_kind == "dupes" and n:
        frame.index = ["k"] * n
    elif index_kind == "nan" and n:
        frame.index = [np.nan] + list(range(1, n))
    elif index_kind == "mixed":
        frame.index = [i if i % 2 else str(i) for i in range(n)]
    elif index_kind == "key_column" and len(set(cols)) == len(cols) and cols:
        key_column = draw(st.sampled_from(cols))
    return frame, key_column


@FUZZ
@given(case=job_frames(), suffix=st.sampled_from([".db", ".csv", ".parquet"]))
def test_any_job_dataframe_is_stored_faithfully_or_refused_clearly(case, suffix):
    frame, key_column = case
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / f"jobs{suffix}"
        try:
            db = create_job_db(path, frame, key_column=key_column)
        except (ConfigurationError, JobDatabaseError):
            assert not path.exists() or suffix == ".db"  # checked before the file is written
            return
        if key_column is None and "job_key" in frame.columns:
            key_column = "job_key"  # documented: a job_key column gives the keys
        keys = [str(k.item() if isinstance(k, np.generic) else k)
                for k in (frame[key_column] if key_column is not None else frame.index)]
        back = get_job_db(path)
        stored = back.read()
        assert sorted(map(str, stored.index)) == sorted(keys)
        assert set(stored["status"]) <= {"not_started"}
        assert {r.job_key for r in back.jobs()} == set(keys)
        assert back.count_by_status() == ({"not_started": len(keys)} if keys else {})
        for name in {c for c in frame.columns if c != key_column}:
            assert name in stored.columns or name in ("status", "id"), (name, list(stored.columns))
        db.close()
        back.close()


# --------------------------------------------------------------------------- GeoJSON to the splitters

coordinates = st.one_of(st.floats(-200, 200), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([-180.0, 180.0, 90.0, -90.0, 1e300, -0.0]))
positions = st.lists(coordinates, min_size=2, max_size=3)


@st.composite
def geojson_geometries(draw: st.DrawFn, depth: int = 0) -> dict | None:
    kind = draw(st.sampled_from(["Point", "MultiPoint", "LineString", "Polygon", "MultiPolygon",
                                 "GeometryCollection", "empty", "none"]))
    if kind == "none":
        return None
    if kind == "empty":
        return {"type": draw(st.sampled_from(["Point", "Polygon", "GeometryCollection"])),
                "coordinates": []} | ({"geometries": []} if True else {})
    if kind == "Point":
        return {"type": "Point", "coordinates": draw(positions)}
    if kind in ("MultiPoint", "LineString"):
        return {"type": kind, "coordinates": draw(st.lists(positions, min_size=2, max_size=6))}
    if kind == "Polygon":
        ring = draw(st.lists(positions, min_size=3, max_size=8))
        return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}  # may self-intersect
    if kind == "MultiPolygon":
        rings = draw(st.lists(st.lists(positions, min_size=3, max_size=5), min_size=1, max_size=3))
        return {"type": "MultiPolygon", "coordinates": [[r + [r[0]]] for r in rings]}
    parts = [draw(geojson_geometries(depth + 1)) for _ in range(draw(st.integers(0, 2)))] if depth < 2 else []
    return {"type": "GeometryCollection", "geometries": [p for p in parts if p is not None]}


def to_shape(geometry: dict | None):
    if geometry is None:
        return None
    try:
        return shapely.from_geojson(json.dumps(geometry))
    except (shapely.errors.GEOSException, ValueError):
        return None  # not even shapely reads it: a missing geometry for the splitters


@FUZZ
@given(geoms=st.lists(geojson_geometries(), max_size=25), max_points=st.integers(1, 7),
       crs=st.sampled_from([4326, 3857, 32631, 3035]), resolution=st.integers(0, 8))
def test_splitters_partition_any_geojson(geoms, max_points, crs, resolution):
    shapes = [to_shape(g) for g in geoms]
    gdf = gpd.GeoDataFrame({"n": range(len(shapes))}, geometry=gpd.GeoSeries(shapes, dtype="geometry"), crs=crs)
    gdf.index = [f"s{i}" for i in range(len(gdf))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for parts in (split_job_hex(gdf, max_points=max_points, grid_resolution=resolution),
                      split_job_s2grid(gdf, max_points=max_points)):
            labels = [label for p in parts for label in p.index]
            assert sorted(labels) == sorted(gdf.index)  # every row exactly once
            assert all(0 < len(p) <= max_points for p in parts)
            assert all(p.crs == gdf.crs for p in parts)


def test_splitters_refuse_what_they_cannot_place():
    with pytest.raises(ConfigurationError):
        split_job_hex(gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)]))  # no CRS
    with pytest.raises(ConfigurationError):
        split_job_s2grid(gpd.GeoDataFrame(geometry=[shapely.Point(0, 0)], crs=4326), max_points=0)


# --------------------------------------------------------------------------- asset names

hostile_names = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["..", ".", "", "a", "b.nc", "/", "\\", "C:", "~", "\x00", "\n", "é", " ", "%2e%2e",
                              "openEO_1.nc", "x" * 300]), min_size=1, max_size=6).map("/".join),
)


@FUZZ
@given(name=hostile_names)
def test_asset_names_never_leave_the_output_folder(name):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "out"
        root.mkdir()
        (Path(tmp) / "outside").mkdir()
        (root / "link").symlink_to(Path(tmp) / "outside", target_is_directory=True)
        try:
            rel = safe_relative_path(name)
        except UnsafeAssetPath:
            rel = None
        if rel is not None:
            assert not rel.is_absolute() and ".." not in rel.parts
        staged = Path(tmp) / "staged.bin"
        staged.write_bytes(b"data")
        try:
            final = place_file(staged, Path(name), root)
        except (UnsafeAssetPath, DownloadError):
            assert staged.exists()
        except OSError as exc:  # a name the file system refuses (too long, a file in the way)
            assert exc.errno in (errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR), exc
        else:
            assert final.is_relative_to(root.resolve()) and final.read_bytes() == b"data"
        assert list((Path(tmp) / "outside").iterdir()) == []
        assert sorted(p.name for p in Path(tmp).iterdir()) in (["out", "outside", "staged.bin"], ["out", "outside"])


# --------------------------------------------------------------------------- results documents

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                      st.sampled_from(["http://[::1", "http://[", "//x", "file:///etc/passwd", "../../x", "1220" + "a" * 64,
                                       "EPSG:32631", "EPSG:x", "2021-02-30T00:00:00Z", "item", "Feature", "Collection"]))
json_values = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)), max_leaves=20)
stac_keys = st.sampled_from(["href", "type", "roles", "title", "file:size", "file:checksum", "proj:code", "proj:epsg",
                             "proj:shape", "proj:bbox", "bbox", "geometry", "datetime", "start_datetime",
                             "end_datetime", "eo:bands", "raster:bands", "bands", "feature_index", "rel", "links",
                             "assets", "properties", "extent", "id"])
stac_like = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(stac_keys, st.text(max_size=6)), inner, max_size=6)),
    max_leaves=30)


hrefs = st.one_of(st.sampled_from(["http://[", "http://[::1", "http://h:99999999/a", "https://x/a.nc", "a.nc",
                                    "../a.nc", "//h/a", "", "ftp://h/a", "http://h/%zz", "data:,x", "\\\\h\\a"]),
                  st.text(max_size=20), json_leaf)
numbers = st.one_of(st.integers(-2, 10**20), st.floats(), st.booleans(), st.text(max_size=3))
stac_assets = st.fixed_dictionaries(
    {"href": hrefs},
    optional={"type": json_leaf, "roles": st.lists(json_leaf, max_size=2), "file:size": numbers,
              "file:checksum": st.one_of(json_leaf, st.text("0123456789abcdefABCDEF", min_size=68, max_size=68)),
              "proj:shape": st.lists(numbers, max_size=3), "proj:bbox": st.lists(numbers, max_size=4),
              "proj:epsg": numbers, "proj:code": json_leaf, "bbox": st.lists(numbers, max_size=4),
              "geometry": stac_like, "datetime": json_leaf, "start_datetime": json_leaf,
              "eo:bands": stac_like, "raster:bands": stac_like, "bands": stac_like, "feature_index": numbers})


@st.composite
def results_documents(draw: st.DrawFn) -> object:
    if draw(st.integers(0, 4)) == 0:
        return draw(json_values)
    assets = draw(st.dictionaries(st.one_of(st.text(max_size=12), st.sampled_from(["openEO_0.nc", "openEO_10.nc"])),
                                  st.one_of(stac_assets, stac_like), max_size=4))
    doc = {"type": draw(st.sampled_from(["Feature", "Collection", None, 3, "Catalog"])), "assets": assets}
    for key in draw(st.lists(stac_keys, max_size=5)):
        doc[key] = draw(stac_like)
    doc["links"] = draw(st.lists(st.fixed_dictionaries({"rel": st.sampled_from(["item", "self", 1]),
                                                         "href": hrefs}), max_size=3))
    return doc


@FUZZ
@given(doc=results_documents(), items=st.lists(st.one_of(
    stac_like, st.fixed_dictionaries({"type": st.just("Feature"), "assets": st.dictionaries(
        st.text(max_size=8), stac_assets, max_size=2)}, optional={"properties": stac_like, "id": json_leaf})),
    max_size=3))
def test_results_documents_parse_or_raise_download_errors(doc, items):
    served = iter(items)

    def fetch(url: str) -> object:
        try:
            return next(served)
        except StopIteration:
            raise ConnectionError(f"no item at {url}") from None

    try:
        assets = parse_job_results(doc, base_url="http://127.0.0.1:8080/jobs/j-1/results", fetch=fetch)
    except (DownloadError, UnsafeAssetPath):
        return
    for asset in assets:
        assert isinstance(asset.href, str) and asset.href
        assert asset.size is None or (isinstance(asset.size, int) and asset.size >= 0)
        assert asset.checksum is None or parse_checksum(asset.checksum) is not None
        assert asset.geometry_index is None or asset.geometry_index >= 0
        assert asset.shape is None or all(isinstance(v, int) for v in asset.shape)
        assert isinstance(asset.suffix, str)


# --------------------------------------------------------------------------- CSV job databases edited by hand


def edit_csv(text: str, rng: random.Random, edits: int) -> str:
    """Delete, duplicate and garble rows and cells of a CSV file as a person might."""
    lines = text.splitlines()
    for _ in range(edits):
        what = rng.choice(["delete", "duplicate", "garble", "blank", "truncate", "column", "quote"])
        if len(lines) <= 1 and what != "column":
            break
        i = rng.randrange(1, len(lines)) if len(lines) > 1 else 0
        if what == "delete":
            del lines[i]
        elif what == "duplicate":
            lines.insert(i, lines[i])
        elif what in ("garble", "blank"):
            cells = lines[i].split(",")
            j = rng.randrange(len(cells))
            cells[j] = "" if what == "blank" else "".join(rng.choices(string.printable.replace("\n", ""), k=6))
            lines[i] = ",".join(cells)
        elif what == "truncate":
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        elif what == "column":
            cells = lines[0].split(",")
            cells[rng.randrange(len(cells))] = rng.choice(["status", "", "id", "x y", "status"])
            lines[0] = ",".join(cells)
        else:
            lines[i] = lines[i].replace(",", ',"', 1)
    return "\n".join(lines) + "\n"


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), edits=st.integers(1, 4), reopen=st.booleans())
def test_csv_job_db_edited_by_hand_loads_correctly_or_is_refused(seed, edits, reopen):
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "jobs.csv"
        frame = pd.DataFrame({"title": [f"job {i}" for i in range(6)], "year": range(2020, 2026),
                              "ratio": np.linspace(0, 1, 6)})
        db = create_job_db(path, frame)
        db.transition("1", JobStatus.CREATING, manager_id="m")
        db.transition("2", JobStatus.CREATING, manager_id="m")
        db.transition("2", JobStatus.QUEUED, manager_id="m", id="j-2")
        db.close()
        if not reopen:
            (Path(tmp) / "jobs.csv.meta.json").unlink()  # as if written by openeo or another tool
        path.write_text(edit_csv(path.read_text(), rng, edits))
        try:
            edited = get_job_db(path)
            stored = edited.read()
            records = edited.jobs()
            counts = edited.count_by_status()
        except (JobDatabaseError, ConfigurationError):
            return
        assert stored.index.is_unique
        assert len(records) == len(stored) == sum(counts.values())
        assert all(isinstance(r.status, JobStatus) for r in records)
        assert all(isinstance(r.attempt, int) and r.attempt >= 0 for r in records)
        for rec in records:  # still usable by a manager
            edited.get(rec.job_key)
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in counts.values())


# --------------------------------------------------------------------------- what fuzzing found


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".db"])
def test_text_with_carriage_returns_survives_and_nul_is_refused_in_csv(tmp_path, suffix):
    values = ["a\rb", "\r", "x\r", "a\r\nb", "plain"]
    create_job_db(tmp_path / f"jobs{suffix}", pd.DataFrame({"v": values}, index=[f"k{i}\r" for i in range(5)])).close()
    stored = get_job_db(tmp_path / f"jobs{suffix}").read()
    assert list(stored["v"]) == values and list(stored.index) == [f"k{i}\r" for i in range(5)]
    nul = pd.DataFrame({"v": ["a\x00b"]})
    if suffix == ".csv":  # pandas' reader would silently cut the text at the NUL
        with pytest.raises(JobDatabaseError, match="NUL"):
            create_job_db(tmp_path / "nul.csv", nul)
        assert not (tmp_path / "nul.csv").exists()
    else:
        create_job_db(tmp_path / f"nul{suffix}", nul).close()
        assert get_job_db(tmp_path / f"nul{suffix}").read()["v"].tolist() == ["a\x00b"]


@pytest.mark.parametrize("suffix", [".csv", ".db"])
def test_empty_names_and_keys_and_unhashable_statuses_are_refused(tmp_path, suffix):
    path = tmp_path / f"jobs{suffix}"
    with pytest.raises(ConfigurationError, match="non-empty"):
        create_job_db(path, pd.DataFrame({"": [1]}))  # comes back from a CSV as "Unnamed: 0"
    with pytest.raises(ConfigurationError, match="empty job key"):
        create_job_db(path, pd.DataFrame({"v": [1, 2]}, index=["", "a"]))
    with pytest.raises(ConfigurationError, match="empty job key"):
        create_job_db(path, pd.DataFrame({"name": ["", "a"]}), key_column="name")
    with pytest.raises(ConfigurationError, match="reserved"):
        create_job_db(path, pd.DataFrame({"status": [["not_started"]]}))
    assert not path.exists()


def test_tables_without_statuses_and_repeated_index_labels_load(tmp_path):
    # a CSV of jobs written by hand or by pandas: every job is new (as openeo reads it)
    pd.DataFrame({"title": ["a", "b"]}).to_csv(tmp_path / "plain.csv", index=False)
    db = get_job_db(tmp_path / "plain.csv")
    assert [r.status for r in db.jobs()] == [JobStatus.NOT_STARTED] * 2
    assert db.count_by_status() == {"not_started": 2}
    # keys from a column while the index repeats a label; a blank managed text cell
    frame = pd.DataFrame({"job_key": ["a", "b"], "backend_name": ["x", " "]}, index=["k", "k"])
    stored = create_job_db(tmp_path / "keys.db", frame).read()
    assert list(stored.index) == ["a", "b"] and stored["backend_name"].tolist() == ["x", None]


def test_invalid_urls_and_shapes_in_results_documents():
    base = "http://127.0.0.1:8080/jobs/j-1/results"
    for href in ("http://[", "http://[::1", "http://h:99999999/a"):
        with pytest.raises(DownloadError, match="invalid href"):
            parse_job_results({"type": "Feature", "assets": {"a.nc": {"href": href}}}, base_url=base)
    doc = {"type": "Collection", "assets": {"a.nc": {"href": "a.nc", "proj:shape": [float("inf"), 3]}},
           "links": [{"rel": "item", "href": "http://["}, {"rel": "item", "href": "items/a"}]}
    fetched = []
    (asset,) = parse_job_results(doc, base_url=base, fetch=lambda url: fetched.append(url) or {})
    assert asset.shape is None and fetched == ["http://127.0.0.1:8080/jobs/j-1/items/a"]
