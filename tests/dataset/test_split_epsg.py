"""Per-EPSG collections: valid, pointing at the original files, one projection each."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import geopandas as gpd
import pystac
import pytest
from tests.dataset.patch_catalogue import make_extraction

from eoextract.dataset import dataset_info, split_by_epsg
from eoextract.errors import DatasetError
from eoextract.stac import iter_catalog_items, validate_catalog
from eoextract.stac.publish import read_geoparquet_items


@pytest.fixture(scope="module")
def extraction(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ext") / "out"
    make_extraction(root)
    return root


def _item_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.json") if p.name not in ("catalog.json", "collection.json")]


def test_one_valid_collection_per_epsg_pointing_at_the_original_files(extraction, tmp_path):
    out = tmp_path / "by-epsg"
    result = split_by_epsg(extraction, out)
    assert sorted(result.collections) == ["S2-EXTRACTION-EPSG-32631", "S2-EXTRACTION-EPSG-32632"]
    assert result.n_items == {"S2-EXTRACTION-EPSG-32631": 3, "S2-EXTRACTION-EPSG-32632": 3}
    report = validate_catalog(result.root, check_assets=True, check_checksums=True)
    assert report.ok, report.messages[:5]
    assert (report.n_collections, report.n_items) == (2, 6)
    originals = {p.resolve() for p in extraction.rglob("*.nc")}
    assert not list(out.rglob("*.nc"))  # nothing copied
    for name, path in result.collections.items():
        epsg = name.rsplit("-", 1)[1]
        collection = json.loads(path.read_text())
        assert collection["summaries"]["proj:code"] == [f"EPSG:{epsg}"]
        items = list(iter_catalog_items(path))
        assert {i["properties"]["proj:code"] for i in items} == {f"EPSG:{epsg}"}
        west = min(i["bbox"][0] for i in items)
        east = max(i["bbox"][2] for i in items)
        assert collection["extent"]["spatial"]["bbox"][0][0] == pytest.approx(west)
        assert collection["extent"]["spatial"]["bbox"][0][2] == pytest.approx(east)
        for item in items:
            for asset in item["assets"].values():
                assert Path(asset["href"]).resolve() in originals
    for file in _item_files(out):
        for asset in json.loads(file.read_text())["assets"].values():
            assert not os.path.isabs(asset["href"])
            assert (file.parent / asset["href"]).resolve() in originals
    # pystac reads the tree: root catalogue -> collections -> items
    root = pystac.Catalog.from_file(str(result.root))
    assert len(list(root.get_items(recursive=True))) == 6
    assert {c.id for c in root.get_children()} == set(result.collections)


def test_geoparquet_of_each_collection(extraction, tmp_path):
    result = split_by_epsg(extraction, tmp_path / "split")
    for name, path in result.geoparquet.items():
        items = list(read_geoparquet_items(path))
        assert len(items) == 3 and {i["collection"] for i in items} == {name}
        assert all(Path(a["href"]).is_file() for i in items for a in i["assets"].values())
        frame = gpd.read_parquet(path)
        assert len(frame) == 3 and frame.crs.to_epsg() == 4326
    counts = dataset_info(result.geoparquet["S2-EXTRACTION-EPSG-32632"])
    assert dict(counts.per_epsg) == {32632: 3}


def test_split_by_tile_and_absolute_hrefs(extraction, tmp_path):
    result = split_by_epsg(extraction, tmp_path / "tiles", by="tile", relative_hrefs=False,
                           geoparquet=False, validate=False)
    assert sorted(result.collections) == ["S2-EXTRACTION-EPSG-32631-31UES",
                                          "S2-EXTRACTION-EPSG-32632-32UNB"]
    assert result.geoparquet == {}
    hrefs = [a["href"] for f in _item_files(tmp_path / "tiles")
             for a in json.loads(f.read_text())["assets"].values()]
    assert hrefs and all(os.path.isabs(h) and Path(h).is_file() for h in hrefs)


def test_item_without_projection_is_named_and_nothing_is_written(extraction, tmp_path):
    items = list(iter_catalog_items(extraction / "stac"))
    del items[4]["properties"]["proj:code"]
    for asset in items[4]["assets"].values():
        asset.pop("proj:code", None)
    with pytest.raises(DatasetError, match=items[4]["id"]) as caught:
        split_by_epsg(items, tmp_path / "split")
    assert caught.value.item_id == items[4]["id"]
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder


def test_items_of_several_collections_are_split_apart_with_a_warning(extraction, tmp_path, caplog):
    items = list(iter_catalog_items(extraction / "stac"))
    for item in items[:2]:
        item["collection"] = "OTHER"
    with caplog.at_level(logging.WARNING, logger="eoextract"):
        result = split_by_epsg(items, tmp_path / "split", geoparquet=False)
    assert "OTHER" in caplog.text and "S2-EXTRACTION" in caplog.text
    assert result.n_items == {"OTHER-EPSG-32631": 2, "S2-EXTRACTION-EPSG-32631": 1,
                              "S2-EXTRACTION-EPSG-32632": 3}
    assert validate_catalog(result.root, check_assets=True).ok


def test_a_rerun_replaces_the_split_and_other_folders_are_refused(extraction, tmp_path):
    out = tmp_path / "split"
    split_by_epsg(extraction, out, by="tile", geoparquet=False)
    split_by_epsg(extraction, out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "S2-EXTRACTION-EPSG-32631", "S2-EXTRACTION-EPSG-32632"]
    again = split_by_epsg(out, tmp_path / "again", by="tile", geoparquet=False)  # a split, split
    assert sorted(again.collections) == ["S2-EXTRACTION-EPSG-32631-31UES",
                                         "S2-EXTRACTION-EPSG-32632-32UNB"]
    assert again.source_collections == ["S2-EXTRACTION"]
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.nc").write_bytes(b"x")
    with pytest.raises(DatasetError, match="refusing"):
        split_by_epsg(extraction, other)
    assert (other / "keep.nc").read_bytes() == b"x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "data", "split"]


def test_no_catalogue_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no catalogue"):
        split_by_epsg(tmp_path / "missing", tmp_path / "out")


def test_each_collection_reads_as_one_grid_in_odc_stac(extraction, tmp_path):
    import odc.stac

    result = split_by_epsg(extraction, tmp_path / "split", geoparquet=False)
    for name, path in result.collections.items():
        items = list(pystac.Collection.from_file(str(path)).get_items(recursive=True))
        parsed = list(odc.stac.parse_items(items))
        assert {str(p.crs()) for p in parsed} == {f"EPSG:{name.rsplit('-', 1)[1]}"}
        assert all(g.shape == (8, 8) for p in parsed for g in p.geoboxes())
