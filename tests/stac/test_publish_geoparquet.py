"""stac-geoparquet export: streamed in batches, round trip, and what it cannot keep."""

from __future__ import annotations

import copy
from datetime import datetime

import pytest

pytest.importorskip("stac_geoparquet")

from publish_fixtures import make_output  # noqa: E402

from eoextract.stac.publish import (  # noqa: E402
    export_geoparquet,
    read_geoparquet_items,
    walk_catalog,
)


def _known_differences(item: dict) -> dict:
    """``item`` as a stac-geoparquet round trip gives it back (see docs/publish.md)."""
    out = copy.deepcopy(item)
    out.pop("links", None)  # links are not kept
    props = out["properties"]
    # a list column holding ints in some items and floats in others comes back as floats
    props["proj:transform"] = [float(v) for v in props["proj:transform"]]
    # datetimes come back with microseconds
    props["datetime"] = datetime.fromisoformat(props["datetime"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


def test_round_trip(tmp_path):
    out = tmp_path / "out"
    root = make_output(out, n_jobs=5, items_per_job=7, max_links=6)
    entries = {e.data["id"]: e for e in walk_catalog(root) if e.kind == "item"}
    local = {k: e.data for k, e in entries.items()}
    target = tmp_path / "export" / "items.parquet"
    result = export_geoparquet(root, target, chunk_size=8)  # five batches
    assert result.n_items == 35 and target.stat().st_size == result.n_bytes > 0
    assert not list(target.parent.glob(".geoparquet-*")), "temporary files are removed"

    back = {d["id"]: d for d in read_geoparquet_items(target)}
    assert back.keys() == local.keys()
    for item_id, original in local.items():
        expected = _known_differences(original)
        # asset hrefs become absolute local paths (one file has no place to be relative to)
        for asset in expected["assets"].values():
            asset["href"] = str((entries[item_id].path.parent / asset["href"]).resolve())
        assert back[item_id] == expected

    # the integers that are integers in every item stay integers
    first = next(iter(back.values()))
    assert first["properties"]["proj:shape"] == [64, 64]
    assert all(isinstance(v, int) for v in first["properties"]["proj:shape"])
    assert all(isinstance(a["file:size"], int) for a in first["assets"].values())


def test_collection_in_metadata_and_asset_base_url(tmp_path):
    import json

    import pyarrow.parquet as pq

    out = tmp_path / "out"
    root = make_output(out, n_jobs=1, items_per_job=3, collection_id="my-extraction")
    target = tmp_path / "items.parquet"
    export_geoparquet(out, target, asset_base_url="https://data.example.org/run")
    meta = json.loads(pq.read_schema(target).metadata[b"stac-geoparquet"])
    assert meta["collections"]["my-extraction"]["id"] == "my-extraction"
    assert "links" not in meta["collections"]["my-extraction"] or all(
        lk["href"].startswith("http") for lk in meta["collections"]["my-extraction"]["links"])
    hrefs = [a["href"] for d in read_geoparquet_items(target) for a in d["assets"].values()]
    assert hrefs and all(h.startswith("https://data.example.org/run/31UFS/job-000/") for h in hrefs)
    assert root.exists()


def test_cli_export(tmp_path):
    from typer.testing import CliRunner

    from eoextract.cli import app

    out = tmp_path / "out"
    make_output(out, n_jobs=2, items_per_job=2)
    target = tmp_path / "items.parquet"
    result = CliRunner().invoke(app, ["stac", "export-geoparquet", str(out), str(target)])
    assert result.exit_code == 0, result.output
    assert "4 items" in result.output
    assert len(list(read_geoparquet_items(target))) == 4
    missing = CliRunner().invoke(
        app, ["stac", "export-geoparquet", str(tmp_path / "none"), str(target)])
    assert missing.exit_code == 2


def test_empty_catalogue_is_refused(tmp_path):
    from eoextract.stac import build_collection
    from eoextract.stac.publish import PublishError

    root = build_collection([], tmp_path / "stac", collection_id="empty", description="none")
    with pytest.raises(PublishError, match="no items"):
        export_geoparquet(root, tmp_path / "items.parquet")
    assert not (tmp_path / "items.parquet").exists()


def test_nodata_of_int_and_float_bands_together(tmp_path):
    """Integer bands (nodata 0) and float bands (nodata "nan") in one file: one float column,
    read back as the number or the string."""
    import orjson

    from publish_fixtures import make_output

    from eoextract.stac.publish import export_geoparquet, read_geoparquet_items, walk_catalog

    root = make_output(tmp_path / "out", n_jobs=1, items_per_job=2)
    for i, entry in enumerate(e for e in walk_catalog(root) if e.kind == "item"):
        entry.data["assets"]["S2-L2A"]["raster:bands"] = [
            {"data_type": "uint16", "nodata": 0}, {"data_type": "float32", "nodata": "nan" if i else "-inf"}]
        entry.path.write_bytes(orjson.dumps(entry.data))
    export_geoparquet(root, tmp_path / "items.parquet")
    bands = [it["assets"]["S2-L2A"]["raster:bands"] for it in read_geoparquet_items(tmp_path / "items.parquet")]
    assert sorted(str(b[1]["nodata"]) for b in bands) == ["-inf", "nan"]
    assert all(b[0]["nodata"] == 0 for b in bands)


def _vary_items(root) -> dict[str, dict]:
    """Give the items of ``root`` fields only some of them have (so chunks differ in schema)."""
    import orjson

    entries = [e for e in walk_catalog(root) if e.kind == "item"]
    for i, entry in enumerate(entries):
        item = entry.data
        if i % 3 == 0:
            item["properties"]["eo:cloud_cover"] = 12 if i == 0 else 3.5  # int, then float
        # (on every item: stac-geoparquet cannot read a proj:geometry column with nulls)
        item["properties"]["proj:geometry"] = {
            "type": "Polygon", "coordinates": [[[0, 0], [640 + i, 0], [640 + i, 640], [0, 0]]]}
        if i == 5:
            item["assets"]["preview"] = {"href": "./preview.png", "type": "image/png",
                                         "roles": ["overview"]}
        if i >= 8:
            item["assets"]["S2-L2A"]["description"] = f"tile {i}"
        entry.path.write_bytes(orjson.dumps(item))
    return {e.data["id"]: e for e in entries}


def test_chunks_of_different_schemas_read_back_by_duckdb_and_geopandas(tmp_path):
    """Chunks whose items have different fields are merged into one schema; the file reads
    back as the items in our reader, DuckDB and geopandas."""
    import duckdb
    import geopandas
    import shapely

    root = make_output(tmp_path / "out", n_jobs=3, items_per_job=4)
    entries = _vary_items(root)
    target = tmp_path / "items.parquet"
    assert export_geoparquet(root, target, chunk_size=3).n_items == 12  # four chunks

    back = {d["id"]: d for d in read_geoparquet_items(target)}
    assert back.keys() == entries.keys()
    for item_id, entry in entries.items():
        expected = _known_differences(entry.data)
        for asset in expected["assets"].values():
            asset["href"] = str((entry.path.parent / asset["href"]).resolve())
        properties = expected["properties"]
        if "eo:cloud_cover" in properties:  # ints and floats: floats
            properties["eo:cloud_cover"] = float(properties["eo:cloud_cover"])
        got = back[item_id]
        # fields an item lacks come back as None (see the module's docstring)
        for key in set(got["properties"]) - set(expected["properties"]):
            assert got["properties"].pop(key) is None
        for name, asset in got["assets"].items():
            for key in set(asset) - set(expected["assets"][name]):
                assert asset.pop(key) is None
        assert got == expected

    rows = duckdb.sql(
        f"SELECT id, \"eo:cloud_cover\", assets.preview.href, geometry FROM '{target}' ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == sorted(entries)
    for item_id, cloud, preview, geometry in rows:
        item = entries[item_id].data
        assert cloud == item["properties"].get("eo:cloud_cover")
        assert (preview is None) == ("preview" not in item["assets"])
        wkb = geometry if isinstance(geometry, bytes | bytearray) else shapely.to_wkb(
            shapely.from_wkt(str(geometry)))
        assert shapely.from_wkb(bytes(wkb)).equals(shapely.geometry.shape(item["geometry"]))

    frame = geopandas.read_parquet(target)
    assert frame.crs.to_epsg() == 4326 and len(frame) == 12
    for _, row in frame.iterrows():
        item = entries[row["id"]].data
        assert row.geometry.equals(shapely.geometry.shape(item["geometry"]))
        assert row["proj:code"] == item["properties"]["proj:code"]
        assert row["proj:geometry"].equals(
            shapely.geometry.shape(item["properties"]["proj:geometry"]))
