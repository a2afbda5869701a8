"""The production profile of the embedded backend, through the unchanged openeo client.

Per-user job limits with openeo-geopyspark-driver's error, modelled usage and costs, signed
asset URLs that expire, CDSE results documents and NetCDFs, paginated listings with a long
history, and eoextract's job manager against all of it.
"""

from __future__ import annotations

import os
import re
import time
import uuid

import numpy as np
import pandas as pd
import pytest
import requests
import xarray as xr
from openeo.rest import OpenEoApiError

from eoextract._util.redact import redact, redact_data
from eoextract.backend import BackendProfile, LocalBackend
from eoextract.backend._cdse_netcdf import apply_cdse_crs
from eoextract.backend._usage import job_usage
from eoextract.jobs import JobManager
from eoextract.jobs.db import get_job_db

BBOX = {"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01}
LIMIT_MESSAGE = "Job was not started because concurrent job limit (2) is reached."
HISTORY = int(os.environ.get("EOEXTRACT_TEST_HISTORY", "2000"))


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _cube(connection, bbox=BBOX, end="2021-06-10"):
    return connection.load_collection(
        "SENTINEL2_L2A", spatial_extent=bbox, temporal_extent=["2021-06-01", end], bands=["B04"]
    )


def _job(connection, title=None, delay_s=None, **options):
    options = {"eoextract_mode": "instant", **options}
    if delay_s is not None:
        options.update(eoextract_fault="slow", eoextract_fault_delay_s=delay_s)
    return _cube(connection).create_job(
        title=title or f"p-{uuid.uuid4().hex[:8]}", out_format="NetCDF", job_options=options
    )


def _wait(job, statuses=("finished", "error", "canceled"), timeout=60.0):
    deadline = time.monotonic() + timeout
    while (status := job.status()) not in statuses:
        assert time.monotonic() < deadline, f"job still {status}"
        time.sleep(0.05)
    return status


# -- the profile object ----------------------------------------------------------------
def test_profiles_named_and_set_field_by_field():
    default, cdse = BackendProfile.named("default"), BackendProfile.named("cdse")
    assert default == BackendProfile()
    assert default.max_running_jobs is None and not default.report_usage
    assert default.asset_url_ttl_s is None and default.result_style is None
    assert (cdse.max_running_jobs, cdse.max_queued_jobs) == (2, 0)
    assert cdse.report_usage and cdse.result_style == "cdse" and cdse.asset_url_ttl_s > 0
    assert BackendProfile.named("cdse", asset_url_ttl_s=5).asset_url_ttl_s == 5
    with pytest.raises(ValueError, match="unknown backend profile"):
        BackendProfile.named("openeo-platform")
    with pytest.raises(ValueError, match="unknown BackendProfile field"):
        BackendProfile.named("cdse", max_jobs=3)
    with pytest.raises(ValueError):
        BackendProfile(max_running_jobs=0)


# -- job limits --------------------------------------------------------------------------
def test_running_limit_refuses_the_start_with_the_geopyspark_error():
    with LocalBackend(profile="cdse", workers=1) as backend:
        connection = backend.connect()
        jobs = [_job(connection, delay_s=30) for _ in range(4)]  # creating is never limited
        jobs[0].start()
        jobs[1].start()
        with pytest.raises(OpenEoApiError) as refused:
            jobs[2].start()
        assert refused.value.http_status_code == 400
        assert refused.value.code == "ConcurrentJobLimit"
        assert refused.value.message == LIMIT_MESSAGE
        assert jobs[2].status() == "created"  # left as it was
        assert [j.status() for j in jobs[:2]] == ["running", "running"]
        jobs[0].stop()  # a place is free again
        jobs[2].start()
        assert jobs[2].status() == "running"
        with pytest.raises(OpenEoApiError, match="concurrent job limit"):
            jobs[3].start()
        jobs[1].delete()  # deleting an active job frees its place too
        jobs[3].start()
        for job in (jobs[2], jobs[3]):
            job.stop()


def test_queued_limit_lets_jobs_wait_then_refuses():
    profile = BackendProfile(max_running_jobs=1, max_queued_jobs=1)
    with LocalBackend(profile=profile, workers=1) as backend:
        connection = backend.connect()
        running, waiting, refused = _job(connection, delay_s=30), _job(connection), _job(connection)
        running.start()
        waiting.start()
        time.sleep(0.2)
        assert waiting.status() == "queued"  # an instant job, but no running place
        with pytest.raises(OpenEoApiError) as exc:
            refused.start()
        assert (exc.value.http_status_code, exc.value.code) == (400, "ConcurrentJobLimit")
        assert exc.value.message == (
            "Job was not started because concurrent job limit (1) is reached "
            "and 1 job(s) are already waiting."
        )
        running.stop()
        assert _wait(waiting) == "finished"  # the waiting job got the free place
        messages = [entry["message"] for entry in waiting.logs()]
        assert any("waits for a free place" in m for m in messages)
        refused.start()
        assert _wait(refused) == "finished"


def test_default_profile_has_no_limits(local_backend):
    connection = local_backend.connect()
    jobs = [_job(connection, delay_s=30) for _ in range(3)]
    for job in jobs:
        job.start()
    assert {job.status() for job in jobs} == {"running"}
    for job in jobs:
        job.stop()


# -- usage and costs ---------------------------------------------------------------------
def test_usage_and_costs_are_reported_and_reproducible():
    with LocalBackend(profile="cdse", workers=1) as backend:
        connection = backend.connect()
        first, second = _job(connection), _job(connection)
        soft = _job(connection, eoextract_soft_error_fraction=0.4)
        bigger = _cube(connection, bbox={**BBOX, "east": 5.05, "north": 51.05}).create_job(
            out_format="NetCDF", job_options={"eoextract_mode": "instant"})
        metadata = []
        for job in (first, second, soft, bigger):
            job.start()
            assert _wait(job) == "finished"
            metadata.append(job.describe())
    usage = metadata[0]["usage"]
    assert {k: v["unit"] for k, v in usage.items()} == {
        "cpu": "cpu-seconds", "memory": "mb-seconds", "duration": "seconds",
        "input_pixel": "mega-pixel", "sentinelhub": "sentinelhub_processing_unit",
        "soft_errors": "fraction",
    }
    assert usage["input_pixel"]["value"] > 0 and usage["cpu"]["value"] > 0
    assert metadata[0]["costs"] > 0
    assert (metadata[1]["usage"], metadata[1]["costs"]) == (usage, metadata[0]["costs"])
    assert metadata[2]["usage"]["soft_errors"]["value"] == 0.4
    assert metadata[2]["costs"] == metadata[0]["costs"]
    assert metadata[3]["costs"] > metadata[0]["costs"]
    assert metadata[3]["usage"]["input_pixel"]["value"] > usage["input_pixel"]["value"]


def test_usage_model_follows_the_graph():
    def graph(bands, end):
        return {"load": {"process_id": "load_collection", "arguments": {
            "id": "SENTINEL2_L2A", "spatial_extent": BBOX, "bands": bands,
            "temporal_extent": ["2021-06-01", end]}, "result": True}}

    rates = {"credits_base": 0.5, "credits_per_cpu_hour": 1.0, "credits_per_megapixel": 0.01}
    one, _ = job_usage(graph(["B04"], "2021-06-06"), None, **rates)
    two, _ = job_usage(graph(["B04", "B08"], "2021-06-06"), None, **rates)
    later, _ = job_usage(graph(["B04"], "2021-06-16"), None, **rates)
    pixels = one["input_pixel"]["value"]
    assert two["input_pixel"]["value"] == pytest.approx(2 * pixels, rel=1e-4)
    assert later["input_pixel"]["value"] == pytest.approx(3 * pixels, rel=1e-4)
    assert job_usage(graph(["B04"], "2021-06-06"), None, **rates)[0] == one


def test_default_profile_keeps_the_wall_clock_duration_only(local_backend):
    job = _job(local_backend.connect())
    job.start()
    assert _wait(job) == "finished"
    metadata = job.describe()
    assert set(metadata["usage"]) == {"duration"} and "costs" not in metadata


# -- signed asset URLs that expire -----------------------------------------------------
@pytest.fixture()
def clocked_backend():
    """A CDSE backend whose URL clock can be moved forward (``backend.shift(seconds)``)."""
    with LocalBackend(profile=BackendProfile.named("cdse", asset_url_ttl_s=600),
                      workers=1) as backend:
        signer = backend.app.state.backend.signer
        offset = [0.0]
        signer._clock = lambda: time.time() + offset[0]
        backend.shift = lambda seconds: offset.__setitem__(0, offset[0] + seconds)
        yield backend


def test_expired_asset_url_is_refused_and_a_new_document_gives_a_fresh_one(clocked_backend):
    job = _job(clocked_backend.connect())
    job.start()
    assert _wait(job) == "finished"
    href = job.get_results().get_assets()[0].href
    assert re.search(r"/results/assets/[0-9a-f]{32}/openEO\.nc\?expires=\d+$", href)
    ok = requests.get(href, timeout=10)
    assert ok.status_code == 200 and ok.content[:4] == b"\x89HDF"
    clocked_backend.shift(601)
    expired = requests.get(href, timeout=10)
    assert expired.status_code == 410
    assert expired.json()["code"] == "ResultLinkExpired"
    assert "GET /jobs/" in expired.json()["message"]
    fresh = job.get_results().get_assets()[0].href
    assert fresh != href
    assert requests.get(fresh, timeout=10).content == ok.content
    tampered = re.sub(r"expires=\d+", "expires=9999999999", fresh)
    assert requests.get(tampered, timeout=10).status_code == 404  # the signature covers it
    assert requests.get(fresh.split("?")[0], timeout=10).status_code == 404


def test_expired_status_can_be_403():
    profile = BackendProfile.named("cdse", asset_url_ttl_s=1, expired_url_status=403)
    with LocalBackend(profile=profile, workers=1) as backend:
        job = _job(backend.connect())
        job.start()
        assert _wait(job) == "finished"
        href = job.get_results().get_assets()[0].href
        backend.app.state.backend.signer._clock = lambda: time.time() + 5
        answer = requests.get(href, timeout=10)
        assert (answer.status_code, answer.json()["code"]) == (403, "ResultLinkExpired")


def test_signed_urls_are_redacted():
    href = ("http://127.0.0.1:8080/jobs/j-0123/results/assets/"
            "a8d3448e46aba3c1410ba55af875c4c6/openEO_0.nc?expires=1796491006")
    assert "a8d3448e46aba3c1410ba55af875c4c6" not in redact(href)
    assert "1796491006" not in redact(f"download of {href} failed")
    kept = redact_data({"href": href})["href"]  # usable data keeps non-credential queries
    assert "a8d3448e46aba3c1410ba55af875c4c6" not in kept and kept.endswith("openEO_0.nc?expires=1796491006")


# -- CDSE results documents and NetCDFs ------------------------------------------------
def test_cdse_results_document(clocked_backend):
    job = _job(clocked_backend.connect())
    job.start()
    assert _wait(job) == "finished"
    document = job.get_results().get_metadata()
    assert document["stac_version"] == "1.0.0" and document["type"] == "Collection"
    asset = next(iter(document["assets"].values()))
    assert "proj:epsg" in asset and "proj:code" not in asset
    assert "file:checksum" not in asset and "file:size" not in asset
    assert {"eo:bands", "raster:bands"} <= set(asset)
    assert [link["rel"] for link in document["links"]].count("item") == len(document["assets"])


def _netcdf(path, epsg):
    from eoextract.backend._file_writers import cf_crs_attrs

    data = xr.Dataset(
        {"B04": (("y", "x"), np.ones((2, 2), dtype="uint16"), {"grid_mapping": "crs"})},
        coords={"x": [0.0, 10.0], "y": [10.0, 0.0]},
    )
    data["crs"] = xr.DataArray(np.int32(0), attrs=cf_crs_attrs(epsg))
    data.to_netcdf(path)


def test_epsg_3035_netcdf_gets_a_bound_crs(tmp_path):
    import pyproj

    _netcdf(tmp_path / "laea.nc", 3035)
    _netcdf(tmp_path / "utm.nc", 32631)
    assets = [{"name": n, "path": f"{n}.nc", "epsg": e, "file_size": 0, "file_checksum": "x"}
              for n, e in (("laea", 3035), ("utm", 32631))]
    laea, utm = apply_cdse_crs(assets, tmp_path)
    with xr.open_dataset(tmp_path / "laea.nc") as ds:
        wkt = ds["crs"].attrs["crs_wkt"]
    assert wkt.startswith("BOUNDCRS[SOURCECRS[") and "ABRIDGEDTRANSFORMATION" in wkt
    crs = pyproj.CRS.from_wkt(wkt)
    assert crs.to_epsg() is None and crs.source_crs.to_epsg() == 3035
    assert laea["file_size"] == (tmp_path / "laea.nc").stat().st_size
    assert laea["file_checksum"].startswith("1220")
    assert utm["file_checksum"] == "x"  # other CRSs are left alone
    with xr.open_dataset(tmp_path / "utm.nc") as ds:
        assert pyproj.CRS.from_wkt(ds["crs"].attrs["crs_wkt"]).to_epsg() == 32631


@pytest.mark.slow
def test_epsg_3035_job_end_to_end(clocked_backend, tmp_path):
    import pyproj

    cube = _cube(clocked_backend.connect()).resample_spatial(resolution=20, projection=3035)
    job = cube.create_job(out_format="NetCDF", title="laea")
    job.start()
    assert _wait(job, timeout=180) == "finished"
    results = job.get_results()
    assert next(iter(results.get_metadata()["assets"].values()))["proj:epsg"] == 3035
    path = results.get_assets()[0].download(tmp_path / "laea.nc")
    with xr.open_dataset(path) as ds:
        assert pyproj.CRS.from_wkt(ds["crs"].attrs["crs_wkt"]).source_crs.to_epsg() == 3035


# -- paginated listings with a long history --------------------------------------------
def _all_pages(connection, limit):
    pages, response = 0, connection.get("/jobs", params={"limit": limit}).json()
    jobs = []
    while True:
        pages += 1
        jobs += response["jobs"]
        following = [link["href"] for link in response["links"] if link["rel"] == "next"]
        if not following:
            return jobs, pages
        response = connection.get(following[0]).json()


def _check_listing(count):
    with LocalBackend(profile="cdse", historical_jobs=count, workers=1) as backend:
        connection = backend.connect()
        new = _job(connection)
        jobs, pages = _all_pages(connection, limit=1000)
        assert len(jobs) == count + 1 and pages == -(-(count + 1) // 1000)
        assert len({j["id"] for j in jobs}) == count + 1
        assert jobs[0]["id"] == new.job_id  # newest first
        created = [j["created"] for j in jobs[1:]]
        assert created == sorted(created, reverse=True)
        assert {j["status"] for j in jobs[1:]} == {"finished"}
        page = connection.list_jobs(limit=50)
        assert len(page) == 50
        old = connection.job(jobs[-1]["id"]).describe()
        assert old["status"] == "finished" and old["costs"] > 0


def test_listing_pages_through_historical_jobs():
    _check_listing(HISTORY)


@pytest.mark.slow
def test_listing_pages_through_20000_historical_jobs():
    _check_listing(20_000)


# -- eoextract's job manager against the profile ---------------------------------------
def _start_job(row, connection, options=None, **kwargs):
    return _cube(connection).create_job(
        title=row["title"], out_format="NetCDF",
        job_options={"eoextract_mode": "instant", **(options or {})})


def _manager_run(backend, tmp_path, n, parallel_jobs, options=None, name="run"):
    df = pd.DataFrame({"title": [f"{name}-{uuid.uuid4().hex[:6]}-{i}" for i in range(n)]})

    def start_job(row, connection, **kwargs):
        return _start_job(row, connection, options)

    manager = JobManager(poll_sleep=0.1, retry_backoff=0.05, root_dir=tmp_path / name)
    manager.add_backend("cdse", backend.connect, parallel_jobs=parallel_jobs)
    return manager.run_jobs(df, start_job, job_db=tmp_path / f"{name}.db"), manager


def test_manager_finishes_a_run_within_the_limits(tmp_path):
    with LocalBackend(profile="cdse", workers=1) as backend:
        stats, _ = _manager_run(backend, tmp_path, 6, parallel_jobs=2)
    assert stats["status_counts"] == {"finished": 6}
    assert len(list((tmp_path / "run").rglob("*.nc"))) == 6
    stored = (tmp_path / "run.db").read_bytes()
    assert not re.search(rb"/results/assets/[0-9a-f]{32}/", stored)  # no signature stored


def test_manager_over_the_limit_loses_no_job(tmp_path):
    """A start refused with ConcurrentJobLimit keeps the created job; it is started once a
    running place is free, and every job finishes in the same run."""
    slow = {"eoextract_fault": "slow", "eoextract_fault_delay_s": 0.5}
    with LocalBackend(profile="cdse", workers=1) as backend:
        stats, _ = _manager_run(backend, tmp_path, 6, parallel_jobs=4, options=slow)
        jobs = backend.connect().list_jobs(limit=100)
    assert stats["status_counts"] == {"finished": 6}
    assert stats["start_job call"] == 6  # no job created twice
    assert len([j for j in jobs if j.get("title", "").startswith("run-")]) == 6
    db = get_job_db(tmp_path / "run.db")
    refused = [h for key in db.read().index for h in db.history(key) if "ConcurrentJobLimit" in (h.message or "")]
    assert refused  # the limit was met, and waited out
    db.close()


def test_manager_download_recovers_from_an_expired_url(clocked_backend, tmp_path):
    signer = clocked_backend.app.state.backend.signer
    expired = signer.expired
    jumped = []

    def expire_once(expires):
        if not jumped:  # the first download comes after every URL issued so far expired
            jumped.append(expires)
            clocked_backend.shift(3600)
        return expired(expires)

    signer.expired = expire_once
    stats, _ = _manager_run(clocked_backend, tmp_path, 2, parallel_jobs=2)
    assert jumped and stats["status_counts"] == {"finished": 2}
    assert len(list((tmp_path / "run").rglob("*.nc"))) == 2


# -- command line ------------------------------------------------------------------------
def test_serve_refuses_an_unknown_profile_before_listening():
    from typer.testing import CliRunner

    from eoextract.cli import app

    result = CliRunner().invoke(app, ["backend", "serve", "--port", "0", "--profile", "prod"])
    assert result.exit_code == 2  # a usage error, named before any port is opened
    assert "--profile must be 'default' or 'cdse', not 'prod'" in result.output


@pytest.mark.slow
def test_serve_with_the_cdse_profile_and_overrides(tmp_path):
    import subprocess
    import sys

    import openeo

    command = [sys.executable, "-m", "eoextract.cli", "backend", "serve", "--port", "0",
               "--data-dir", str(tmp_path), "--profile", "cdse", "--max-running-jobs", "1",
               "--historical-jobs", "7"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "NO_PROXY": "*"})
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        connection = openeo.connect(url).authenticate_basic("eoextract", "eoextract")
        assert len(connection.list_jobs(limit=100)) == 7
        jobs = [_job(connection, delay_s=30) for _ in range(2)]
        jobs[0].start()
        with pytest.raises(OpenEoApiError, match=r"concurrent job limit \(1\)"):
            jobs[1].start()
        jobs[0].stop()
    finally:
        server.terminate()
        server.wait(timeout=30)
