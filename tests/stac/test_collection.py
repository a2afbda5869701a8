"""Streaming collection builder: layout, metadata, relative hrefs, rebuilds."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import shutil
from pathlib import Path

import orjson
import pystac
import pytest
from pystac.extensions.projection import ProjectionExtension
from stac_samples import make_item

from eoextract.errors import ConfigurationError, StacError
from eoextract.stac import (
    CollectionBuilder,
    build_collection,
    extend_collection,
    iter_catalog_items,
    layout_key,
    validate,
    validate_catalog,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _json_files(root: Path) -> list[tuple[Path, dict]]:
    return [(p, orjson.loads(p.read_bytes())) for p in sorted(root.rglob("*.json"))]


@pytest.fixture()
def out(tmp_path) -> Path:
    return tmp_path / "extraction"


def _items(out: Path, n: int, **kw) -> list[pystac.Item]:
    return [make_item(i, out / "data", write_files=True, **kw) for i in range(n)]


def test_extent_summaries_item_assets(out):
    items = _items(out, 20)
    utm32 = make_item(
        99,
        out / "data",
        epsg=32632,
        write_files=True,
        when=dt.datetime(2022, 6, 30, 12, tzinfo=dt.UTC),
    )
    path = build_collection(
        [*items, utm32],
        out / "stac",
        collection_id="S2-crops",
        description="Samples",
        title="Crop samples",
        license="CC-BY-4.0",
        keywords=["crops"],
        providers=[pystac.Provider("VITO", roles=[pystac.ProviderRole.PRODUCER])],
        extra_fields={"sci:citation": "Someone 2024"},
    )
    assert path == out / "stac" / "collection.json"
    c = orjson.loads(path.read_bytes())
    all_items = [*items, utm32]
    xs = [b for it in all_items for b in it.bbox]
    bbox = c["extent"]["spatial"]["bbox"][0]
    assert bbox == [min(xs[0::4]), min(xs[1::4]), max(xs[2::4]), max(xs[3::4])]
    start = min(it.datetime for it in all_items)
    assert c["extent"]["temporal"]["interval"] == [
        [start.strftime("%Y-%m-%dT%H:%M:%SZ"), "2022-06-30T12:00:00Z"]
    ]
    s = c["summaries"]
    assert s["proj:code"] == ["EPSG:32631", "EPSG:32632"]
    assert [b["name"] for b in s["eo:bands"]] == ["B02", "B03", "B04", "B08"]
    assert s["datetime"]["maximum"] == "2022-06-30T12:00:00Z"
    assert c["item_assets"] == {
        "S2-L2A": {"title": "Sentinel-2 L2A", "type": "application/x-netcdf", "roles": ["data"]},
        "auxiliary": {"title": "Crop type", "type": "application/x-netcdf", "roles": ["auxiliary"]},
    }
    assert c["license"] == "CC-BY-4.0" and c["title"] == "Crop samples"
    assert c["providers"][0]["name"] == "VITO" and c["keywords"] == ["crops"]
    assert c["sci:citation"] == "Someone 2024"
    assert "https://stac-extensions.github.io/projection/v2.0.0/schema.json" in c["stac_extensions"]
    report = validate_catalog(path, check_assets=True)
    assert report.ok, report.messages()
    assert report.n_items == 21


def test_empty_collection_has_an_extent(out):
    path = build_collection([], out / "stac", collection_id="empty", description="nothing yet")
    c = orjson.loads(path.read_bytes())
    assert c["extent"]["spatial"]["bbox"] == [[-180.0, -90.0, 180.0, 90.0]]
    assert c["extent"]["temporal"]["interval"] == [[None, None]]
    validate(path)
    assert pystac.Collection.from_file(str(path)).extent.spatial.bboxes


@pytest.mark.parametrize("max_links,n", [(10, 95), (5, 120)])
def test_no_file_exceeds_link_limit(out, max_links, n):
    path = build_collection(
        (it.to_dict() for it in _items(out, n)),
        out / "stac",
        collection_id="c",
        description="d",
        max_links_per_catalog=max_links,
    )
    files = _json_files(path.parent)
    assert max(len(d["links"]) for _, d in files) <= max_links
    report = validate_catalog(path)
    assert report.ok, report.messages()
    assert report.n_items == n
    ids = [it["id"] for it in iter_catalog_items(path)]
    assert sorted(ids) == sorted(f"S2-L2A_{i:06d}" for i in range(n))
    if max_links == 5:
        assert (path.parent / "_index").is_dir()  # too many sub-catalogues for one level


def test_all_hrefs_relative_and_tree_movable(out, tmp_path):
    path = build_collection(
        _items(out, 30), out / "stac", collection_id="c", description="d", max_links_per_catalog=12
    )
    for file, d in _json_files(path.parent):
        for link in d["links"]:
            assert not link["href"].startswith("/") and "://" not in link["href"], (file, link)
        assert all(link["rel"] != "self" for link in d["links"])
        for asset in d.get("assets", {}).values():
            assert asset["href"].startswith("../../data/"), asset["href"]

    moved = tmp_path / "elsewhere" / "copy"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    new_path = moved / "stac" / "collection.json"
    report = validate_catalog(new_path, check_assets=True)
    assert report.ok, report.messages()
    collection = pystac.Collection.from_file(str(new_path))
    items = list(collection.get_items(recursive=True))
    assert len(items) == 30
    for item in items:
        assert item.collection_id == "c"
        href = Path(item.assets["S2-L2A"].get_absolute_href())
        assert href.is_file() and str(href).startswith(str(moved))
        assert ProjectionExtension.ext(item).code == "EPSG:32631"


def test_rebuild_is_idempotent_and_drops_stale_files(out):
    items = _items(out, 25)
    kw = {"collection_id": "c", "description": "d", "max_links_per_catalog": 8}
    build_collection(items, out / "stac", **kw)
    first = _tree(out / "stac")
    build_collection(items, out / "stac", **kw)
    assert _tree(out / "stac") == first
    build_collection(items[:5], out / "stac", **kw)
    second = _tree(out / "stac")
    assert sum(1 for k in second if "S2-L2A_" in k) == 5
    assert validate_catalog(out / "stac").n_items == 5
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".stac")]
    assert leftovers == []


def test_failed_build_keeps_previous_catalogue(out):
    items = _items(out, 6)
    build_collection(items, out / "stac", collection_id="c", description="d")
    before = _tree(out / "stac")
    with pytest.raises(StacError, match="duplicate item id"):
        build_collection([*items, items[0]], out / "stac", collection_id="c", description="d")
    assert _tree(out / "stac") == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".stac")] == []


def test_refuses_to_replace_a_folder_with_other_files(out):
    (out / "stac").mkdir(parents=True)
    (out / "stac" / "notes.txt").write_text("mine")
    with pytest.raises(StacError, match="refusing"):
        build_collection(_items(out, 2), out / "stac", collection_id="c", description="d")
    assert (out / "stac" / "notes.txt").read_text() == "mine"


def test_pystac_reads_and_items_round_trip(out):
    items = _items(out, 12)
    path = build_collection(
        items, out / "stac", collection_id="c", description="d", max_links_per_catalog=6
    )
    collection = pystac.Collection.from_file(str(path))
    read = {it.id: it for it in collection.get_items(recursive=True)}
    assert set(read) == {it.id for it in items}
    original = items[3]
    again = read[original.id]
    assert again.datetime == original.datetime
    assert again.geometry == original.geometry
    assert again.assets["S2-L2A"].extra_fields == original.assets["S2-L2A"].extra_fields
    assert again.get_root().id == "c"
    chain = [again.get_parent()]
    while chain[-1].get_parent() is not None:
        chain.append(chain[-1].get_parent())
    assert [c.id for c in chain][-1] == "c"
    assert any(c.id.startswith("c-index-") for c in chain)  # 12 groups > 5 children


def test_dict_items_relative_hrefs_and_unsafe_ids(out, caplog):
    base = out / "jobs" / "j1"
    base.mkdir(parents=True)
    (base / "a.nc").write_bytes(b"x")
    d = make_item(1).to_dict()
    d["id"] = "../weird id/1"
    d["links"] = [
        {"rel": "self", "href": str(base / "item.json")},
        {"rel": "license", "href": "https://example.com/license"},
    ]
    d["assets"] = {
        "data": {"href": "./a.nc", "type": "application/x-netcdf", "roles": ["data"]},
        "remote": {"href": "https://example.com/b.tif", "roles": ["overview"]},
        "outside": {"href": "/opt/elsewhere/c.nc", "roles": ["metadata"]},
    }
    with caplog.at_level(logging.WARNING):
        path = build_collection([d], out / "stac", collection_id="c", description="d")
    assert "outside" in caplog.text
    (item_file,) = [
        p
        for p in path.parent.rglob("*.json")
        if p.parent != path.parent and p.name != "catalog.json"
    ]
    assert item_file.resolve().is_relative_to(path.parent.resolve())
    written = orjson.loads(item_file.read_bytes())
    assert written["id"] == "../weird id/1"
    assert (item_file.parent / written["assets"]["data"]["href"]).resolve() == (
        base / "a.nc"
    ).resolve()
    assert written["assets"]["remote"]["href"] == "https://example.com/b.tif"
    assert written["assets"]["outside"]["href"] == "/opt/elsewhere/c.nc"
    assert {"rel": "license", "href": "https://example.com/license"} in written["links"]
    assert d["links"][0]["rel"] == "self"  # the caller's dict is left alone


def test_layouts(out):
    items = [it.to_dict() for it in _items(out, 8)]
    for i, d in enumerate(items):
        d["properties"]["tile"] = f"31U{'FS' if i % 2 else 'ES'}_x"
    path = build_collection(
        items, out / "stac", collection_id="c", description="d", layout="property:tile:_"
    )
    assert sorted(p.name for p in path.parent.iterdir() if p.is_dir()) == ["31UES", "31UFS"]
    path = build_collection(items, out / "stac", collection_id="c", description="d", layout="year")
    assert sorted(p.name for p in path.parent.iterdir() if p.is_dir()) == ["2021"]
    path = build_collection(
        items, out / "stac", collection_id="c", description="d", layout=lambda d: d["id"][-1]
    )
    assert len([p for p in path.parent.iterdir() if p.is_dir()]) == 8
    assert layout_key("flat")(items[0]) == "items"
    assert layout_key("month")({"properties": {}}) == "undated"
    with pytest.raises(ConfigurationError):
        layout_key("weekly")
    with pytest.raises(ConfigurationError):
        CollectionBuilder(out / "x", collection_id="c", description="d", max_links_per_catalog=2)


def test_builder_context_manager_aborts_on_error(out):
    with (
        pytest.raises(RuntimeError),
        CollectionBuilder(out / "stac", collection_id="c", description="d") as builder,
    ):
        builder.add(make_item(1))
        raise RuntimeError("boom")
    assert not (out / "stac").exists()
    assert list(out.iterdir()) == []


def test_extend_collection(out):
    items = _items(out, 10)
    path = build_collection(
        items,
        out / "stac",
        collection_id="c",
        description="d",
        license="CC-BY-4.0",
        extra_fields={"sci:doi": "10.1/x"},
        max_links_per_catalog=6,
    )
    replacement = make_item(
        3, out / "data2", write_files=True, when=dt.datetime(2023, 1, 1, tzinfo=dt.UTC)
    )
    new = [make_item(i, out / "data", write_files=True) for i in range(10, 15)]
    path2 = extend_collection(path, [*new, replacement], max_links_per_catalog=6)
    assert path2 == path
    c = orjson.loads(path.read_bytes())
    assert c["license"] == "CC-BY-4.0" and c["sci:doi"] == "10.1/x"
    assert c["extent"]["temporal"]["interval"][0][1] == "2023-01-01T00:00:00Z"
    report = validate_catalog(path, check_assets=True)
    assert report.ok, report.messages()
    got = {d["id"]: d for d in iter_catalog_items(path)}
    assert len(got) == 15
    assert "data2" in got[replacement.id]["assets"]["S2-L2A"]["href"]


def test_dropped_builder_leaves_no_temporary_folder(out):
    builder = CollectionBuilder(out / "stac", collection_id="c", description="d")
    builder.add(make_item(1))
    del builder
    gc.collect()
    assert list(out.iterdir()) == []
