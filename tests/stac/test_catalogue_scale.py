"""The streaming catalogue at a small size: parts written as they fill, index pages, the
open-links budget, the compact id set, streaming validation and the chunked export.

The million-item figures come from ``benchmarks/bench_stac.py --full``.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pystac
import pytest
from stac_samples import make_item

import eoextract.stac._collection as collection_module
import eoextract.stac._idset as idset_module
from eoextract.errors import StacError
from eoextract.stac import build_collection, validate_catalog
from eoextract.stac._idset import CompactStringSet
from eoextract.stac.publish import export_geoparquet
from eoextract.stac.publish import _geoparquet as geoparquet_module
from eoextract.stac.publish._geoparquet import read_geoparquet_items

N = 300


def _item_dicts(data: Path, n: int = N) -> list[dict]:
    return [make_item(i, data, write_files=True).to_dict(transform_hrefs=False)
            for i in range(n)]


def _items_by_id(stac: Path) -> dict[str, dict]:
    out = {}
    for path in stac.rglob("*.json"):
        d = orjson.loads(path.read_bytes())
        if d.get("type") == "Feature":
            out[d["id"]] = d
    return out


def _max_links(stac: Path) -> int:
    return max(len(orjson.loads(p.read_bytes())["links"]) for p in stac.rglob("*.json"))


def test_compact_string_set_across_merges(monkeypatch):
    monkeypatch.setattr(idset_module, "_MERGE_AT", 16)
    ids = CompactStringSet()
    names = [f"item-{i}" for i in range(200)]
    assert all(ids.add(name) for name in names)
    assert len(ids) == 200
    assert ids._sorted.size >= 192  # most are in the merged, sorted array
    assert not any(ids.add(name) for name in names)  # each one seen again, wherever kept
    assert all(name in ids for name in names)
    assert "item-200" not in ids and 3 not in ids
    assert len(ids) == 200


@pytest.mark.slow
def test_small_parts_and_index_pages_give_the_same_items(tmp_path):
    items = _item_dicts(tmp_path / "data")
    one = build_collection(items, tmp_path / "stac", collection_id="c", description="d")
    small = build_collection(items, tmp_path / "stac-small", collection_id="c", description="d",
                             max_links_per_catalog=8)
    for path in (one, small):
        report = validate_catalog(path, check_assets=True)
        assert report.ok, report.messages()[:5]
        assert report.n_items == N
    assert _max_links(small.parent) <= 8
    assert (small.parent / "_index").is_dir()  # 12 months x 50 parts need index pages
    # every item file is the same document, whichever part holds it
    assert _items_by_id(one.parent) == _items_by_id(small.parent)
    # and pystac reads the whole tree, links resolved
    read = pystac.read_file(str(small))
    ids = {item.id for item in read.get_items(recursive=True)}
    assert ids == {d["id"] for d in items}
    for item in read.get_items(recursive=True):
        assert item.get_parent() is not None and item.get_root().id == "c"


@pytest.mark.slow
def test_open_links_budget_closes_parts_early(tmp_path, monkeypatch):
    monkeypatch.setattr(collection_module, "OPEN_LINKS_BUDGET", 40)
    items = _item_dicts(tmp_path / "data")
    wide = build_collection(items, tmp_path / "stac", collection_id="c", description="d",
                            layout=lambda d: d["id"][-2:])  # 100 groups of 3 items
    report = validate_catalog(wide)
    assert report.ok, report.messages()[:5]
    assert report.n_items == N
    collection = orjson.loads(wide.read_bytes())
    children = [link for link in collection["links"] if link["rel"] == "child"]
    assert len(children) > 100  # groups went on in new parts after each flush
    assert _items_by_id(wide.parent).keys() == {d["id"] for d in items}


@pytest.mark.slow
def test_duplicate_ids_are_refused_and_nothing_is_written(tmp_path):
    items = _item_dicts(tmp_path / "data", 20)
    with pytest.raises(StacError, match="duplicate item id 'S2-L2A_000003'"):
        build_collection([*items, items[3]], tmp_path / "stac", collection_id="c",
                         description="d")
    assert not (tmp_path / "stac").exists()


@pytest.mark.slow
def test_item_linked_twice_is_reported(tmp_path):
    items = _item_dicts(tmp_path / "data", 10)
    path = build_collection(items, tmp_path / "stac", collection_id="c", description="d",
                            layout="flat")
    catalog = tmp_path / "stac" / "items" / "catalog.json"
    d = orjson.loads(catalog.read_bytes())
    d["links"].append(next(link for link in d["links"] if link["rel"] == "item"))
    catalog.write_bytes(orjson.dumps(d))
    report = validate_catalog(path)
    assert report.n_items == 10
    assert any("linked more than once" in m for m in report.messages())


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_export_round_trips_in_chunks(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(geoparquet_module, "PARALLEL_MIN_ITEMS", 50)
    items = _item_dicts(tmp_path / "data")
    path = build_collection(items, tmp_path / "stac", collection_id="c", description="d",
                            max_links_per_catalog=40)
    result = export_geoparquet(path, tmp_path / "items.parquet", chunk_size=64, workers=workers)
    assert result.n_items == N
    back = {d["id"]: d for d in read_geoparquet_items(tmp_path / "items.parquet")}
    assert back.keys() == {d["id"] for d in items}
    written = _items_by_id(tmp_path / "stac")
    for item_id in ("S2-L2A_000000", "S2-L2A_000299"):
        got, want = back[item_id], written[item_id]
        assert got["collection"] == "c"
        assert got["properties"]["proj:code"] == want["properties"]["proj:code"]
        assert got["properties"]["datetime"].startswith(want["properties"]["datetime"][:19])
        for key, asset in want["assets"].items():
            expected = (tmp_path / "stac" / "any-part" / asset["href"]).resolve()
            assert Path(got["assets"][key]["href"]).resolve() == expected
