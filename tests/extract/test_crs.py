"""The CRS of items: bound CRSs reduced to their source, the backend's EPSG code where it agrees."""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pystac
import pandas as pd
import pytest
import rasterio
import rioxarray  # noqa: F401 - the .rio accessor
import xarray as xr
from pyproj import CRS, Transformer
from rasterio.transform import Affine

from eoextract.extract._filemeta import item_crs
from eoextract.extract._stac_item import build_item, read_file_metadata, refresh_file_metadata
from eoextract.jobs._download import RemoteAsset
from eoextract.stac import validate_dict

# EPSG:3035 as a PROJ string with a null towgs84, as GDAL-based backends write it: pyproj
# reads its WKT as BOUNDCRS[SOURCECRS[LAEA on an unnamed GRS80 datum], TARGETCRS[WGS 84], ...]
LAEA_TOWGS84 = ("+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=GRS80 "
                "+towgs84=0,0,0,0,0,0,0 +units=m +no_defs")
X0, Y0, RES, N = 3_900_000.0, 3_100_000.0, 10.0, 16


def bound_crs() -> CRS:
    crs = CRS.from_proj4(LAEA_TOWGS84)
    assert crs.is_bound and crs.to_epsg() is None
    return crs


def write_cdse_netcdf(path, wkt_version: str = "WKT2"):
    """t, y, x; one uint16 variable per band with grid_mapping 'crs'; a 'crs' variable with the
    CF attributes rioxarray writes, and crs_wkt and spatial_ref holding the bound CRS: as CDSE
    writes them (``BOUNDCRS[...]``, WKT2), or as rioxarray does (WKT1 with ``TOWGS84``)."""
    x = X0 + RES / 2 + RES * np.arange(N)
    y = Y0 - RES / 2 - RES * np.arange(N)
    times = pd.to_datetime(["2023-05-01", "2023-05-11"])
    ds = xr.Dataset({b: (("t", "y", "x"), np.ones((2, N, N), dtype="uint16")) for b in ("S2-L2A-B02", "S2-L2A-B03")},
                    coords={"t": times, "y": y, "x": x})
    ds = ds.rio.write_crs(bound_crs(), grid_mapping_name="crs")
    if wkt_version == "WKT2":
        ds["crs"].attrs["crs_wkt"] = ds["crs"].attrs["spatial_ref"] = bound_crs().to_wkt()
        assert ds["crs"].attrs["crs_wkt"].startswith("BOUNDCRS[")
    else:
        assert "TOWGS84[0,0,0,0,0,0,0]" in ds["crs"].attrs["crs_wkt"]
    assert CRS.from_wkt(ds["crs"].attrs["spatial_ref"]).is_bound
    ds.to_netcdf(path)
    with xr.open_dataset(path, decode_coords=False) as written:
        assert written["S2-L2A-B02"].attrs["grid_mapping"] == "crs"
    return path


def write_geotiff(path):
    with rasterio.open(path, "w", driver="GTiff", width=N, height=N, count=1, dtype="uint16",
                       crs=rasterio.crs.CRS.from_proj4(LAEA_TOWGS84),
                       transform=Affine(RES, 0.0, X0, 0.0, -RES, Y0)) as dst:
        dst.write(np.ones((1, N, N), dtype="uint16"))
        dst.update_tags(TIFFTAG_DATETIME="2023:05:01 10:30:00")
    with rasterio.open(path) as src:  # the file itself carries the transformation
        assert CRS.from_wkt(src.crs.to_wkt()).is_bound
    return path


def announced(name: str, epsg: int | None) -> RemoteAsset:
    return RemoteAsset(name=name, href=f"http://127.0.0.1:1/{name}", roles=("data",), epsg=epsg,
                       start_datetime=dt.datetime(2023, 5, 1, tzinfo=dt.timezone.utc),
                       end_datetime=dt.datetime(2023, 5, 31, tzinfo=dt.timezone.utc))


