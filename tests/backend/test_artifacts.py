"""``openeo.extra.artifacts`` against the embedded backend's local S3 + STS: upload with the OIDC
token, presigned URLs read back by ``load_url`` (GeoParquet, GeoJSON), expiry, credentials."""

from __future__ import annotations

import json
import time

import pytest
import requests

pytest.importorskip("moto")
pytest.importorskip("boto3")

import geopandas as gpd  # noqa: E402
from openeo.extra.artifacts import build_artifact_helper  # noqa: E402
from shapely.geometry import box  # noqa: E402

from eoextract.backend import LocalBackend  # noqa: E402

TEMPORAL = ["2021-06-01", "2021-06-12"]


@pytest.fixture(autouse=True)
def _openeo_config_home(tmp_path, monkeypatch):
    # the client uses the first folder that exists: it must exist to win over the home folder
    (tmp_path / "openeo-config").mkdir()
    monkeypatch.setenv("OPENEO_CONFIG_HOME", str(tmp_path / "openeo-config"))


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    with LocalBackend(workers=1, artifacts=True, data_dir=tmp_path_factory.mktemp("art")) as b:
        yield b


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    """Three small polygons (EPSG:4326) as GeoParquet and GeoJSON files."""
    root = tmp_path_factory.mktemp("fields")
    gdf = gpd.GeoDataFrame(
        {"id": ["a", "b", "c"]},
        geometry=[box(600000 + i * 300, 5700000, 600200 + i * 300, 5700200) for i in range(3)],
        crs=32631,
    ).to_crs(4326)
    gdf.to_parquet(root / "fields.parquet")
    gdf.to_file(root / "fields.geojson", driver="GeoJSON")
    return root, json.loads(gdf.to_json())


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def _run(job, timeout_s: float = 120) -> str:
    job.start()
    deadline = time.monotonic() + timeout_s
    while (status := job.status()) not in ("finished", "error", "canceled"):
        assert time.monotonic() < deadline, "job did not end"
        time.sleep(0.2)
    return status


def test_capability_shape(backend):
    artifacts = _session().get(backend.url, timeout=10).json()["artifacts"]
    (provider,) = artifacts["providers"]
    assert provider["type"] == "S3STSConfig"
    config = provider["config"]
    assert set(config) >= {"s3_endpoint", "sts_endpoint", "role", "bucket"}
    assert config["s3_endpoint"].startswith("http://127.0.0.1:")


def test_upload_and_presigned_geoparquet_in_aggregate_spatial(backend, fields):
    root, inline = fields
    con = backend.connect_oidc()
    helper = build_artifact_helper(con)
    uri = helper.upload_file(root / "fields.parquet")
    assert str(uri).startswith("s3://eoextract-artifacts/")
    url = helper.get_presigned_url(uri, expires_in_seconds=600)
    assert "X-Amz-Signature=" in url
    assert _session().get(url, timeout=10).content == (root / "fields.parquet").read_bytes()

    cube = con.load_collection("SENTINEL2_L2A", temporal_extent=TEMPORAL, bands=["B04"])
    job = cube.aggregate_spatial(geometries=con.load_url(url, format="Parquet"), reducer="mean") \
        .create_job(out_format="JSON", title="artifact-parquet")
    assert _run(job) == "finished"
    (asset,) = job.get_results().get_assets()
    from_url = json.loads(_session().get(asset.href, timeout=10).content)
    expected = cube.aggregate_spatial(geometries=inline, reducer="mean").execute()
    assert from_url == expected
    assert all(len(values) == 3 for values in from_url.values())  # one value per polygon


def test_presigned_geojson_in_filter_spatial(backend, fields):
    root, _ = fields
    con = backend.connect_oidc()
    helper = build_artifact_helper(con)
    url = helper.get_presigned_url(helper.upload_file(root / "fields.geojson", "fields-x.geojson"))
    assert "/fields-x.geojson?" in url
    cube = con.load_collection("SENTINEL2_L2A", temporal_extent=TEMPORAL, bands=["B04", "B08"])
    cube = cube.filter_spatial(con.load_url(url, format="GeoJSON")).save_result(
        format="NetCDF", options={"sample_by_feature": True, "feature_id_property": "id"})
    job = cube.create_job(title="artifact-geojson")
    assert _run(job) == "finished"
    names = sorted(a.key for a in job.get_results().get_assets())
    assert names == ["openEO_a.nc", "openEO_b.nc", "openEO_c.nc"]


