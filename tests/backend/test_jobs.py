"""Batch jobs executed by worker processes, synchronous processing, user-defined processes."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import requests
import xarray as xr
from api_helpers import BBOX, auth_headers, checksum, title  # noqa: F401
from openeo.extra.job_management import MultiBackendJobManager, create_job_db
from openeo.extra.job_management.process_based import ProcessBasedJobCreator
from openeo.rest import OpenEoApiError


def _cube(connection, bands=("B04", "B08"), bbox=BBOX, end="2021-06-11"):
    return connection.load_collection(
        "SENTINEL2_L2A",
        spatial_extent=bbox,
        temporal_extent=["2021-06-01", end],
        bands=list(bands),
        fetch_metadata=False,  # let bad band names reach the backend
    )


def _wait(job, statuses=("finished", "error", "canceled"), timeout=120.0):
    deadline = time.monotonic() + timeout
    while (status := job.status()) not in statuses:
        assert time.monotonic() < deadline, f"job still {status}"
        time.sleep(0.1)
    return status


def test_job_runs_in_worker_and_ndvi_matches_bands(connection, title, tmp_path):
    bands_job = _cube(connection).create_job(out_format="NetCDF", title=title + "-bands")
    ndvi_job = _cube(connection).ndvi(nir="B08", red="B04").create_job(
        out_format="NetCDF", title=title + "-ndvi"
    )
    bands_job.start()
    ndvi_job.start()
    assert _wait(bands_job) == "finished"
    assert _wait(ndvi_job) == "finished"
    statuses = [e["message"] for e in bands_job.logs()]
    assert any("running" in m.lower() for m in statuses)

    bands_path = bands_job.get_results().download_file(tmp_path / "bands.nc")
    ndvi_path = ndvi_job.get_results().download_file(tmp_path / "ndvi.nc")
    with xr.open_dataset(bands_path) as bands, xr.open_dataset(ndvi_path) as ndvi:
        red = bands["B04"].astype("float64")
        nir = bands["B08"].astype("float64")
        expected = ((nir - red) / (nir + red)).values
        (var,) = [v for v in ndvi.data_vars if ndvi[v].dims == bands["B04"].dims]
        np.testing.assert_allclose(ndvi[var].values, expected, rtol=1e-5, atol=1e-6)


def test_same_job_twice_gives_same_checksums(connection, title):
    metas = []
    for i in range(2):
        job = _cube(connection).create_job(out_format="NetCDF", title=f"{title}-{i}")
        job.start()
        assert _wait(job) == "finished"
        metas.append(job.get_results().get_metadata()["assets"])
    assert [a["file:checksum"] for a in metas[0].values()] == [
        a["file:checksum"] for a in metas[1].values()
    ]


def test_results_asset_metadata_and_items(connection, title):
    job = _cube(connection).create_job(out_format="NetCDF", title=title)
    job.start()
    assert _wait(job) == "finished"
    meta = job.get_results().get_metadata()
    assert meta["stac_version"] == "1.1.0"
    (asset,) = meta["assets"].values()
    assert asset["proj:code"].startswith("EPSG:326")
    assert len(asset["proj:shape"]) == 2 and len(asset["proj:bbox"]) == 4
    assert asset["geometry"]["type"] == "Polygon"
    assert [b["name"] for b in asset["bands"]] == ["B04", "B08"]
    items = [link["href"] for link in meta["links"] if link["rel"] == "item"]
    assert len(items) == 1
    item = requests.get(items[0], timeout=10).json()
    assert item["type"] == "Feature" and item["geometry"]["type"] == "Polygon"
    (item_asset,) = item["assets"].values()
    assert item_asset["file:checksum"] == asset["file:checksum"]


def test_cdse_result_style_per_job(connection, title):
    job = _cube(connection).create_job(
        out_format="NetCDF", title=title, job_options={"eoextract_result_style": "cdse"}
    )
    job.start()
    assert _wait(job) == "finished"
    meta = job.get_results().get_metadata()
    assert meta["stac_version"] == "1.0.0" and meta["type"] == "Collection"
    (asset,) = meta["assets"].values()
    assert "file:checksum" not in asset and "file:size" not in asset
    assert isinstance(asset["proj:epsg"], int)
    assert len(asset["proj:bbox"]) == 4 and len(asset["proj:shape"]) == 2
    assert [b["name"] for b in asset["eo:bands"]] == ["B04", "B08"]
    assert "statistics" in asset["raster:bands"][0]
    item_links = [link for link in meta["links"] if link["rel"] == "item"]
    assert len(item_links) == 1
    item = requests.get(item_links[0]["href"], timeout=10).json()
    assert item["stac_version"] == "1.0.0" and "proj:epsg" in item["properties"]


def test_failing_job_logs_its_error(connection, title):
    job = _cube(connection, bands=["B04", "NOPE"]).create_job(out_format="NetCDF", title=title)
    job.start()
    assert _wait(job) == "error"
    errors = job.logs(level="error")
    assert errors and "NOPE" in errors[-1]["message"]
    with pytest.raises(OpenEoApiError) as info:
        job.get_results().get_metadata()
    assert info.value.http_status_code == 424
    # the server keeps serving
    assert connection.describe_account()["user_id"]


def test_cancel_running_job_frees_the_worker(connection, title):
    big = {"west": 5.0, "south": 51.0, "east": 5.1, "north": 51.1}  # ~20 s of work
    job = _cube(connection, bands=["B02", "B03", "B04", "B08"], bbox=big, end="2021-09-01")
    job = job.create_job(out_format="NetCDF", title=title)
    job.start()
    deadline = time.monotonic() + 120
    while not any("load_collection" in e["message"] for e in job.logs()):  # executing now
        assert time.monotonic() < deadline and job.status() in ("queued", "running")
        time.sleep(0.05)
    assert job.status() == "running"
    job.stop()
    assert job.status() == "canceled"
    with pytest.raises(OpenEoApiError):
        job.get_results().get_metadata()
    # the workers are usable again afterwards
    small = [_cube(connection).create_job(out_format="NetCDF", title=f"{title}-{i}") for i in range(2)]
    for other in small:
        other.start()
    assert [_wait(other) for other in small] == ["finished", "finished"]
    assert job.status() == "canceled"


def test_restart_a_finished_job(connection, title):
    job = _cube(connection).create_job(out_format="NetCDF", title=title)
    job.start()
    assert _wait(job) == "finished"
    first = job.get_results().get_metadata()["assets"]
    job.start()
    assert _wait(job) == "finished"
    assert job.get_results().get_metadata()["assets"].keys() == first.keys()


# -- synchronous processing and validation ---------------------------------------------
def test_synchronous_result(connection):
    data = _cube(connection).ndvi(nir="B08", red="B04").download(format="NetCDF")
    assert data[:4] in (b"\x89HDF", b"CDF\x01", b"CDF\x02")


@pytest.mark.parametrize(
    ("cube_args", "needle"),
    [
        ({"bands": ["B04", "B99"]}, "B99"),
        ({"bbox": {"west": 5.0, "south": 51.0, "east": 5.0, "north": 51.0}}, "extent"),
        ({"bbox": {"west": 5.0, "south": 51.0, "east": 4.0, "north": 50.0}}, "extent"),
        ({"bbox": {"west": 0.0, "south": 40.0, "east": 10.0, "north": 50.0}}, "too large"),
    ],
)
def test_bad_input_is_a_clear_4xx(connection, cube_args, needle):
    with pytest.raises(OpenEoApiError) as info:
        _cube(connection, **cube_args).download(format="NetCDF")
    assert 400 <= info.value.http_status_code < 500
    assert needle.lower() in info.value.message.lower()


def test_malformed_geometry_is_a_4xx(connection):
    cube = _cube(connection).filter_spatial({"type": "Polygon", "coordinates": [[[5, 51], [5]]]})
    with pytest.raises(OpenEoApiError) as info:
        cube.download(format="NetCDF")
    assert 400 <= info.value.http_status_code < 500


def test_unknown_collection_and_format(connection):
    with pytest.raises(OpenEoApiError) as info:
        connection.describe_collection("NOPE")
    assert info.value.code == "CollectionNotFound" and info.value.http_status_code == 404
    graph = {
        "load": {"process_id": "load_collection",
                 "arguments": {"id": "SENTINEL2_L2A", "spatial_extent": BBOX,
                               "temporal_extent": ["2021-06-01", "2021-06-06"], "bands": ["B04"]}},
        "save": {"process_id": "save_result",
                 "arguments": {"data": {"from_node": "load"}, "format": "NOPE"}, "result": True},
    }
    with pytest.raises(OpenEoApiError) as info:
        connection.download(graph, validate=False)
    assert info.value.code == "FormatUnsupported"


def test_validation_endpoint(connection):
    graph = {"x": {"process_id": "no_such_process", "arguments": {}, "result": True}}
    errors = connection.validate_process_graph(graph)
    assert errors and errors[0]["code"] == "ProcessUnsupported"
    ok = _cube(connection).save_result("NetCDF")
    assert connection.validate_process_graph(ok) == []


def test_metadata_endpoints(connection):
    ids = [c["id"] for c in connection.list_collections()]
    assert "SENTINEL2_L2A" in ids
    s2 = connection.describe_collection("SENTINEL2_L2A")
    assert "cube:dimensions" in s2
    assert any(p["id"] == "ndvi" for p in connection.list_processes())
    formats = connection.list_output_formats()
    assert "netCDF" in {k for k in formats} | {k.lower() for k in formats} or "NetCDF" in formats


# -- user-defined processes ------------------------------------------------------------
def _udp_graph():
    return {
        "load": {
            "process_id": "load_collection",
            "arguments": {
                "id": "SENTINEL2_L2A",
                "spatial_extent": {"from_parameter": "bbox"},
                "temporal_extent": ["2021-06-01", "2021-06-11"],
                "bands": ["B04", "B08"],
            },
        },
        "ndvi": {"process_id": "ndvi",
                 "arguments": {"data": {"from_node": "load"}, "nir": "B08", "red": "B04"}},
        "save": {"process_id": "save_result",
                 "arguments": {"data": {"from_node": "ndvi"}, "format": "NetCDF"}, "result": True},
    }


_BBOX_PARAM = {"name": "bbox", "description": "Extent", "schema": {"type": "object"}}


def test_process_graphs_crud(connection):
    udp = connection.save_user_defined_process("crud_udp", _udp_graph(), parameters=[_BBOX_PARAM])
    assert "crud_udp" in [p["id"] for p in connection.list_user_defined_processes()]
    described = udp.describe()
    assert described["process_graph"] == _udp_graph()
    assert described["parameters"][0]["name"] == "bbox"
    udp.delete()
    with pytest.raises(OpenEoApiError) as info:
        udp.describe()
    assert info.value.http_status_code == 404


def test_job_calling_stored_udp(connection, title):
    connection.save_user_defined_process("stored_ndvi", _udp_graph(), parameters=[_BBOX_PARAM])
    cube = connection.datacube_from_process("stored_ndvi", bbox=BBOX)
    job = connection.create_job(cube, title=title)
    job.start()
    assert _wait(job) == "finished", job.logs()


def test_remote_namespace_must_be_loopback(connection, title):
    graph = {"x": {"process_id": "p", "namespace": "https://example.com/p.json",
                   "arguments": {}, "result": True}}
    with pytest.raises(OpenEoApiError) as info:
        connection.download(graph, validate=False)
    assert 400 <= info.value.http_status_code < 500
    assert "127.0.0.1" in info.value.message


@pytest.mark.slow
def test_process_based_job_creator_with_loopback_namespace(local_backend, connection, tmp_path):
    connection.save_user_defined_process("remote_ndvi", _udp_graph(), parameters=[_BBOX_PARAM])
    namespace = f"{local_backend.url}processes/eoextract/remote_ndvi"
    public = requests.get(namespace, timeout=10).json()  # readable without a token
    assert public["id"] == "remote_ndvi" and public["parameters"][0]["name"] == "bbox"

    creator = ProcessBasedJobCreator(process_id="remote_ndvi", namespace=namespace)
    boxes = [dict(BBOX, west=5.0 + i * 0.01, east=5.005 + i * 0.01) for i in range(2)]
    df = pd.DataFrame({"bbox": boxes, "title": [f"pbjc-{i}" for i in range(2)]})
    manager = MultiBackendJobManager(poll_sleep=0.2, root_dir=tmp_path)
    manager.add_backend("local", connection=connection, parallel_jobs=2)
    job_db = create_job_db(tmp_path / "jobs.csv", df=df)
    manager.run_jobs(start_job=creator, job_db=job_db)
    final = job_db.read()
    assert list(final["status"]) == ["finished", "finished"]
    job = connection.job(final["id"].iloc[0])
    node = next(iter(job.describe()["process"]["process_graph"].values()))
    assert node["namespace"] == namespace


@pytest.mark.slow
def test_openeo_job_manager_runs_20_instant_jobs(connection, tmp_path):
    df = pd.DataFrame({"title": [f"mbjm-{i}" for i in range(20)]})

    def start_job(row, connection, **_):
        return _cube(connection).create_job(
            title=row["title"], job_options={"eoextract_mode": "instant"}, validate=False
        )

    manager = MultiBackendJobManager(poll_sleep=0.1, root_dir=tmp_path)
    manager.add_backend("local", connection=connection, parallel_jobs=20)
    job_db = create_job_db(tmp_path / "jobs.csv", df=df)
    t0 = time.monotonic()
    manager.run_jobs(start_job=start_job, job_db=job_db)
    final = job_db.read()
    assert (final["status"] == "finished").all(), final["status"].value_counts()
    assert time.monotonic() - t0 < 60
    downloaded = list(tmp_path.glob("job_*/*.nc"))
    assert len(downloaded) == 20
    _ = checksum  # imported for other modules
