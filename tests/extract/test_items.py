"""Item metadata read from real NetCDF/GeoTIFF files in openEO's layout."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import blake3
import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
import xarray as xr
from pyproj import CRS, Transformer
from rasterio.transform import Affine

from eoextract.errors import StacError
from eoextract.extract._assets import AUXILIARY
from eoextract.extract._stac_item import (
    build_item,
    make_item_id,
    read_file_metadata,
    refresh_file_metadata,
)
from eoextract.jobs._download import RemoteAsset
from eoextract.stac import validate_dict

X0, Y0, RES, N = 600000.0, 5690640.0, 10.0, 64
UTM = CRS.from_epsg(32631)
TO_4326 = Transformer.from_crs(UTM, 4326, always_xy=True)


def write_openeo_netcdf(path, times=("2021-01-03", "2021-01-08", "2021-01-13"), bands=("B02", "B03", "SCL")):
    """A NetCDF as openEO backends write with sample_by_feature: t, y, x; uint16 bands; crs var."""
    x = X0 + RES / 2 + RES * np.arange(N)
    y = Y0 - RES / 2 - RES * np.arange(N)
    rng = np.random.default_rng(0)
    data_vars = {
        band: (("t", "y", "x"), rng.integers(0, 10000, (len(times), N, N), dtype=np.uint16),
               {"grid_mapping": "crs", "long_name": band})
        for band in bands
    }
    ds = xr.Dataset(data_vars, coords={"t": pd.to_datetime(list(times)), "y": y, "x": x})
    wkt = UTM.to_wkt()
    ds["crs"] = xr.DataArray(np.array(0, dtype="S1"), attrs={"crs_wkt": wkt, "spatial_ref": wkt})
    ds["x"].attrs.update({"standard_name": "projection_x_coordinate", "units": "m"})
    ds["y"].attrs.update({"standard_name": "projection_y_coordinate", "units": "m"})
    encoding = {band: {"_FillValue": np.uint16(65535)} for band in bands if band != "SCL"}
    ds.to_netcdf(path, engine="netcdf4", encoding=encoding)
    return path


def write_geotiff(path):
    data = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32)
    with rasterio.open(
        path, "w", driver="GTiff", width=32, height=32, count=2, dtype="float32",
        crs="EPSG:32631", transform=Affine(20.0, 0.0, X0, 0.0, -20.0, Y0), nodata=float("nan"),
    ) as dst:
        dst.write(data)
        dst.set_band_description(1, "NDVI")
        dst.set_band_description(2, "NDWI")
        dst.update_tags(TIFFTAG_DATETIME="2021:06:01 10:30:00")
    return path


def collection_style_asset(name="openEO_0.nc") -> RemoteAsset:
    return RemoteAsset(
        name=name,
        href=f"http://127.0.0.1:1/download/{name}",
        media_type="application/x-netcdf",
        roles=("data",),
        title=name,
        epsg=32631,
        shape=(64, 64),
        bbox_native=(X0, Y0 - 640, X0 + 640, Y0),
        start_datetime=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc),
        end_datetime=dt.datetime(2021, 3, 31, tzinfo=dt.timezone.utc),
        bands=(
            {"name": "B02", "common_name": "blue", "center_wavelength": 0.49, "statistics": {"minimum": 1.0, "maximum": 9999.0}},
            {"name": "B03", "common_name": "green", "center_wavelength": 0.56},
            {"name": "SCL"},
        ),
    )


def assert_valid(item: pystac.Item) -> None:
    d = item.to_dict(include_self_link=False)
    d["links"] = [{"rel": "collection", "href": "../collection.json", "type": "application/json"}]
    assert validate_dict(d) == []


def test_read_netcdf_metadata(tmp_path):
    path = write_openeo_netcdf(tmp_path / "openEO_0.nc")
    meta = read_file_metadata(path)
    assert meta.size == path.stat().st_size
    # no checksum announced: hashed with SHA-256, written as its multihash
    assert meta.checksum == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta.media_type == "application/x-netcdf"
    assert meta.epsg == 32631 and meta.crs_wkt is None
    assert meta.shape == (64, 64)
    assert meta.transform == (10.0, 0.0, X0, 0.0, -10.0, Y0)
    assert meta.bbox_native == (X0, Y0 - 640, X0 + 640, Y0)
    # The footprint in EPSG:4326 has the projected corners.
    ring = meta.geometry_4326["coordinates"][0]
    for corner in [(X0, Y0 - 640), (X0 + 640, Y0 - 640), (X0 + 640, Y0), (X0, Y0)]:
        lon, lat = TO_4326.transform(*corner)
        assert any(abs(p[0] - lon) < 1e-6 and abs(p[1] - lat) < 1e-6 for p in ring)
    assert ring[0] == ring[-1]
    west, south, east, north = meta.bbox_4326
    assert all(west <= p[0] <= east and south <= p[1] <= north for p in ring)
    assert 3.0 < west < east < 4.5 and 51.0 < south < north < 51.5
    assert meta.datetime is None
    assert meta.start_datetime == dt.datetime(2021, 1, 3, tzinfo=dt.timezone.utc)
    assert meta.end_datetime == dt.datetime(2021, 1, 13, tzinfo=dt.timezone.utc)
    assert meta.time_steps == 3
    assert [b["name"] for b in meta.bands] == ["B02", "B03", "SCL"]
    assert all(b["data_type"] == "uint16" for b in meta.bands)
    assert meta.bands[0]["nodata"] == 65535 and "nodata" not in meta.bands[2]


def test_read_single_time_netcdf_gives_datetime(tmp_path):
    meta = read_file_metadata(write_openeo_netcdf(tmp_path / "a.nc", times=("2022-05-05T10:00:00",)))
    assert meta.datetime == dt.datetime(2022, 5, 5, 10, tzinfo=dt.timezone.utc)
    assert meta.start_datetime is None


def test_read_geotiff_metadata(tmp_path):
    meta = read_file_metadata(write_geotiff(tmp_path / "ndvi.tif"))
    assert meta.media_type == "image/tiff; application=geotiff"
    assert meta.epsg == 32631 and meta.shape == (32, 32)
    assert meta.transform == (20.0, 0.0, X0, 0.0, -20.0, Y0)
    assert meta.bbox_native == (X0, Y0 - 640, X0 + 640, Y0)
    assert [b["name"] for b in meta.bands] == ["NDVI", "NDWI"]
    assert meta.bands[0]["data_type"] == "float32" and np.isnan(meta.bands[0]["nodata"])
    assert meta.datetime == dt.datetime(2021, 6, 1, 10, 30, tzinfo=dt.timezone.utc)


def test_read_other_file(tmp_path):
    path = tmp_path / "log.json"
    path.write_text("{}")
    meta = read_file_metadata(path)
    assert meta.media_type == "application/json" and meta.epsg is None and meta.geometry_4326 is None


def test_corrupt_netcdf_raises_stac_error(tmp_path):
    path = tmp_path / "broken.nc"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(StacError, match="broken.nc"):
        read_file_metadata(path)


def test_build_item_from_file_and_backend(tmp_path):
    path = write_openeo_netcdf(tmp_path / "S2_10m_sample1_32631.nc")
    meta = read_file_metadata(path)
    item_id = make_item_id("job-7", "openEO_0.nc", path)
    item = build_item(collection_style_asset(), meta, item_id=item_id, collection_id="S2-EXTRACTION",
                      properties={"sample_id": "sample1"})
    assert item.id == item_id and item.collection_id == "S2-EXTRACTION"
    assert item.geometry == meta.geometry_4326 and item.bbox == list(meta.bbox_4326)
    assert item.properties["start_datetime"] == "2021-01-03T00:00:00Z"
    assert item.properties["end_datetime"] == "2021-01-13T00:00:00Z"
    assert item.datetime is None and item.properties["sample_id"] == "sample1"
    assert item.properties["proj:code"] == "EPSG:32631"
    asset = item.assets["openEO_0.nc"]
    d = asset.to_dict()
    assert d["href"] == str(path.resolve())
    assert d["type"] == "application/x-netcdf" and d["roles"] == ["data"]
    assert d["proj:code"] == "EPSG:32631" and d["proj:shape"] == [64, 64]
    assert d["proj:transform"] == [10.0, 0.0, X0, 0.0, -10.0, Y0]
    assert d["proj:bbox"] == [X0, Y0 - 640, X0 + 640, Y0]
    assert d["file:size"] == meta.size and d["file:checksum"] == meta.checksum
    assert [b["name"] for b in d["eo:bands"]] == ["B02", "B03", "SCL"]
    assert d["eo:bands"][0]["common_name"] == "blue"
    assert d["raster:bands"][0] == {"nodata": 65535, "data_type": "uint16",
                                    "statistics": {"minimum": 1.0, "maximum": 9999.0}}
    assert d["raster:bands"][2] == {"data_type": "uint16"}
    assert_valid(item)
    again = pystac.Item.from_dict(item.to_dict())
    assert again.to_dict() == item.to_dict()


def test_build_item_geotiff_nan_nodata_is_valid_json(tmp_path):
    meta = read_file_metadata(write_geotiff(tmp_path / "ndvi.tif"))
    item = build_item(None, meta, item_id="ndvi", collection_id="c")
    d = item.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["assets"]["ndvi.tif"]["raster:bands"][0]["nodata"] == "nan"
    assert item.datetime == dt.datetime(2021, 6, 1, 10, 30, tzinfo=dt.timezone.utc)
    assert_valid(item)


def test_build_item_falls_back_to_backend_metadata(tmp_path):
    path = tmp_path / "result.bin"
    path.write_bytes(b"\x00" * 10)
    remote = RemoteAsset(
        name="result.bin", href="http://127.0.0.1:1/r", media_type="application/octet-stream",
        epsg=32631, shape=(64, 64), bbox_native=(X0, Y0 - 640, X0 + 640, Y0),
        bbox_4326=(3.0, 51.0, 3.1, 51.1), datetime=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc),
    )
    item = build_item(remote, read_file_metadata(path), item_id="r", collection_id="c")
    assert item.bbox == [3.0, 51.0, 3.1, 51.1]
    assert item.geometry["type"] == "Polygon"
    assert item.datetime == dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc)
    assert item.properties["proj:code"] == "EPSG:32631" and item.properties["proj:shape"] == [64, 64]
    assert item.assets["result.bin"].media_type == "application/octet-stream"
    assert_valid(item)


def test_build_item_without_time_is_an_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(StacError, match="No time known"):
        build_item(None, read_file_metadata(path), item_id="x", collection_id="c")
    item = build_item(None, read_file_metadata(path), item_id="x", collection_id="c",
                      properties={"datetime": "2020-02-02T00:00:00Z"})
    assert item.datetime == dt.datetime(2020, 2, 2, tzinfo=dt.timezone.utc)


def test_make_item_id_stable_and_unique():
    a = make_item_id("job-1", "openEO_1.nc")
    assert a == make_item_id("job-1", "openEO_1.nc")
    ids = {
        a,
        make_item_id("job-1", "openEO_1.tif"),
        make_item_id("job-1", "openEO_10.nc"),
        make_item_id("job-2", "openEO_1.nc"),
        make_item_id("job 1", "openEO_1.nc"),
        make_item_id("job-1", "../openEO_1.nc"),
    }
    assert len(ids) == 6
    for item_id in ids:
        assert all(c.isalnum() or c in "._-" for c in item_id) and len(item_id) <= 100
    assert make_item_id("j", "openEO_0.nc", "/out/S2_10m_s1_32631.nc").startswith("S2_10m_s1_32631_")
    assert len(make_item_id("j" * 500, "a")) <= 100


def test_refresh_after_post_job_action(tmp_path):
    path = write_openeo_netcdf(tmp_path / "sample.nc")
    meta = read_file_metadata(path)
    item = build_item(collection_style_asset(), meta, item_id="s", collection_id="c")
    # The post-job action rewrites the data file in place and adds an auxiliary file.
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    ds.attrs["sample_id"] = "s"
    ds.to_netcdf(path, engine="netcdf4")
    label = xr.Dataset(
        {"LABEL": (("y", "x"), np.ones((N, N), dtype=np.int64), {"grid_mapping": "crs"}), "crs": ds["crs"]},
        coords={"y": ds.y, "x": ds.x},
    )
    aux_path = tmp_path / "aux.nc"
    label.to_netcdf(aux_path, engine="netcdf4")
    item.add_asset("auxiliary", AUXILIARY.create_asset(href=aux_path.as_posix()))
    item.add_asset("remote", pystac.Asset(href="https://example.org/x.nc"))

    refresh_file_metadata(item, tmp_path)
    data = item.assets["openEO_0.nc"].to_dict()
    assert data["file:checksum"] == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["file:checksum"] != meta.checksum and data["file:size"] == path.stat().st_size
    aux = item.assets["auxiliary"].to_dict()
    assert aux["file:size"] == aux_path.stat().st_size
    assert aux["file:checksum"] == "1220" + hashlib.sha256(aux_path.read_bytes()).hexdigest()
    assert aux["proj:code"] == "EPSG:32631" and aux["proj:shape"] == [64, 64]
    assert aux["raster:bands"] == [{"data_type": "int64"}]
    assert aux["roles"] == ["data", "auxiliary"] and aux["type"] == "application/x-netcdf"
    assert "file:size" not in item.assets["remote"].to_dict()
    item.assets.pop("remote")
    assert_valid(item)


def test_refresh_relative_href_and_missing_file(tmp_path):
    path = write_openeo_netcdf(tmp_path / "sub" / "a.nc" if (tmp_path / "sub").mkdir() is None else None)
    item = build_item(None, read_file_metadata(path), item_id="a", collection_id="c", href="sub/a.nc")
    refresh_file_metadata(item, tmp_path)
    assert item.assets["a.nc"].extra_fields["file:size"] == path.stat().st_size
    item.add_asset("gone", pystac.Asset(href=str(tmp_path / "missing.nc")))
    with pytest.raises(StacError, match="gone"):
        refresh_file_metadata(item, tmp_path)


def test_download_place_and_describe_end_to_end(tmp_path):
    """Backend files → verified download → seed-style placement opening the file → items."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import requests

    from eoextract.extract._placement import OutputPathGenerator
    from eoextract.jobs._download import download_job_assets, parse_job_results

    served = tmp_path / "served"
    served.mkdir()
    assets = {}
    for i in range(3):
        path = write_openeo_netcdf(served / f"openEO_{i}.nc")
        assets[path.name] = {
            "href": f"/{path.name}", "type": "application/x-netcdf", "roles": ["data"],
            "file:size": path.stat().st_size,
            "file:checksum": "1220" + hashlib.sha256(path.read_bytes()).hexdigest(),
            "proj:code": "EPSG:32631",
        }
    doc = {"type": "Feature", "stac_version": "1.1.0", "id": "j", "geometry": None,
           "properties": {"datetime": "2021-01-01T00:00:00Z"}, "assets": assets, "links": []}
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/"
        remote = parse_job_results(doc, base_url=base)

        def generate_output_path(root_folder, tmp_path, geometry_index, row):
            with xr.open_dataset(tmp_path) as ds:
                epsg = CRS.from_wkt(ds.crs.attrs["crs_wkt"]).to_epsg()
            sample = row.sample_ids[geometry_index]
            return root_folder / str(epsg) / sample / f"{row.out_prefix}_{sample}_{epsg}.nc"

        row = pd.Series({"out_prefix": "S2_10m", "sample_ids": ["s0", "s1", "s2"]}, name="job-3")
        root = tmp_path / "out"
        placer = OutputPathGenerator(generate_output_path, root)
        with requests.Session() as session:
            session.trust_env = False
            done = download_job_assets(session, remote, root, placer.chooser(row, remote), job_key="job-3")
    finally:
        httpd.shutdown()
        httpd.server_close()
    items = []
    for d in done:
        meta = read_file_metadata(d.path, checksum=d.checksum)
        items.append(build_item(d.asset, meta, item_id=make_item_id("job-3", d.asset.name, d.path),
                                collection_id="c"))
    assert [d.path.relative_to(root.resolve()).as_posix() for d in done] == [
        f"32631/s{i}/S2_10m_s{i}_32631.nc" for i in range(3)
    ]
    assert len({i.id for i in items}) == 3
    for item, d in zip(items, done):
        asset_dict = item.assets[d.asset.name].to_dict()
        assert asset_dict["file:checksum"] == assets[d.asset.name]["file:checksum"]
        assert item.properties["start_datetime"] == "2021-01-03T00:00:00Z"
        assert_valid(item)


