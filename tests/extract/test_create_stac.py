"""Collection options reach the builder: ``create_stac`` and ``build_catalogue`` pass every
option of ``CollectionBuilder`` through (``summary_fields``, ``layout``, ...)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pystac
import pytest

from eoextract.extract import ExtractionManager, ItemStore, build_catalogue
from eoextract.stac import validate_catalog

CROPS = ["wheat", "maize", "barley"]


def _generate_output_path(root_folder, tmp_path, geometry_index, row):  # never called here
    raise AssertionError("no job runs in these tests")


def _store_items(output_dir: Path, n_jobs: int = 3, per_job: int = 2) -> None:
    """Items of finished jobs in the item store, as the manager leaves them."""
    store = ItemStore(output_dir)
    i = 0
    for job in range(n_jobs):
        items = []
        for _ in range(per_job):
            data = output_dir / f"job_{job}" / f"sample_{i}.nc"
            data.parent.mkdir(parents=True, exist_ok=True)
            data.write_bytes(b"netcdf bytes")
            lon, lat = 5.0 + i * 0.1, 51.0
            item = pystac.Item(
                f"sample-{i}",
                {"type": "Polygon", "coordinates": [[[lon, lat], [lon + 0.05, lat],
                 [lon + 0.05, lat + 0.05], [lon, lat + 0.05], [lon, lat]]]},
                [lon, lat, lon + 0.05, lat + 0.05],
                dt.datetime(2021, 6, 1 + i, tzinfo=dt.UTC),
                {"platform": f"sentinel-2{'ab'[i % 2]}", "crop": CROPS[i % 3], "label": i},
            )
            item.add_asset("data", pystac.Asset(str(data), media_type="application/x-netcdf",
                                                roles=["data"]))
            items.append(store.stored_item(item, str(job)))
            i += 1
        store.write_job(str(job), f"j-{job}", items)


def _manager(output_dir: Path, **kwargs) -> ExtractionManager:
    return ExtractionManager(output_dir, _generate_output_path, "CROPS", "Crop samples",
                             poll_sleep=0.1, **kwargs)


def _collection(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


def test_create_stac_passes_summary_fields(tmp_path):
    out = tmp_path / "out"
    _store_items(out)
    path = _manager(out).create_stac(summary_fields=["crop", "platform"])
    collection = _collection(path)
    assert collection["summaries"]["crop"] == sorted(CROPS)
    assert collection["summaries"]["platform"] == ["sentinel-2a", "sentinel-2b"]
    assert "label" not in collection["summaries"]
    assert validate_catalog(path, check_assets=True).n_items == 6


def test_create_stac_passes_options_when_extending(tmp_path):
    out = tmp_path / "out"
    _store_items(out)
    first = _manager(out).create_stac()
    assert "crop" not in _collection(first).get("summaries", {})  # not a default field
    again = _manager(out, stac=first).create_stac(summary_fields=["crop"], layout="flat")
    collection = _collection(again)
    assert collection["summaries"]["crop"] == sorted(CROPS)
    assert [link["href"] for link in collection["links"] if link["rel"] == "child"] == [
        "./items/catalog.json"]


def test_build_catalogue_passes_builder_options(tmp_path):
    out = tmp_path / "out"
    _store_items(out)
    path = build_catalogue(out, "CROPS", "Crop samples", summary_fields=["crop"],
                           layout="property:crop", title="Crops", keywords=["crop type"])
    collection = _collection(path)
    assert collection["summaries"]["crop"] == sorted(CROPS)
    assert collection["title"] == "Crops" and collection["keywords"] == ["crop type"]
    children = sorted(link["title"] for link in collection["links"] if link["rel"] == "child")
    assert children == sorted(CROPS)
    assert validate_catalog(path, check_assets=True).n_items == 6
    with pytest.raises(TypeError, match="no_such_option"):
        build_catalogue(out, "CROPS", "Crop samples", no_such_option=1)
