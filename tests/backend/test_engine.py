"""Execution engine of the embedded backend, called in-process (no HTTP)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr

from eoextract.backend.engine import Engine, JobCanceled, ResultAsset, write_instant_result
from eoextract.backend.errors import (
    CollectionNotFound,
    FormatUnsupported,
    OpenEOApiError,
    ProcessParameterInvalid,
    ProcessUnsupported,
)

TEMPORAL = ["2023-03-01", "2023-04-01"]  # 6 dates


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def utm_square(x: float, y: float, half: float = 160.0) -> dict:
    ring = [[x - half, y - half], [x + half, y - half], [x + half, y + half],
            [x - half, y + half], [x - half, y - half]]
    return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def utm_collection(*centres: tuple[float, float], epsg: int = 32631, half: float = 160.0) -> dict:
    return {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": f"EPSG:{epsg}"}},
            "features": [utm_square(x, y, half) for x, y in centres]}


BBOX = {"west": 5.00, "south": 51.20, "east": 5.006, "north": 51.204}


def graph(spatial_extent=BBOX, bands=("B04", "B08"), fmt="netCDF", options=None,
          temporal=TEMPORAL, collection="SENTINEL2_L2A", extra: dict | None = None,
          last: str = "load") -> dict:
    g = {"load": {"process_id": "load_collection", "arguments": {
        "id": collection, "spatial_extent": spatial_extent, "temporal_extent": temporal,
        "bands": list(bands) if bands else None}}}
    g.update(extra or {})
    g["save"] = {"process_id": "save_result", "arguments": {
        "data": {"from_node": last}, "format": fmt, "options": options or {}}, "result": True}
    return g


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------


def test_netcdf_bbox_utm_and_metadata(engine, tmp_path):
    assets = engine.execute(graph(), tmp_path)
    assert len(assets) == 1
    a = assets[0]
    assert isinstance(a, ResultAsset)
    assert a.name == "openEO.nc" and a.path.exists() and a.media_type == "application/x-netcdf"
    assert a.epsg == 32631 and a.feature_index is None
    ds = xr.open_dataset(a.path, mask_and_scale=False)
    assert list(ds.data_vars) == ["B04", "B08", "crs"]
    assert ds["B04"].dims == ("t", "y", "x") and ds["B04"].dtype == np.uint16
    assert ds["B04"].attrs["grid_mapping"] == "crs"
    crs = pyproj.CRS.from_wkt(ds["crs"].attrs["crs_wkt"])
    assert crs.to_epsg() == 32631
    assert pyproj.CRS.from_wkt(ds["crs"].attrs["spatial_ref"]).to_epsg() == 32631
    assert ds.sizes["t"] == 6 and a.shape == (ds.sizes["y"], ds.sizes["x"])
    # 10 m grid snapped to multiples of 10 m
    assert np.allclose(np.diff(ds["x"].values), 10) and np.allclose(np.diff(ds["y"].values), -10)
    assert (ds["x"].values[0] - 5) % 10 == 0
    assert a.transform[0] == 10 and a.transform[4] == -10
    w, s, e, n = a.bbox_4326
    assert w <= BBOX["west"] + 1e-3 and e >= BBOX["east"] - 1e-3
    assert a.bands[0]["name"] == "B04" and a.bands[0]["common_name"] == "red"
    assert a.bands[0]["center_wavelength"] == pytest.approx(0.665)
    assert 0 < a.bands[0]["statistics"]["mean"] < 10000
    assert a.start_datetime.isoformat().startswith("2023-03-04")


def test_same_request_same_bytes(engine, tmp_path):
    g = graph(spatial_extent=utm_collection((600020, 5700020), (601000, 5701000)),
              options={"sample_by_feature": True})
    a1 = engine.execute(g, tmp_path / "a")
    a2 = engine.execute(g, tmp_path / "b")
    assert [a.name for a in a1] == ["openEO_0.nc", "openEO_1.nc"]
    assert [sha(a.path) for a in a1] == [sha(a.path) for a in a2]


def test_sample_by_feature_crops_each_feature(engine, tmp_path):
    centres = [(600020, 5700020), (605000, 5702000), (640000, 5690000)]
    assets = engine.execute(graph(spatial_extent=utm_collection(*centres), options={"sample_by_feature": True}),
                            tmp_path)
    assert [a.feature_index for a in assets] == [0, 1, 2]
    for (cx, cy), a in zip(centres, assets):
        assert a.name == f"openEO_{a.feature_index}.nc"
        assert a.shape == (32, 32)
        assert a.bbox_native == [cx - 160, cy - 160, cx + 160, cy + 160]
        ds = xr.open_dataset(a.path)
        assert ds["x"].min() == cx - 155 and ds["y"].max() == cy + 155


def test_ndvi_matches_bands(engine, tmp_path):
    extent = utm_collection((600020, 5700020))
    bands = engine.execute(graph(spatial_extent=extent), tmp_path / "bands")[0]
    g = graph(spatial_extent=extent, last="reduce", extra={
        "ndvi": {"process_id": "ndvi", "arguments": {"data": {"from_node": "load"}}},
        "reduce": {"process_id": "reduce_dimension", "arguments": {
            "data": {"from_node": "ndvi"}, "dimension": "t", "reducer": {"process_graph": {
                "m": {"process_id": "mean", "arguments": {"data": {"from_parameter": "data"}}, "result": True}}}}},
    })
    nd = engine.execute(g, tmp_path / "ndvi")[0]
    ds = xr.open_dataset(bands.path)
    red, nir = ds["B04"].astype("float64"), ds["B08"].astype("float64")
    expected = ((nir - red) / (nir + red)).mean("t").values
    got = xr.open_dataset(nd.path)
    var = [v for v in got.data_vars if v != "crs"][0]
    assert got[var].dims == ("y", "x")
    np.testing.assert_allclose(got[var].values, expected, rtol=1e-5, atol=1e-6)
    assert 0.0 < float(np.nanmean(expected)) < 0.9


def test_gtiff_crs_and_transform(engine, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    g = graph(spatial_extent=utm_collection((600020, 5700020)), temporal=["2023-03-01", "2023-03-06"],
              fmt="GTiff")
    (a,) = engine.execute(g, tmp_path)
    assert a.name == "openEO.tif" and a.media_type.startswith("image/tiff")
    with rasterio.open(a.path) as src:
        assert src.crs.to_epsg() == 32631
        assert src.count == 2 and src.dtypes[0] == "uint16"
        assert tuple(src.transform)[:6] == (10.0, 0.0, 599860.0, 0.0, -10.0, 5700180.0)
        assert src.descriptions == ("B04", "B08")


def test_instant_result(tmp_path):
    (a,) = write_instant_result(tmp_path)
    ds = xr.open_dataset(a.path)
    assert ds["B04"].shape == (1, 2, 2)
    assert pyproj.CRS.from_wkt(ds["crs"].attrs["crs_wkt"]).to_epsg() == a.epsg == 32631


@pytest.mark.parametrize("g, exc", [
    (graph(collection="NOPE"), CollectionNotFound),
    (graph(bands=("B04", "B99")), ProcessParameterInvalid),
    (graph(fmt="XLSX"), FormatUnsupported),
    (graph(spatial_extent={"west": 5.1, "south": 51.2, "east": 5.0, "north": 51.3}), ProcessParameterInvalid),
    (graph(temporal=["2023-03-01", "2023-03-02"]), ProcessParameterInvalid),
    (graph(spatial_extent={"west": 4.0, "south": 50.0, "east": 5.0, "north": 51.0}), ProcessParameterInvalid),
    (graph(spatial_extent={"type": "Polygon", "coordinates": [[[0, 0], [1]]]}), ProcessParameterInvalid),
])
def test_bad_input_errors(engine, tmp_path, g, exc):
    with pytest.raises(exc) as info:
        engine.execute(g, tmp_path)
    assert info.value.status < 500 and info.value.message


def test_unknown_process(engine, tmp_path):
    g = graph(last="x", extra={"x": {"process_id": "frobnicate", "arguments": {"data": {"from_node": "load"}}}})
    with pytest.raises(ProcessUnsupported):
        engine.execute(g, tmp_path)
    assert engine.validate(g)[0]["code"] == "ProcessUnsupported"
    assert engine.validate(graph()) == []


def test_cancel(engine, tmp_path):
    ev = threading.Event()
    ev.set()
    with pytest.raises(JobCanceled):
        engine.execute(graph(), tmp_path, cancel_event=ev)


def test_internal_errors_are_wrapped(engine, tmp_path):
    g = graph(last="x", extra={"x": {"process_id": "linear_scale_range", "arguments": {
        "x": {"from_node": "load"}, "inputMin": "a", "inputMax": None}}})
    with pytest.raises(OpenEOApiError) as info:
        engine.execute(g, tmp_path)
    assert info.value.status == 500 and info.value.code == "Internal"
