"""Point tables merged into one Hive-partitioned GeoParquet dataset."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pytest

from eoextract.dataset import CompletenessReport, find_point_files, merge_points
from eoextract.errors import DatasetError

from .conftest import point_frame


def test_merged_dataset_reads_alike_in_geopandas_duckdb_and_pyarrow(job_files, tmp_path):
    out = tmp_path / "dataset"
    report = merge_points(tmp_path / "outputs", out, partition_by="ref_id", bands=["B02", "B03"],
                          nodata=0, attributes=["label"])
    assert isinstance(report, CompletenessReport)
    assert sorted(p.name for p in out.iterdir()) == ["ref_id=ref0", "ref_id=ref1"]
    assert report.rows == 48 and report.rows_read == 48 and report.samples_found == 16
    assert report.partitions == ("ref0", "ref1")

    gdf = gpd.read_parquet(out)
    assert gdf.crs.to_epsg() == 4326 and gdf.geometry.geom_type.eq("Point").all()
    assert str(gdf["B02"].dtype) == "uint16" and str(gdf["timestamp"].dtype).endswith("UTC]")
    expected = pd.concat([point_frame(j) for j in range(4)])
    assert sorted(gdf["sample_id"]) == sorted(expected["sample_id"])
    merged = gdf.sort_values(["sample_id", "timestamp"]).reset_index(drop=True)
    source = expected.sort_values(["sample_id", "timestamp"]).reset_index(drop=True)
    assert (merged["timestamp"].astype("datetime64[ns, UTC]") == source["timestamp"]).all()
    assert (merged["B02"].astype(int) == source["B02"].round().astype(int)).all()
    assert merged.geometry.geom_equals(source.geometry).all()

    con = duckdb.connect()
    rows = con.execute(f"SELECT ref_id, count(*) FROM read_parquet('{out}/*/*.parquet', "
                       f"hive_partitioning = true) GROUP BY ref_id ORDER BY ref_id").fetchall()
    assert rows == [("ref0", 24), ("ref1", 24)]

    table = pads.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 48 and str(table.schema.field("B03").type) == "uint16"
    assert table.schema.field("timestamp").type.tz == "UTC"
    import json

    import pyarrow.parquet as pq

    for part in out.glob("*/*.parquet"):  # WKB passed through, GeoParquet metadata merged
        geo = json.loads(pq.read_schema(part).metadata[b"geo"])
        column = geo["columns"]["geometry"]
        assert geo["primary_column"] == "geometry" and column["encoding"] == "WKB"
        assert column["geometry_types"] == ["Point"] and column["crs"]["id"]["code"] == 4326


@pytest.mark.parametrize("hashes_per_scan", [1 << 24, 7])  # one scan; many slices
def test_duplicates_keep_the_row_of_the_last_file(job_files, tmp_path, monkeypatch,
                                                  hashes_per_scan):
    from eoextract.dataset import _points

    monkeypatch.setattr(_points, "_HASHES_PER_SCAN", hashes_per_scan)
    again = point_frame(1)
    again["B02"] = 7.0
    later = tmp_path / "outputs" / "zz_rerun" / "points_1.parquet"
    later.parent.mkdir()
    again.to_parquet(later)
    report = merge_points(tmp_path / "outputs", tmp_path / "ds", partition_by="ref_id",
                          bands=["B02"])
    assert report.rows_read == 60 and report.rows == 48 and report.duplicates_dropped == 12
    gdf = gpd.read_parquet(tmp_path / "ds")
    assert (gdf.loc[gdf["sample_id"].str.startswith("j1-"), "B02"] == 7).all()


def test_a_rerun_replaces_only_the_partitions_it_writes(job_files, tmp_path):
    out = tmp_path / "ds"
    merge_points(tmp_path / "outputs", out, partition_by="ref_id")
    kept = sorted((out / "ref_id=ref0").iterdir())[0]
    kept_stat = kept.stat()
    fresh = point_frame(9, ref_id="ref1", samples=2)
    fresh_path = tmp_path / "fresh.parquet"
    fresh.to_parquet(fresh_path)
    report = merge_points([fresh_path], out, partition_by="ref_id")
    assert report.partitions == ("ref1",)
    assert kept.stat().st_mtime_ns == kept_stat.st_mtime_ns  # untouched
    gdf = gpd.read_parquet(out)
    assert set(gdf.loc[gdf["ref_id"] == "ref1", "sample_id"]) == set(fresh["sample_id"])
    assert (gdf["ref_id"] == "ref0").sum() == 24
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []


def test_times_are_utc_and_nan_becomes_nodata(tmp_path):
    csv = tmp_path / "job.csv"
    csv.write_text("sample_id,ref_id,timestamp,B02\n"
                   "a,r,2021-03-01T01:00:00+01:00,12.4\n"
                   "b,r,2021-03-01 00:00:00,\n"
                   "c,r,2021-03-02T00:00:00Z,NaN\n")
    merge_points([csv], tmp_path / "ds", partition_by="ref_id", bands=["B02"], nodata=65535)
    df = pd.read_parquet(tmp_path / "ds").sort_values("sample_id")
    assert list(df["timestamp"]) == [pd.Timestamp("2021-03-01", tz="UTC")] * 2 + [
        pd.Timestamp("2021-03-02", tz="UTC")]
    assert list(df["B02"]) == [12, 65535, 65535]


def test_partition_by_year_derived_from_the_time_column(job_files, tmp_path):
    merge_points(job_files, tmp_path / "ds", partition_by="year")
    assert [p.name for p in (tmp_path / "ds").iterdir()] == ["year=2021"]


def test_catalogue_assets_are_found(job_files, tmp_path):
    import pystac

    collection = pystac.Collection("points", "point time series", pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])))
    for path in job_files:
        item = pystac.Item(path.stem, None, None, pd.Timestamp("2021-03-01").to_pydatetime(), {})
        item.add_asset("points", pystac.Asset(os.path.relpath(path, tmp_path / "stac" / path.stem),
                                              media_type="application/vnd.apache.parquet"))
        item.add_asset("thumb", pystac.Asset("thumb.png", media_type="image/png"))
        collection.add_item(item)
    collection.normalize_hrefs(str(tmp_path / "stac"))
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    assert find_point_files(tmp_path / "stac") == sorted(p.resolve() for p in job_files)


def test_a_job_database_in_the_output_folder_is_not_point_data(job_files, tmp_path):
    """GFMAP keeps its job tracker in the output folder: it and its sidecars are left aside."""
    from eoextract.jobs.db import create_job_db

    outputs = tmp_path / "outputs"
    create_job_db(outputs / "job_tracker.csv", pd.DataFrame({"sample_id": ["a", "b"]}))
    assert len(list(outputs.glob("job_tracker.csv*"))) == 4
    assert find_point_files(outputs) == sorted(p.resolve() for p in job_files)
    (outputs / "extra.csv").write_text("sample_id,ref_id,timestamp\nx,ref0,2021-03-01\n")
    assert outputs / "extra.csv" in find_point_files(outputs)  # a CSV of its own is data


def _untouched(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out.parent)) for p in out.parent.rglob("*") if "ds" in p.name)


def test_missing_partition_column_names_the_file(job_files, tmp_path):
    bad = point_frame(7).drop(columns="ref_id")
    bad_path = tmp_path / "outputs" / "job7.parquet"
    bad.to_parquet(bad_path)
    with pytest.raises(DatasetError, match=r"job7\.parquet: no partition column 'ref_id'") as info:
        merge_points(tmp_path / "outputs", tmp_path / "ds", partition_by="ref_id")
    assert info.value.path == str(bad_path.resolve())
    assert _untouched(tmp_path / "ds") == []


def test_mismatched_schemas_name_both_files(job_files, tmp_path):
    bad = point_frame(8)
    bad["B02"] = bad["B02"].astype(str)
    bad.to_parquet(tmp_path / "outputs" / "job8.parquet")
    with pytest.raises(DatasetError, match=r"job8\.parquet: column 'B02' holds string values, "
                                           r"but number in .*points_0\.parquet") as info:
        merge_points(tmp_path / "outputs", tmp_path / "ds", partition_by="ref_id")
    assert info.value.path.endswith("job8.parquet")
    assert _untouched(tmp_path / "ds") == []


def test_other_crs_names_the_file(job_files, tmp_path):
    point_frame(5).to_crs(32631).to_parquet(tmp_path / "outputs" / "utm.parquet")
    with pytest.raises(DatasetError, match=r"utm\.parquet: geometry in EPSG:32631, but EPSG:4326"):
        merge_points(tmp_path / "outputs", tmp_path / "ds", partition_by="ref_id")
    assert _untouched(tmp_path / "ds") == []


def test_a_rerun_with_mismatched_schemas_leaves_the_dataset_as_it_was(job_files, tmp_path):
    out = tmp_path / "ds"
    merge_points(job_files, out, partition_by="ref_id")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    bad = point_frame(8)
    bad["timestamp"] = bad["timestamp"].astype(str).str.len()  # a number where times were
    bad.to_parquet(tmp_path / "outputs" / "job8.parquet")
    with pytest.raises(DatasetError, match=r"job8\.parquet: column 'timestamp' holds number"):
        merge_points(tmp_path / "outputs", out, partition_by="ref_id")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []


def test_band_outside_its_type_names_the_file_and_writes_nothing(job_files, tmp_path):
    out = tmp_path / "ds"
    merge_points(job_files, out, partition_by="ref_id", bands=["B02"])
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    big = point_frame(6)
    big.loc[3, "B02"] = 1e6
    big.to_parquet(tmp_path / "outputs" / "big.parquet")
    with pytest.raises(DatasetError, match=r"big\.parquet: band 'B02' holds 1000000.*uint16"):
        merge_points(tmp_path / "outputs", out, partition_by="ref_id", bands=["B02"])
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds")] == []


def test_rows_with_nan_band_without_nodata_stay_empty(tmp_path):
    frame = point_frame(0)
    frame.loc[0, "B03"] = np.nan
    frame.to_parquet(tmp_path / "a.parquet")
    merge_points([tmp_path / "a.parquet"], tmp_path / "ds", partition_by="ref_id", bands=["B03"])
    assert pd.read_parquet(tmp_path / "ds")["B03"].isna().sum() == 1


def test_duplicates_inside_one_file_are_dropped_too(tmp_path):
    frame = point_frame(0)
    pd.concat([frame, frame.iloc[:2]]).to_parquet(tmp_path / "a.parquet")
    report = merge_points([tmp_path / "a.parquet"], tmp_path / "ds", partition_by="ref_id")
    assert (report.rows_read, report.rows, report.duplicates_dropped) == (14, 12, 2)
    assert report.samples_found == 4 and report.partitions == ("ref0",)
    gdf = gpd.read_parquet(tmp_path / "ds")
    assert not gdf.duplicated(["sample_id", "timestamp"]).any()


def test_files_with_differing_columns_merge_by_name(tmp_path):
    first = point_frame(0)
    second = point_frame(1).drop(columns="label")
    second["B02"] = second["B02"].astype("float64")
    second = second[["geometry", "B03", "timestamp", "sample_id", "B02", "ref_id"]]
    first.to_parquet(tmp_path / "a.parquet")
    second.to_parquet(tmp_path / "b.parquet")
    pd.concat([second, second.iloc[:1]]).to_parquet(tmp_path / "c.parquet")  # a rerun + 1 dup
    report = merge_points(tmp_path, tmp_path / "ds", partition_by="ref_id", bands=["B02"],
                          attributes=["label"])
    assert (report.rows_read, report.rows) == (37, 24)
    assert report.rows_without_attributes == 12 + 3  # job 1 has no label column at all
    gdf = gpd.read_parquet(tmp_path / "ds")
    assert str(gdf["B02"].dtype) == "uint16" and len(gdf) == 24


def test_json_records_and_csv_merge_with_parquet(job_files, tmp_path):
    (tmp_path / "outputs" / "extra.json").write_text(
        '{"sample_id": "x1", "ref_id": "ref0", "timestamp": "2021-03-01T00:00:00Z", "B02": 5}\n'
        '{"sample_id": "x2", "ref_id": "ref0", "timestamp": "2021-03-01T00:00:00Z", "B02": 6}\n')
    (tmp_path / "outputs" / "extra.csv").write_text(
        "sample_id,ref_id,timestamp,B02\nx3,ref1,2021-03-01T00:00:00Z,7\n")
    sources = [tmp_path / "outputs", tmp_path / "outputs" / "extra.json"]
    assert len(find_point_files(sources)) == 6  # JSON files of a folder only when named
    report = merge_points(sources, tmp_path / "ds", partition_by="ref_id", bands=["B02"])
    assert (report.rows_read, report.rows) == (51, 51)
    df = pd.read_parquet(tmp_path / "ds")
    assert sorted(df.loc[df["sample_id"].str.startswith("x"), "B02"]) == [5, 6, 7]


def test_rows_without_a_partition_value_name_the_file(job_files, tmp_path):
    frame = point_frame(11)
    frame.loc[2, "ref_id"] = None
    frame.to_parquet(tmp_path / "outputs" / "holes.parquet")
    with pytest.raises(DatasetError, match=r"holes\.parquet: 1 row\(s\) without a value of the "
                                           r"partition column 'ref_id'"):
        merge_points(tmp_path / "outputs", tmp_path / "ds", partition_by="ref_id")
    assert not (tmp_path / "ds").exists()


def test_partition_values_are_escaped_and_reported_as_given(tmp_path):
    frame = point_frame(0, ref_id="a/../b")
    frame.to_parquet(tmp_path / "a.parquet")
    report = merge_points([tmp_path / "a.parquet"], tmp_path / "ds", partition_by="ref_id")
    assert report.partitions == ("a/../b",)
    assert [p.name for p in (tmp_path / "ds").iterdir()] == ["ref_id=a%2F..%2Fb"]
    assert set(gpd.read_parquet(tmp_path / "ds")["ref_id"]) == {"a/../b"}


def test_files_of_one_schema_but_different_geo_metadata_are_read_as_one_schema(job_files):
    import json

    import pyarrow.parquet as pq

    from eoextract.dataset._schema import read_schemas

    raw = {pq.read_schema(p).metadata[b"geo"] for p in job_files}
    assert len(raw) == len(job_files)  # each file's bounding box differs
    con = duckdb.connect()
    schemas = read_schemas(con, job_files)
    con.close()
    assert schemas.uniform and schemas.crs == "EPSG:4326"
    assert all(schemas.columns[p]["geometry"] == "geometry" for p in job_files)
    assert schemas.geo["columns"]["geometry"]["geometry_types"] == ["Point"]
    assert "bbox" not in schemas.geo["columns"]["geometry"]
    assert list(schemas.columns) == list(job_files)
    assert json.loads(next(iter(raw)))["columns"]["geometry"]["crs"]["id"]["code"] == 4326


def test_native_parquet_geometry_is_checked_for_its_crs(tmp_path):
    import pyproj

    from eoextract.dataset._schema import read_schemas

    con = duckdb.connect()
    utm = pyproj.CRS(32631).to_json().replace("'", "''")
    for name, crs in (("a", "OGC:CRS84"), ("b", utm)):
        con.execute(f"COPY (SELECT '{name}' AS sample_id, 'r' AS ref_id, 'POINT(1 2)'::"
                    f"GEOMETRY('{crs}') AS geometry) TO '{tmp_path / name}.parquet' "
                    f"(FORMAT parquet, GEOPARQUET_VERSION 'NONE')")
    schemas = read_schemas(con, [tmp_path / "a.parquet"])
    con.close()
    assert schemas.columns[tmp_path / "a.parquet"]["geometry"] == "geometry"
    assert schemas.crs == "OGC:CRS84" and schemas.geo is None
    with pytest.raises(DatasetError, match=r"b\.parquet: geometry in EPSG:32631, but OGC:CRS84"):
        merge_points([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "ds",
                     partition_by="ref_id", key=["sample_id"], time_column=None)


def test_a_file_that_is_not_parquet_is_named(job_files, tmp_path):
    (tmp_path / "outputs" / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DatasetError, match=r"broken\.parquet: not a readable Parquet file"):
        merge_points(tmp_path / "outputs", tmp_path / "ds", partition_by="ref_id")
    assert _untouched(tmp_path / "ds") == []


def test_parquet_versions_and_their_band_encodings(tmp_path):
    import pyarrow.parquet as pq

    from eoextract.errors import ConfigurationError

    source = tmp_path / "many.parquet"  # 2,400 rows of one partition, ~1,600 distinct B02
    point_frame(0, samples=400, dates=6).to_parquet(source)

    def encodings(out: Path, column: str) -> set[str]:
        meta = pq.read_metadata(next(out.glob("*/*.parquet")))
        index = meta.schema.names.index(column)
        return set(meta.row_group(0).column(index).encodings)

    for version in ("v1", "v2"):
        out = tmp_path / version
        report = merge_points([source], out, partition_by="ref_id", bands=["B02"],
                              parquet_version=version)
        assert report.rows == 2400 and len(gpd.read_parquet(out)) == 2400
        assert str(pads.dataset(out, partitioning="hive").schema.field("B02").type) == "uint16"
    assert "DELTA_BINARY_PACKED" in encodings(tmp_path / "v2", "B02")
    assert "DELTA_BINARY_PACKED" not in encodings(tmp_path / "v1", "B02")
    with pytest.raises(ConfigurationError, match="parquet_version must be one of v1, v2"):
        merge_points([source], tmp_path / "v3", partition_by="ref_id", parquet_version="v3")


@pytest.mark.filterwarnings("ignore:Geometry is in a geographic CRS")
def test_files_of_one_schema_with_other_geometry_types_merge_with_both(tmp_path):
    import json

    import pyarrow.parquet as pq

    points = point_frame(0)
    squares = point_frame(1)
    squares["geometry"] = squares.geometry.buffer(0.001)  # same columns, other geometry type
    points.to_parquet(tmp_path / "a.parquet")
    squares.to_parquet(tmp_path / "b.parquet")
    report = merge_points(tmp_path, tmp_path / "ds", partition_by="ref_id")
    assert report.rows == 24
    for part in (tmp_path / "ds").glob("*/*.parquet"):  # the first file's metadata is not enough
        geo = json.loads(pq.read_schema(part).metadata[b"geo"])
        assert geo["columns"]["geometry"]["geometry_types"] == ["Point", "Polygon"]
    assert set(gpd.read_parquet(tmp_path / "ds").geom_type) == {"Point", "Polygon"}