def test_expired_presigned_url_fails_the_job_only(backend, fields):
    root, _ = fields
    con = backend.connect_oidc()
    helper = build_artifact_helper(con)
    url = helper.get_presigned_url(helper.upload_file(root / "fields.parquet", "soon.parquet"),
                                   expires_in_seconds=1)
    time.sleep(2.1)
    resp = _session().get(url, timeout=10)
    assert resp.status_code == 403 and "Request has expired" in resp.text
    cube = con.load_collection("SENTINEL2_L2A", temporal_extent=TEMPORAL, bands=["B04"])
    job = cube.aggregate_spatial(geometries=con.load_url(url, format="Parquet"), reducer="mean") \
        .create_job(out_format="JSON", title="artifact-expired")
    assert _run(job) == "error"
    (entry,) = [e for e in job.logs(level="error") if "load_url" in e["message"]]
    assert "HTTP 403" in entry["message"] and "presigned URL has expired" in entry["message"]
    signature = url.split("X-Amz-Signature=")[1].split("&")[0]
    assert signature not in json.dumps(job.logs())  # (the process graph keeps the URL as given)
    assert con.describe_account()["user_id"] == "eoextract"  # the server keeps serving
    ok = cube.aggregate_spatial(geometries=json.loads((root / "fields.geojson").read_text()),
                                reducer="mean").execute()
    assert len(ok) == 2


def test_sts_and_s3_refuse_what_they_did_not_issue(backend):
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    endpoint = backend.app.state.backend.settings.artifacts["providers"][0]["config"]["s3_endpoint"]
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="eu-central-1",
                       aws_access_key_id="x", aws_secret_access_key="y")
    role = "arn:aws:iam::123456789012:role/eoextract-artifacts"
    with pytest.raises(ClientError, match="InvalidIdentityToken"):
        sts.assume_role_with_web_identity(RoleArn=role, RoleSessionName="test", WebIdentityToken="a.b.c")
    basic = backend.connect().auth.bearer.split("//", 1)[1]
    with pytest.raises(ClientError, match="InvalidIdentityToken"):
        sts.assume_role_with_web_identity(RoleArn=role, RoleSessionName="test", WebIdentityToken=basic)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-central-1",
                      aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="y" * 40,
                      config=Config(request_checksum_calculation="when_required"))
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        s3.put_object(Bucket="eoextract-artifacts", Key="x", Body=b"1")


def test_expired_oidc_token_is_refused_by_sts(tmp_path):
    import boto3
    from botocore.exceptions import ClientError

    with LocalBackend(workers=1, artifacts=True, oidc_token_lifetime=1) as b:
        config = b.app.state.backend.settings.artifacts["providers"][0]["config"]
        token = b.connect_oidc().auth.bearer.split("/", 2)[2]
        time.sleep(2.1)
        sts = boto3.client("sts", endpoint_url=config["sts_endpoint"], region_name="eu-central-1",
                           aws_access_key_id="x", aws_secret_access_key="y")
        with pytest.raises(ClientError, match="ExpiredTokenException"):
            sts.assume_role_with_web_identity(RoleArn=config["role"], RoleSessionName="test",
                                              WebIdentityToken=token)
        proc = b._artifacts._proc
        endpoint = config["s3_endpoint"]
    assert proc.poll() is not None  # stopped with the backend
    with pytest.raises(requests.ConnectionError):
        _session().get(endpoint, timeout=2)


def test_serve_command_with_artifacts(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import openeo

    env = dict(os.environ, PYTHONUNBUFFERED="1", EOEXTRACT_BACKEND_OIDC_CLIENT_SECRET="cs-Q7")
    cmd = [sys.executable, "-c", "from eoextract.cli import app; app()", "backend", "serve",
           "--port", "0", "--workers", "1", "--artifacts", "--oidc-token-lifetime", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        url = proc.stdout.readline().strip()
        label, _, endpoint = proc.stdout.readline().strip().partition(": ")
        assert label == "artifacts S3/STS" and endpoint.startswith("http://127.0.0.1:")
        caps = _session().get(url, timeout=10).json()
        assert caps["artifacts"]["providers"][0]["config"]["s3_endpoint"] == endpoint
        con = openeo.connect(url).authenticate_oidc_client_credentials(
            client_id="eoextract-service", client_secret="cs-Q7")
        assert con.describe_account()["user_id"] == "eoextract"
        resp = _session().post(f"{url}oidc/eoextract/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": "eoextract-service",
            "client_secret": "cs-Q7"})
        assert resp.json()["expires_in"] == 60
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            raise
    assert "cs-Q7" not in proc.stderr.read()
    with pytest.raises(requests.ConnectionError):  # the S3/STS child stopped with it
        _session().get(endpoint, timeout=2)
