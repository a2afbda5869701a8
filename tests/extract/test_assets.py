"""Asset definitions (AUXILIARY, Sentinel-2 L2A) as used in post-job actions."""

from __future__ import annotations

import datetime as dt

import pystac
import pytest

from eoextract.extract._assets import (
    AUXILIARY,
    ITEM_ASSETS,
    SENTINEL2_L2A,
    AssetDefinition,
    sentinel2_l2a_definition,
)

EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"


def _item() -> pystac.Item:
    return pystac.Item("i", None, None, dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc), {})


def test_auxiliary_create_asset_like_gfmap():
    asset = AUXILIARY.create_asset(href="/out/aux.nc")
    d = asset.to_dict()
    assert d == {
        "href": "/out/aux.nc",
        "type": "application/x-netcdf",
        "title": "Auxiliary data",
        "description": AUXILIARY.description,
        "roles": ["data", "auxiliary"],
    }
    item = _item()
    item.add_asset("auxiliary", asset)
    assert item.assets["auxiliary"].owner is item and item.stac_extensions == []


def test_sentinel2_definition_declares_eo_on_the_item():
    item = _item()
    item.add_asset("s2", SENTINEL2_L2A.create_asset(href="s2.nc"))
    assert EO in item.stac_extensions
    bands = item.assets["s2"].extra_fields["eo:bands"]
    assert len(bands) == 13 and bands[1] == {
        "name": "B02", "common_name": "blue", "center_wavelength": 0.49, "full_width_half_max": 0.098
    }
    assert item.assets["s2"].extra_fields["gsd"] == 10
    # Assets do not share mutable fields.
    bands[0]["name"] = "changed"
    assert SENTINEL2_L2A.create_asset(href="x").extra_fields["eo:bands"][0]["name"] == "B01"
    # Round trip and clone keep it a plain asset dict.
    assert pystac.Item.from_dict(item.to_dict()).assets["s2"].to_dict() == item.assets["s2"].to_dict()
    assert item.clone().assets["s2"].to_dict() == item.assets["s2"].to_dict()


def test_overrides_and_prefixes():
    definition = sentinel2_l2a_definition(band_prefix="S2-L2A-", bands=["B04", "B08", "SCL"])
    asset = definition.create_asset(href="a.nc", title="custom", roles=["data", "reflectance"])
    d = asset.to_dict()
    assert d["title"] == "custom" and d["roles"] == ["data", "reflectance"]
    assert [b["name"] for b in d["eo:bands"]] == ["S2-L2A-B04", "S2-L2A-B08", "S2-L2A-SCL"]
    with pytest.raises(ValueError, match="B10"):
        sentinel2_l2a_definition(bands=["B10"])


def test_item_assets_for_a_collection():
    collection = pystac.Collection(
        "c", "d", pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]),
                                 pystac.TemporalExtent([[None, None]]))
    )
    collection.item_assets = {key: d.to_item_asset() for key, d in ITEM_ASSETS.items()}
    out = collection.to_dict()["item_assets"]
    assert out["auxiliary"]["type"] == "application/x-netcdf"
    assert out["sentinel2_l2a"]["eo:bands"][0]["name"] == "B01"
    assert AssetDefinition(title="t").to_dict() == {"title": "t", "roles": ["data"]}
