"""``validate_catalog(check_assets=True)`` and ``eoextract stac validate --check-assets``:
asset files must exist and match their ``file:size`` and ``file:checksum``."""

from __future__ import annotations

import hashlib
import json

import pytest
from pystac.extensions.file import FileExtension
from stac_samples import make_item
from typer.testing import CliRunner

from eoextract.cli import app
from eoextract.stac import build_collection, validate_catalog


@pytest.fixture()
def catalogue(tmp_path):
    items = []
    for i in range(4):
        item = make_item(i, tmp_path / "out" / "data", write_files=True)
        FileExtension.ext(item.assets["S2-L2A"]).checksum = "1220" + hashlib.sha256(b"data").hexdigest()
        items.append(item)
    return build_collection(items, tmp_path / "out" / "stac", collection_id="c", description="d")


def test_sizes_and_checksums_of_asset_files(catalogue, tmp_path):
    data = tmp_path / "out" / "data"
    assert validate_catalog(catalogue, check_assets=True, check_checksums=True).ok
    (data / "000001" / "S2.nc").write_bytes(b"DATA")  # same size, other bytes
    (data / "000002" / "S2.nc").write_bytes(b"data and more")
    (data / "000003" / "aux.nc").write_bytes(b"a")  # an asset with a size and no checksum
    report = validate_catalog(catalogue, check_assets=True, check_checksums=True)
    text = "\n".join(report.messages())
    assert report.n_errors == 3, text
    assert "assets/S2-L2A: file" in text and "has checksum 1220" in text
    assert "has 13 bytes, file:size says 4" in text
    assert "assets/auxiliary: file" in text and "has 1 bytes, file:size says 3" in text
    # sizes are checked with check_assets alone; checksums only when asked
    assert validate_catalog(catalogue, check_assets=True).n_errors == 2
    assert validate_catalog(catalogue).ok


def test_an_unknown_checksum_is_reported(catalogue, tmp_path):
    item_file = next(catalogue.parent.rglob("S2-L2A_000000.json"))
    item = json.loads(item_file.read_text())
    item["assets"]["S2-L2A"]["file:checksum"] = "ff20" + "00" * 32
    item_file.write_text(json.dumps(item))
    report = validate_catalog(catalogue, check_assets=True, check_checksums=True)
    assert report.n_errors == 1 and "not a multihash this validator knows" in report.messages()[0]


def test_cli_check_assets_reports_mismatches_per_asset(catalogue, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["stac", "validate", str(catalogue.parent), "--check-assets"])
    assert ok.exit_code == 0, ok.output
    (tmp_path / "out" / "data" / "000002" / "S2.nc").write_bytes(b"dat4")
    bad = runner.invoke(app, ["stac", "validate", str(catalogue.parent), "--check-assets", "--json"])
    assert bad.exit_code == 1
    report = json.loads(bad.stdout)
    assert len(report["errors"]) == 1
    assert "S2-L2A_000002.json: assets/S2-L2A: file" in report["errors"][0]
    assert "file:checksum says 1220" in report["errors"][0]
    # without --check-assets the files are not read
    assert runner.invoke(app, ["stac", "validate", str(catalogue.parent)]).exit_code == 0