def test_refresh_reuses_known_hashes_only_for_unchanged_files(tmp_path):
    import os
    from types import SimpleNamespace

    path = write_openeo_netcdf(tmp_path / "a.nc")
    old = path.stat().st_mtime_ns - 5_000_000_000
    os.utime(path, ns=(old, old))
    item = build_item(None, read_file_metadata(path), item_id="a", collection_id="c")
    fake = "1e20" + "ab" * 32
    known = [SimpleNamespace(path=path, size=path.stat().st_size, mtime_ns=old, checksum=fake)]
    refresh_file_metadata(item, tmp_path, known=known)
    assert item.assets["a.nc"].extra_fields["file:checksum"] == fake
    os.utime(path, ns=(old + 1, old + 1))
    refresh_file_metadata(item, tmp_path, known=known)
    assert item.assets["a.nc"].extra_fields["file:checksum"] == "1e20" + blake3.blake3(path.read_bytes()).hexdigest()
    untrusted = [SimpleNamespace(path=path, size=path.stat().st_size, mtime_ns=None, checksum=fake)]
    refresh_file_metadata(item, tmp_path, known=untrusted)
    assert item.assets["a.nc"].extra_fields["file:checksum"] != fake


def test_refresh_keeps_the_hash_function_of_an_announced_checksum(tmp_path):
    path = write_openeo_netcdf(tmp_path / "a.nc")
    item = build_item(None, read_file_metadata(path, checksum="1220" + "00" * 32), item_id="a", collection_id="c")
    refresh_file_metadata(item, tmp_path)  # the recorded checksum is wrong: hashed again with SHA-256
    assert item.assets["a.nc"].extra_fields["file:checksum"] == "1220" + hashlib.sha256(path.read_bytes()).hexdigest()