@pytest.mark.parametrize("wkt_version", ["WKT2", "WKT1"])
def test_a_bound_crs_of_a_netcdf_is_reduced_to_its_source_and_takes_the_announced_code(tmp_path, wkt_version):
    path = write_cdse_netcdf(tmp_path / "openEO_0.nc", wkt_version)
    meta = read_file_metadata(path)
    assert meta.crs_wkt is not None and meta.crs_wkt.startswith("PROJCRS[")  # no BOUNDCRS, no towgs84
    assert "BOUNDCRS" not in meta.crs_wkt and len(meta.crs_wkt) < 1500
    item = build_item(announced("openEO_0.nc", 3035), meta, item_id="a", collection_id="c")
    for target in (item.properties, item.assets["openEO_0.nc"].extra_fields):
        assert target["proj:code"] == "EPSG:3035"
        assert "proj:wkt2" not in target
    assert item.properties["proj:bbox"] == [X0, Y0 - N * RES, X0 + N * RES, Y0]
    lon, lat = Transformer.from_crs(3035, 4326, always_xy=True).transform(X0 + N * RES / 2, Y0 - N * RES / 2)
    west, south, east, north = item.bbox  # the file's footprint, about 160 m wide
    assert west < lon < east and south < lat < north and east - west < 0.01
    validate_dict(item.to_dict())


def test_a_bound_crs_of_a_geotiff_takes_the_announced_code(tmp_path):
    path = write_geotiff(tmp_path / "a.tif")
    meta = read_file_metadata(path)
    assert meta.epsg is None and "BOUNDCRS" not in (meta.crs_wkt or "")
    item = build_item(announced("a.tif", 3035), meta, item_id="a", collection_id="c")
    assert item.properties["proj:code"] == "EPSG:3035" and "proj:wkt2" not in item.properties


def test_without_an_announced_code_the_source_crs_wkt_is_kept(tmp_path):
    meta = read_file_metadata(write_cdse_netcdf(tmp_path / "openEO_0.nc"))
    item = build_item(announced("openEO_0.nc", None), meta, item_id="a", collection_id="c")
    assert item.properties["proj:code"] is None
    assert item.properties["proj:wkt2"] == meta.crs_wkt
    assert CRS.from_wkt(meta.crs_wkt).equals(bound_crs().source_crs)


def test_when_file_and_backend_disagree_the_file_wins_and_it_is_logged(tmp_path, caplog):
    meta = read_file_metadata(write_cdse_netcdf(tmp_path / "openEO_0.nc"))
    with caplog.at_level(logging.WARNING, logger="eoextract.extract._filemeta"):
        item = build_item(announced("openEO_0.nc", 32631), meta, item_id="a", collection_id="c")
    assert item.properties["proj:code"] is None and item.properties["proj:wkt2"] == meta.crs_wkt
    assert "EPSG:32631" in caplog.text and "openEO_0.nc" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="eoextract.extract._filemeta"):
        assert item_crs(32631, None, 32632, what="b.nc") == (32631, None)
    assert "EPSG:32631" in caplog.text and "EPSG:32632" in caplog.text
    assert item_crs(None, meta.crs_wkt, 3035) == (3035, None)
    assert item_crs(32631, None, None) == (32631, None)


def test_an_added_file_in_the_same_bound_crs_takes_its_items_code(tmp_path, caplog):
    meta = read_file_metadata(write_cdse_netcdf(tmp_path / "openEO_0.nc"))
    item = build_item(announced("openEO_0.nc", 3035), meta, item_id="a", collection_id="c")
    label = write_cdse_netcdf(tmp_path / "LABEL_0.nc")  # e.g. written by a post-job action
    item.add_asset("auxiliary", pystac.Asset(href=str(label), roles=["data"]))
    with caplog.at_level(logging.WARNING, logger="eoextract.extract._filemeta"):
        refresh_file_metadata(item, tmp_path)
    aux = item.assets["auxiliary"].extra_fields
    assert aux["proj:code"] == "EPSG:3035" and "proj:wkt2" not in aux
    assert caplog.text == ""
