"""Execution engine of the embedded backend, called in-process (no HTTP)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pyproj
import pytest
import xarray as xr

from eoextract.backend._api_errors import (
    CollectionNotFound,
    FormatUnsupported,
    OpenEOApiError,
    ProcessParameterInvalid,
    ProcessUnsupported,
)
from eoextract.backend._execution import Engine
from eoextract.backend._execution_context import JobCanceled
from eoextract.backend._instant_result import write_instant_result
from eoextract.backend._output_formats import ResultAsset

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


# --------------------------------------------------------------------------------------------
# Vector inputs served on loopback (seed 004: load_url of a GeoParquet, filter_spatial)


@pytest.fixture(scope="module")
def file_server(tmp_path_factory):
    """A plain HTTP server on 127.0.0.1 serving a temporary folder."""
    import functools
    import http.server
    import socketserver

    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def seed004_graph(url: str, fmt: str = "Parquet") -> dict:
    """load_collection without spatial extent, filter_spatial(load_url), renamed bands, sample_by_feature."""
    bands = ["B02", "B04", "B08", "SCL"]
    return {
        "load": {"process_id": "load_collection", "arguments": {
            "id": "SENTINEL2_L2A", "spatial_extent": None, "temporal_extent": TEMPORAL, "bands": bands,
            "properties": {"eo:cloud_cover": {"process_graph": {"lte": {
                "process_id": "lte", "arguments": {"x": {"from_parameter": "value"}, "y": 95}, "result": True}}}}}},
        "url": {"process_id": "load_url", "arguments": {"url": url, "format": fmt}},
        "filter": {"process_id": "filter_spatial", "arguments": {"data": {"from_node": "load"},
                                                                "geometries": {"from_node": "url"}}},
        "rename": {"process_id": "rename_labels", "arguments": {
            "data": {"from_node": "filter"}, "dimension": "bands", "target": [f"S2-L2A-{b}" for b in bands]}},
        "scale": {"process_id": "linear_scale_range", "arguments": {
            "x": {"from_node": "rename"}, "inputMin": 0, "inputMax": 65534, "outputMin": 0, "outputMax": 65534}},
        "save": {"process_id": "save_result", "arguments": {
            "data": {"from_node": "scale"}, "format": "NetCDF", "options": {"sample_by_feature": True}},
            "result": True},
    }


def test_seed004_flow_with_geoparquet_url(engine, tmp_path, file_server):
    import geopandas as gpd
    from shapely.geometry import box

    root, base = file_server
    centres = [(600020, 5700020), (604000, 5703000)]
    gdf = gpd.GeoDataFrame({"sample_id": ["a", "b"]},
                           geometry=[box(x - 320, y - 320, x + 320, y + 320) for x, y in centres], crs=32631)
    gdf.to_parquet(root / "samples.parquet")
    assets = engine.execute(seed004_graph(f"{base}/samples.parquet"), tmp_path)
    assert [a.name for a in assets] == ["openEO_0.nc", "openEO_1.nc"]
    for (cx, cy), a in zip(centres, assets):
        assert a.shape == (64, 64) and a.bbox_native == [cx - 320, cy - 320, cx + 320, cy + 320]
        ds = xr.open_dataset(a.path, mask_and_scale=False)
        assert [v for v in ds.data_vars if v != "crs"] == ["S2-L2A-B02", "S2-L2A-B04", "S2-L2A-B08", "S2-L2A-SCL"]
        assert ds["S2-L2A-B04"].dtype == np.uint16  # integral after linear_scale_range: stays uint16
        assert set(np.unique(ds["S2-L2A-SCL"].values)) <= {4, 5, 6, 8, 9, 10}
        assert a.bands[0]["name"] == "S2-L2A-B02" and a.bands[0]["common_name"] == "blue"


def test_geojson_url_in_4326_and_feature_id(engine, tmp_path, file_server):
    import json

    root, base = file_server
    tr = pyproj.Transformer.from_crs(32631, 4326, always_xy=True)
    ring = [tr.transform(x, y) for x, y in [(600000, 5700000), (600200, 5700000), (600200, 5700200),
                                            (600000, 5700200), (600000, 5700000)]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "field-1"}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}
    (root / "one.geojson").write_text(json.dumps(doc))
    g = seed004_graph(f"{base}/one.geojson", fmt="GeoJSON")
    g["save"]["arguments"]["options"]["feature_id_property"] = "id"
    (a,) = engine.execute(g, tmp_path)
    assert a.name == "openEO_field-1.nc" and a.feature_index == 0 and a.epsg == 32631
    assert a.shape == (20, 20)


def test_load_url_rejects_remote_hosts(engine, tmp_path):
    with pytest.raises(ProcessParameterInvalid, match="loopback"):
        engine.execute(seed004_graph("https://example.com/x.parquet"), tmp_path)


# --------------------------------------------------------------------------------------------
# User-defined processes


def test_udp_is_inlined_with_defaults(engine, tmp_path):
    udp = {"id": "s2_ndvi", "parameters": [
        {"name": "extent", "schema": {}}, {"name": "start", "schema": {}, "default": "2023-03-01"}],
        "process_graph": {
            "load": {"process_id": "load_collection", "arguments": {
                "id": "SENTINEL2_L2A", "spatial_extent": {"from_parameter": "extent"},
                "temporal_extent": [{"from_parameter": "start"}, "2023-03-15"], "bands": ["B04", "B08"]}},
            "ndvi": {"process_id": "ndvi", "arguments": {"data": {"from_node": "load"}}, "result": True}}}
    calls = []

    def resolver(pid, namespace):
        calls.append((pid, namespace))
        return udp if pid == "s2_ndvi" else None

    g = {"call": {"process_id": "s2_ndvi", "namespace": "user",
                  "arguments": {"extent": utm_collection((600020, 5700020))}},
         "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "call"}, "format": "netCDF"},
                  "result": True}}
    (a,) = engine.execute(g, tmp_path, udp_resolver=resolver)
    assert calls == [("s2_ndvi", "user")]
    ds = xr.open_dataset(a.path)
    assert ds.sizes["t"] == 3 and float(ds[[v for v in ds.data_vars if v != "crs"][0]].max()) <= 1.0
    assert engine.validate(g, udp_resolver=resolver) == []
    assert engine.validate(g)[0]["code"] == "ProcessUnsupported"


# --------------------------------------------------------------------------------------------
# Processes on our cubes


def _cb(pid: str, **args) -> dict:
    return {"process_graph": {"n": {"process_id": pid, "arguments": args, "result": True}}}


P = {"from_parameter": "x"}


def _run(engine, tmp_path, nodes: dict, last: str, fmt: str = "netCDF", **kw) -> tuple[ResultAsset, xr.Dataset | str]:
    (a,) = engine.execute(graph(spatial_extent=utm_collection((600020, 5700020)), extra=nodes, last=last,
                                fmt=fmt, **kw), tmp_path)
    return a, (xr.open_dataset(a.path) if a.name.endswith(".nc") else a.path.read_text())


def test_filters_and_apply(engine, tmp_path):
    L = {"from_node": "load"}
    a, ds = _run(engine, tmp_path / "1", {
        "ft": {"process_id": "filter_temporal", "arguments": {"data": L, "extent": ["2023-03-10", "2023-03-20"]}},
        "fb": {"process_id": "filter_bands", "arguments": {"data": {"from_node": "ft"}, "bands": ["B08"]}},
        "bb": {"process_id": "filter_bbox", "arguments": {"data": {"from_node": "fb"}, "extent": {
            "west": 599900, "east": 600000, "south": 5699900, "north": 5700000, "crs": 32631}}},
        "ap": {"process_id": "apply", "arguments": {"data": {"from_node": "bb"},
                                                   "process": _cb("multiply", x=P, y=0.5)}},
    }, last="ap")
    assert ds.sizes == {"t": 2, "y": 10, "x": 10} and list(ds.data_vars) == ["B08", "crs"]
    assert a.bbox_native == [599900, 5699900, 600000, 5700000]
    with pytest.raises(ProcessParameterInvalid, match="B99"):
        _run(engine, tmp_path / "2", {"fb": {"process_id": "filter_bands", "arguments": {
            "data": {"from_node": "load"}, "bands": ["B99"]}}}, last="fb")


def test_merge_s2_with_s1_and_resample(engine, tmp_path):
    ext = utm_collection((600020, 5700020))
    a, ds = _run(engine, tmp_path, {
        "s1": {"process_id": "load_collection", "arguments": {
            "id": "SENTINEL1_GRD", "spatial_extent": ext, "temporal_extent": TEMPORAL, "bands": ["VV", "VH"]}},
        "m": {"process_id": "merge_cubes", "arguments": {"cube1": {"from_node": "load"}, "cube2": {"from_node": "s1"}}},
        "r": {"process_id": "resample_spatial", "arguments": {"data": {"from_node": "m"}, "resolution": 20,
                                                              "method": "average"}},
    }, last="r")
    assert [v for v in ds.data_vars if v != "crs"] == ["B04", "B08", "VV", "VH"]
    assert a.shape == (16, 16) and a.transform[0] == 20
    assert ds.sizes["t"] == 10  # union: 6 S2 dates (every 5 days), 5 S1 dates (every 6 days), 1 shared
    assert float(ds["VV"].mean()) > 0


def test_mask_and_reduce_bands(engine, tmp_path):
    L = {"from_node": "load"}
    _, ds = _run(engine, tmp_path, {
        "nir": {"process_id": "filter_bands", "arguments": {"data": L, "bands": ["B08"]}},
        "gt": {"process_id": "apply", "arguments": {"data": {"from_node": "nir"}, "process": _cb("gt", x=P, y=3000)}},
        "m1": {"process_id": "reduce_dimension", "arguments": {"data": {"from_node": "gt"}, "dimension": "bands",
                                                               "reducer": _cb("first", data={"from_parameter": "data"})}},
        "mk": {"process_id": "mask", "arguments": {"data": L, "mask": {"from_node": "m1"}}},
    }, last="mk")
    nir = ds["B08"].values
    assert np.all(np.isnan(nir) | (nir <= 3000))


def test_aggregate_spatial_json_and_csv(engine, tmp_path):
    zones = utm_collection((600020, 5700020), (600100, 5700100), half=50)
    node = {"ag": {"process_id": "aggregate_spatial", "arguments": {
        "data": {"from_node": "load"}, "geometries": zones, "reducer": _cb("mean", data={"from_parameter": "data"})}}}
    a, text = _run(engine, tmp_path / "j", node, last="ag", fmt="JSON")
    import json

    doc = json.loads(text)
    assert a.media_type == "application/json" and len(doc) == 6
    first = doc["2023-03-04T00:00:00Z"]
    assert len(first) == 2 and len(first[0]) == 2 and 0 < first[0][0] < 10000
    a, text = _run(engine, tmp_path / "c", node, last="ag", fmt="CSV")
    lines = text.strip().splitlines()
    assert lines[0] == "date,feature_index,B04,B08" and len(lines) == 1 + 6 * 2


# --------------------------------------------------------------------------------------------
# Preparation, concurrency, cancellation, metadata


def test_extents_pushed_down_from_filters(engine, tmp_path):
    g = graph(spatial_extent=None, temporal=None, last="fs", extra={
        "ft": {"process_id": "filter_temporal", "arguments": {"data": {"from_node": "load"},
                                                              "extent": ["2023-03-01", "2023-03-11"]}},
        "fs": {"process_id": "filter_spatial", "arguments": {"data": {"from_node": "ft"},
                                                             "geometries": utm_collection((600020, 5700020))}},
    })
    (a,) = engine.execute(g, tmp_path)
    assert a.shape == (32, 32)
    assert xr.open_dataset(a.path).sizes["t"] == 2


def test_concurrent_executions_are_independent(engine, tmp_path):
    graphs = [graph(spatial_extent=utm_collection((600020 + 1000 * i, 5700020)),
                    options={"sample_by_feature": True}) for i in range(3)]
    serial = [sha(engine.execute(g, tmp_path / f"s{i}")[0].path) for i, g in enumerate(graphs)]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = sha(engine.execute(graphs[i], tmp_path / f"p{i}")[0].path)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(3)] == serial


def test_cancel_between_features(engine, tmp_path):
    ev = threading.Event()
    messages: list[str] = []

    def log(level: str, message: str) -> None:
        messages.append(message)
        if message.startswith("load_collection"):
            ev.set()

    g = graph(spatial_extent=utm_collection((600020, 5700020), (601020, 5700020)), options={"sample_by_feature": True})
    with pytest.raises(JobCanceled):
        engine.execute(g, tmp_path, log=log, cancel_event=ev)
    assert not list(tmp_path.glob("openEO_1.*"))
    assert any("sample_by_feature" in m for m in messages)


def test_metadata_endpoints(engine):
    ids = {p["id"] for p in engine.process_specs()}
    assert {"load_collection", "save_result", "ndvi", "reduce_dimension", "aggregate_spatial", "load_url",
            "filter_spatial", "merge_cubes", "resample_spatial", "mask"} <= ids
    assert {c["id"] for c in engine.collections()} == {"SENTINEL2_L2A", "SENTINEL1_GRD"}
    assert "cube:dimensions" in engine.collection("SENTINEL1_GRD")
    with pytest.raises(CollectionNotFound):
        engine.collection("NOPE")
    ff = engine.file_formats()
    assert {"netCDF", "GTiff", "JSON", "CSV"} <= set(ff["output"]) and "GeoJSON" in ff["input"]


def test_validate_reports_without_running(engine):
    assert engine.validate(graph(collection="NOPE"))[0]["code"] == "CollectionNotFound"
    assert engine.validate(graph(fmt="XLSX"))[0]["code"] == "FormatUnsupported"
    assert engine.validate({"a": {"process_id": "load_collection", "arguments": {}}})[0]["code"] == \
        "ProcessGraphInvalid"  # no result node
    assert engine.validate("nonsense")[0]["code"] == "ProcessGraphInvalid"


@pytest.mark.parametrize("extent, match", [
    ({"west": -180, "south": -80, "east": 180, "north": 80}, "too large"),
    (utm_collection((600020, 5700020))["features"][0]["geometry"], "out of range"),  # UTM without crs member
    ({"type": "FeatureCollection", "features": []}, "no features"),
])
def test_extent_errors_are_clear(engine, tmp_path, extent, match):
    with pytest.raises(ProcessParameterInvalid, match=match):
        engine.execute(graph(spatial_extent=extent), tmp_path)


def test_invalid_polygon_is_repaired(engine, tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[5.0, 51.2], [5.004, 51.204], [5.004, 51.2], [5.0, 51.204],
                                                  [5.0, 51.2]]]}
    logs: list[str] = []
    (a,) = engine.execute(graph(spatial_extent=bowtie), tmp_path, log=lambda lvl, msg: logs.append(msg))
    assert a.shape[0] > 10 and any("repaired" in m for m in logs)


def test_features_in_two_utm_zones(engine, tmp_path):
    def square(lon: float, lat: float, d: float = 0.002) -> dict:
        ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d], [lon - d, lat - d]]
        return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}

    fc = {"type": "FeatureCollection", "features": [square(5.95, 51.0), square(6.05, 51.0), square(-58.4, -34.6)]}
    assets = engine.execute(graph(spatial_extent=fc, options={"sample_by_feature": True}), tmp_path)
    assert [a.epsg for a in assets] == [32631, 32632, 32721]
    for a in assets:
        assert pyproj.CRS.from_wkt(xr.open_dataset(a.path)["crs"].attrs["crs_wkt"]).to_epsg() == a.epsg


def test_temporal_compositing_and_interpolation_keep_date_labels(engine, tmp_path):
    L = {"from_node": "load"}
    data = {"from_parameter": "data"}
    _, ds = _run(engine, tmp_path / "m", {"f": {"process_id": "aggregate_temporal_period", "arguments": {
        "data": L, "period": "month", "reducer": _cb("median", data=data)}}}, last="f",
        temporal=["2023-03-01", "2023-05-01"])
    assert [str(t)[:10] for t in ds["t"].values] == ["2023-03-01", "2023-04-01"]
    _, ds = _run(engine, tmp_path / "i", {"f": {"process_id": "apply_dimension", "arguments": {
        "data": L, "dimension": "t", "process": _cb("array_interpolate_linear", data=data)}}}, last="f")
    assert str(ds["t"].values[0])[:10] == "2023-03-04" and ds.sizes["t"] == 6


def test_library_errors_keep_their_openeo_codes(engine, tmp_path):
    g = graph(last="r", extra={"r": {"process_id": "rename_labels", "arguments": {
        "data": {"from_node": "load"}, "dimension": "bands", "target": ["B08", "X"]}}})
    with pytest.raises(OpenEOApiError) as info:
        engine.execute(g, tmp_path)
    assert info.value.status == 400 and info.value.code == "LabelExists"
    g = graph(last="r", extra={"r": {"process_id": "reduce_dimension", "arguments": {
        "data": {"from_node": "load"}, "dimension": "nope", "reducer": _cb("mean", data={"from_parameter": "data"})}}})
    with pytest.raises(OpenEOApiError) as info:
        engine.execute(g, tmp_path)
    assert info.value.status == 400 and info.value.code == "DimensionNotAvailable"
