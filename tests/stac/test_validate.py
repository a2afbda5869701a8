"""Offline validation of STAC objects and catalogues."""

from __future__ import annotations

import copy
import importlib
import socket

import orjson
import pystac
import pytest
from stac_samples import make_item

from eoextract.errors import StacValidationError
from eoextract.stac import build_collection, validate, validate_catalog, validate_dict

# the module holding the schema bundle and the compiled validators:
vmod = importlib.import_module("eoextract.stac._validate_schemas")
UNKNOWN_EXT = "https://stac-extensions.github.io/unknown-thing/v9.9.9/schema.json"


@pytest.fixture()
def item_dict() -> dict:
    return make_item(1).to_dict(include_self_link=False)


@pytest.fixture(params=["fast", "pure"])
def engine(request, monkeypatch):
    """Run a test with the native fast path and with the pure-Python validator."""
    if request.param == "pure":
        monkeypatch.setattr(vmod, "_fast_validator", lambda urls: None)
    return request.param


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_valid_item_passes(item_dict, engine):
    assert validate_dict(item_dict) == []
    validate(item_dict)
    validate(make_item(2))


def test_missing_geometry(item_dict, engine):
    del item_dict["geometry"]
    errors = validate_dict(item_dict)
    assert any("'geometry' is a required property" in e for e in errors), errors


def test_bad_proj_code_type(item_dict, engine):
    item_dict["properties"]["proj:code"] = 4326
    errors = validate_dict(item_dict)
    assert len(errors) == 1, errors
    assert errors[0].startswith("properties/proj:code: 4326 is not of type")
    assert "projection/v2.0.0" in errors[0]


@pytest.mark.parametrize(
    "value", ["2021-13-01T00:00:00Z", "yesterday", "2021-01-01", "2021-01-01T00:00:00+02:00"]
)
def test_wrong_datetime(item_dict, engine, value):
    item_dict["properties"]["datetime"] = value
    errors = validate_dict(item_dict)
    assert errors and all(e.startswith("properties/datetime") for e in errors), errors


def test_missing_extension_schema_is_named(item_dict, engine):
    item_dict["stac_extensions"].append(UNKNOWN_EXT)
    errors = validate_dict(item_dict)
    assert len(errors) == 1
    assert UNKNOWN_EXT in errors[0] and "offline bundle" in errors[0]
    with pytest.raises(StacValidationError) as info:
        validate(item_dict)
    assert info.value.errors == errors
    assert UNKNOWN_EXT in str(info.value)


def test_asset_field_error_has_path(item_dict, engine):
    item_dict["assets"]["S2-L2A"]["file:size"] = "big"
    errors = validate_dict(item_dict)
    assert any(e.startswith("assets/S2-L2A/file:size") for e in errors), errors


def test_unsupported_version_and_type(item_dict):
    other = dict(item_dict, stac_version="0.9.0")
    assert "no bundled schema for STAC 0.9.0" in validate_dict(other)[0]
    assert "not a STAC type" in validate_dict({"type": "Thing"})[0]
    assert validate_dict([1, 2]) == ["(root): expected a JSON object, got list"]
    with pytest.raises(TypeError):
        validate(42)


def test_collection_and_catalog(engine):
    collection = pystac.Collection(
        "c", "desc", pystac.Extent.from_items([make_item(1), make_item(2)])
    )
    validate(collection)
    d = collection.to_dict(include_self_link=False)
    d["extent"]["temporal"]["interval"] = [["not a date", None]]
    assert validate_dict(d)
    catalog = pystac.Catalog("cat", "desc")
    validate(catalog)
    bad = catalog.to_dict(include_self_link=False)
    del bad["description"]
    assert any("description" in e for e in validate_dict(bad))


def test_validator_is_compiled_once(item_dict):
    vmod._validator.cache_clear()
    for _ in range(3):
        validate_dict(item_dict)
    assert vmod._validator.cache_info().currsize <= 1  # only built for invalid objects
    item_dict["properties"]["proj:code"] = 1
    for _ in range(3):
        validate_dict(item_dict)
    assert vmod._validator.cache_info().misses == 1


def test_bundled_schemas_cover_pystac_output():
    urls = set(vmod.bundled_schema_urls())
    item = make_item(3)
    assert set(item.stac_extensions) <= urls


# --------------------------------------------------------------------------- catalogues


@pytest.fixture()
def catalogue(tmp_path):
    items = [make_item(i, tmp_path / "out" / "data", write_files=True) for i in range(30)]
    path = build_collection(
        items,
        tmp_path / "out" / "stac",
        collection_id="c",
        description="d",
        max_links_per_catalog=8,
    )
    return path


def test_validate_catalogue(catalogue):
    report = validate_catalog(catalogue, check_assets=True)
    assert report.ok, report.messages()
    assert (report.n_collections, report.n_items) == (1, 30)
    assert report.n_catalogs >= 5
    validate(catalogue)
    validate(catalogue.parent)
    item_file = next(catalogue.parent.glob("*/S2-L2A_000001.json"))
    validate(item_file)


def test_validate_catalogue_reports_every_problem(catalogue):
    root = catalogue.parent
    files = sorted(root.glob("*/S2-L2A_*.json"))
    # 1. an invalid item
    d = orjson.loads(files[0].read_bytes())
    d["properties"]["proj:code"] = 32631
    files[0].write_bytes(orjson.dumps(d))
    # 2. an absolute link
    d = orjson.loads(files[1].read_bytes())
    d["links"][0]["href"] = str(catalogue)
    files[1].write_bytes(orjson.dumps(d))
    # 3. an item file that is gone
    files[2].unlink()
    # 4. an absolute local asset href
    d = orjson.loads(files[3].read_bytes())
    d["assets"]["S2-L2A"]["href"] = "/data/S2.nc"
    files[3].write_bytes(orjson.dumps(d))

    report = validate_catalog(root)
    assert not report.ok
    text = "\n".join(report.messages())
    assert "proj:code" in text
    assert "is not relative" in text
    assert "does not resolve to a file" in text
    assert "absolute local path" in text
    assert len(report.errors) == 4, report.errors
    with pytest.raises(StacValidationError) as info:
        report.raise_for_errors()
    assert len(info.value.errors) == report.n_errors
    with pytest.raises(StacValidationError):
        validate(root)


def test_validate_catalogue_missing_assets(catalogue, tmp_path):
    (tmp_path / "out" / "data" / "000004" / "S2.nc").unlink()
    assert validate_catalog(catalogue).ok
    report = validate_catalog(catalogue, check_assets=True)
    assert report.n_errors == 1
    assert "does not exist" in report.messages()[0]


def test_validate_catalogue_in_processes(tmp_path):
    items = (make_item(i, tmp_path / "data").to_dict() for i in range(260))
    path = build_collection(items, tmp_path / "stac", collection_id="c", description="d")
    bad = next(path.parent.glob("*/S2-L2A_000007.json"))
    d = orjson.loads(bad.read_bytes())
    del d["properties"]["datetime"]
    bad.write_bytes(orjson.dumps(d))
    report = validate_catalog(path, workers=2)
    assert report.n_items == 260
    assert list(report.errors) == [str(bad)]


def test_validate_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        validate(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):
        validate_catalog(tmp_path)


def test_original_not_modified(item_dict):
    before = copy.deepcopy(item_dict)
    item_dict["properties"]["proj:code"] = 3
    validate_dict(item_dict)
    before["properties"]["proj:code"] = 3
    assert item_dict == before
