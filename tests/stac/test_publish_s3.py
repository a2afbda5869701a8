"""Publishing to S3: layout, relative-published catalogue, verification, incremental
and resumable uploads, job timeliness, secrets; against a local moto server."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import orjson
import pandas as pd
import pytest

pytest.importorskip("obstore")
pytest.importorskip("moto")

from publish_fixtures import (  # noqa: E402
    download_prefix,
    make_output,
    moto_server,
    s3_client,
    tree_digest,
)

from eoextract.errors import ConfigurationError  # noqa: E402
from eoextract.extract import ItemStore, publish_catalogue  # noqa: E402
from eoextract.stac import validate_catalog  # noqa: E402
from eoextract.stac.publish import (  # noqa: E402
    ObstoreWriter,
    PublishError,
    publish_to_s3,
    publish_to_store,
)
from eoextract.stac.publish._s3 import S3Credentials, S3Target, s3_store  # noqa: E402
from eoextract.stac.publish._upload_manifest import manifest_path  # noqa: E402
from eoextract.stac.publish._uploader import digest_bytes  # noqa: E402

KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}


@pytest.fixture(scope="module")
def endpoint():
    with moto_server() as url:
        yield url


@pytest.fixture()
def bucket(endpoint):
    name = f"b-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture()
def client(endpoint):
    return s3_client(endpoint)


def _publish(root, bucket, endpoint, prefix="run1", **kw):
    return publish_to_s3(root, f"s3://{bucket}/{prefix}", endpoint_url=endpoint,
                         **{**KEYS, **kw})


def _publish_and_mark(root, bucket, endpoint, job_db, prefix="run1"):
    return publish_catalogue(root, f"s3://{bucket}/{prefix}", job_db=job_db,
                             endpoint_url=endpoint, **KEYS)


def test_uploads_catalogue_and_assets_relative_published(tmp_path, bucket, endpoint, client):
    out = tmp_path / "out"
    root = make_output(out, n_jobs=3, items_per_job=4, max_links=5)
    before = tree_digest(out)
    result = _publish(root, bucket, endpoint)
    assert result.ok, result.errors
    assert result.n_items == 12
    after = {k: v for k, v in tree_digest(out).items() if not k.startswith(".eoextract/publish/")}
    assert after == before, "local files must not change (only the manifest is added)"

    copy = tmp_path / "copy"
    objects = download_prefix(client, bucket, "run1/", copy)
    # only the catalogue and the assets it references, never the state folder
    assert not [k for k in objects if "/.eoextract/" in k]
    n_json = sum(1 for p in (out / "stac").rglob("*.json"))
    assert len(objects) == n_json + 12 * 2
    # same layout under the prefix: the downloaded tree is a valid, complete catalogue
    report = validate_catalog(copy / "stac", check_assets=True)
    assert report.ok, report.messages()[:5]
    assert report.n_items == 12
    # root: absolute self link; every other document: unchanged bytes, no self link
    published_root = orjson.loads(objects["run1/stac/collection.json"])
    self_links = [lk for lk in published_root["links"] if lk["rel"] == "self"]
    assert self_links == [{"rel": "self", "type": "application/json",
                           "href": f"{endpoint}/{bucket}/run1/stac/collection.json"}]
    assert result.root_url == self_links[0]["href"]
    for path in (out / "stac").rglob("*.json"):
        key = f"run1/{path.relative_to(out).as_posix()}"
        if path.name != "collection.json":
            assert objects[key] == path.read_bytes()
    # content type and stored checksum metadata (the item's SHA-256 multihash)
    head = client.head_object(Bucket=bucket, Key="run1/31UFS/job-000/job-000_000/S2.nc")
    assert head["ContentType"] == "application/x-netcdf"
    local = (out / "31UFS/job-000/job-000_000/S2.nc").read_bytes()
    assert head["Metadata"]["checksum"] == "1220" + hashlib.sha256(local).hexdigest()


def test_absolute_asset_urls_only_in_the_uploaded_copy(tmp_path, bucket, endpoint, client):
    out = tmp_path / "out"
    root = make_output(out, n_jobs=2, items_per_job=2)
    before = tree_digest(out / "stac")
    result = _publish(root, bucket, endpoint, prefix="abs", absolute_asset_urls=True,
                      public_url="https://data.example.org/abs")
    assert result.ok, result.errors
    assert tree_digest(out / "stac") == before
    objects = download_prefix(client, bucket, "abs/", tmp_path / "copy")
    items = [orjson.loads(v) for k, v in objects.items()
             if k.endswith(".json") and b'"Feature"' in v[:200]]
    assert len(items) == 4
    for item in items:
        for asset in item["assets"].values():
            href = asset["href"]
            assert href.startswith("https://data.example.org/abs/31UFS/")
            assert "abs/" + href.removeprefix("https://data.example.org/abs/") in objects


def test_rerun_uploads_only_what_changed(tmp_path, bucket, endpoint, client):
    out = tmp_path / "out"
    root = make_output(out, n_jobs=3, items_per_job=3)
    first = _publish(root, bucket, endpoint)
    assert first.ok and first.n_written > 0

    again = _publish(root, bucket, endpoint)
    assert again.ok and again.n_written == 0 and again.n_unchanged == first.n_written

    # a file changed locally (and its item with it): that file and that item only
    job_file = out / ".eoextract/items/job-001.json"
    doc = orjson.loads(job_file.read_bytes())
    data = b"new content of the data file"
    (out / doc["items"][0]["assets"]["S2-L2A"]["href"]).write_bytes(data)
    doc["items"][0]["assets"]["S2-L2A"].update(
        {"file:size": len(data), "file:checksum": digest_bytes(data, algorithm="sha2-256").checksum})
    job_file.write_bytes(orjson.dumps(doc))
    from eoextract.extract import build_catalogue

    build_catalogue(out, collection_id="extraction", description="Test extraction", validate=False)
    changed = _publish(root, bucket, endpoint)
    assert changed.ok
    assert changed.n_written == 2  # the data file and its item document

    # an object deleted in the bucket is uploaded again although the manifest has it
    client.delete_object(Bucket=bucket, Key="run1/31UFS/job-002/job-002_001/label.json")
    healed = _publish(root, bucket, endpoint)
    assert healed.n_written == 1

    # without the manifest (another machine): matching ETags are trusted, nothing uploaded
    manifest = manifest_path(out, f"s3://{bucket}/run1 at {endpoint}")
    assert manifest.exists() and not manifest.with_suffix(".journal").exists()
    manifest.unlink()
    fresh = _publish(root, bucket, endpoint)
    assert fresh.ok and fresh.n_written == 0


def test_resumes_after_kill(tmp_path, bucket, endpoint, client):
    out = tmp_path / "out"
    root = make_output(out, n_jobs=10, items_per_job=20)
    script = textwrap.dedent(f"""
        import asyncio, sys
        from eoextract.stac.publish import ObstoreWriter, publish_to_s3
        slow_put = ObstoreWriter.put
        async def put(self, *a, **k):
            await asyncio.sleep(0.02)
            return await slow_put(self, *a, **k)
        ObstoreWriter.put = put
        publish_to_s3({str(root)!r}, "s3://{bucket}/run1", endpoint_url={endpoint!r},
                      access_key_id="testing", secret_access_key="testing", workers=4)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    journal = manifest_path(out, f"s3://{bucket}/run1 at {endpoint}").with_suffix(".journal")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 60:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the upload ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = journal.read_bytes().count(b"\n")
    listing = client.list_objects_v2(Bucket=bucket, Prefix="run1/").get("Contents", [])
    keys = {o["Key"] for o in listing}
    assert "run1/stac/collection.json" not in keys  # the root goes last

    resumed = _publish(root, bucket, endpoint)
    assert resumed.ok, resumed.errors
    assert resumed.n_unchanged >= done_before
    total = resumed.n_written + resumed.n_unchanged
    assert resumed.n_written <= total - done_before
    report = validate_catalog(download_prefix(client, bucket, "run1/", tmp_path / "copy") and
                              tmp_path / "copy" / "stac", check_assets=True)
    assert report.ok and report.n_items == 200


def test_local_file_differing_from_its_item_is_not_published(tmp_path, bucket, endpoint, client):
    out = tmp_path / "out"
    root = make_output(out, n_jobs=2, items_per_job=2)
    target = out / "31UFS/job-001/job-001_000/S2.nc"
    data = bytearray(target.read_bytes())
    data[0] ^= 0xFF  # same size, other content
    target.write_bytes(bytes(data))
    result = _publish(root, bucket, endpoint)
    assert not result.ok
    assert any("checksum" in e and "job-001_000" in e for e in result.errors)
    assert "job-001_000" not in result.published_items
    assert result.failed_items == ["job-001_000"]
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    # its valid sibling asset may be there, but neither the bad file nor the item
    assert not [k for k in keys if "job-001_000" in k and not k.endswith("label.json")]
    assert "run1/stac/collection.json" not in keys  # no catalogue with a broken link
    with pytest.raises(PublishError, match="failed for 1 object"):
        result.raise_for_errors()


def test_etag_mismatch_is_reported(tmp_path, bucket, endpoint):
    class Corrupting(ObstoreWriter):
        async def put(self, key, body, **kw):
            etag = await super().put(key, body, **kw)
            return '"00000000000000000000000000000000"' if key.endswith("S2.nc") else etag

    out = tmp_path / "out"
    root = make_output(out, n_jobs=1, items_per_job=2)
    store = s3_store(S3Target(bucket), S3Credentials("testing", "testing"), endpoint)
    result = publish_to_store(root, Corrupting(store), prefix="x", target_name="corrupting")
    assert not result.ok
    assert sum("upload is corrupt" in e for e in result.errors) == 2


def test_large_file_multipart_verified(tmp_path, bucket, endpoint, client):
    out = tmp_path / "out"
    root = make_output(out, n_jobs=1, items_per_job=2, big={1: 11 * 2**20 + 123})
    result = _publish(root, bucket, endpoint, part_size=5 * 2**20)
    assert result.ok, result.errors
    head = client.head_object(Bucket=bucket, Key="run1/31UFS/job-000/job-000_001/S2.nc")
    assert head["ContentLength"] == 11 * 2**20 + 123
    assert head["ETag"].strip('"').endswith("-3")
    assert _publish(root, bucket, endpoint, part_size=5 * 2**20).n_written == 0


def _job_db(path: Path, keys: list[str]):
    from eoextract.jobs.db import create_job_db

    df = pd.DataFrame({"input_published_at": [pd.Timestamp("2024-05-01T00:00:00Z")] * len(keys)},
                      index=pd.Index(keys, name="job_key"))
    return create_job_db(path, df)


def test_output_published_at_set_once_per_published_job(tmp_path, bucket, endpoint):
    out = tmp_path / "out"
    root = make_output(out, n_jobs=3, items_per_job=2)
    assert set(ItemStore(out).job_keys_by_item().values()) == {"job-000", "job-001", "job-002"}
    db_path = tmp_path / "jobs.db"
    _job_db(db_path, ["job-000", "job-001", "job-002", "job-never-ran"]).close()
    result = _publish_and_mark(root, bucket, endpoint, str(db_path))
    assert sorted(result.jobs_marked) == ["job-000", "job-001", "job-002"]
    from eoextract.jobs.db import get_job_db

    with get_job_db(db_path) as db:
        frame = db.read()
    published = pd.to_datetime(frame["output_published_at"], utc=True)
    assert published[["job-000", "job-001", "job-002"]].notna().all()
    assert pd.isna(published["job-never-ran"])
    again = _publish_and_mark(root, bucket, endpoint, str(db_path))
    assert again.jobs_marked == []
    with get_job_db(db_path) as db:
        assert (pd.to_datetime(db.read()["output_published_at"], utc=True)
                .equals(published))

    from eoextract.report import summarize

    with get_job_db(db_path) as db:
        summary = summarize(db)
    assert summary.published == 3
    assert summary.publication_latency_s["median"] > 0
    from typer.testing import CliRunner

    from eoextract.cli import app

    status = CliRunner().invoke(app, ["status", str(db_path)])
    assert status.exit_code == 0, status.output
    assert "published 3 job(s); publication latency median" in status.output


def test_secrets_never_written(tmp_path, bucket, endpoint, client, caplog, monkeypatch):
    key_id, secret, token = "AKIAEOEXTRACTSECRET1", "s3cr3t/Value+Never-Logged", "T0KEN-never-seen"
    out = tmp_path / "out"
    root = make_output(out, n_jobs=2, items_per_job=2)
    db_path = tmp_path / "jobs.db"
    _job_db(db_path, ["job-000", "job-001"]).close()
    caplog.set_level(logging.DEBUG)
    # from the environment ...
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    env_result = publish_catalogue(root, f"s3://{bucket}/env", endpoint_url=endpoint,
                                   job_db=str(db_path))
    # ... and as arguments, with credentials in the endpoint URL as well
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    host = endpoint.removeprefix("http://")
    arg_result = publish_catalogue(root, f"s3://{bucket}/args",
                                   endpoint_url=f"http://u:{quote(secret, safe='')}@{host}",
                                   access_key_id=key_id, secret_access_key=secret,
                                   session_token=token, job_db=str(db_path))
    assert env_result.ok and arg_result.ok
    from typer.testing import CliRunner

    from eoextract.cli import app

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    cli = CliRunner().invoke(app, ["-v", "stac", "publish", str(out), "--to", f"s3://{bucket}/cli",
                                   "--endpoint-url", endpoint, "--job-db", str(db_path)])
    assert cli.exit_code == 0, cli.output
    texts = [caplog.text, repr(env_result), repr(arg_result), cli.output,
             repr(S3Credentials(key_id, secret, token))]
    for path in out.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    texts.append(db_path.read_bytes().decode("utf-8", "replace"))
    for prefix in ("env/", "args/", "cli/"):
        for body in download_prefix(client, bucket, prefix, tmp_path / prefix).values():
            texts.append(body.decode("utf-8", "replace"))
    for value in (key_id, secret, quote(secret, safe=""), token):
        assert not [t for t in texts if value in t]
    # a malformed endpoint URL is refused without echoing it
    with pytest.raises(ConfigurationError) as info:
        publish_to_s3(root, f"s3://{bucket}/bad", endpoint_url=f"http://u:{secret}@{host}")
    assert secret.split("/")[0] not in str(info.value)


def test_cli_publish_and_usage_errors(tmp_path, bucket, endpoint, monkeypatch):
    from typer.testing import CliRunner

    from eoextract.cli import app

    out = tmp_path / "out"
    make_output(out, n_jobs=1, items_per_job=2)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    runner = CliRunner()
    ok = runner.invoke(app, ["stac", "publish", str(out), "--to", f"s3://{bucket}/p",
                             "--endpoint-url", endpoint, "--absolute-asset-urls"])
    assert ok.exit_code == 0, ok.output
    assert "2 item(s)" in ok.output and f"{endpoint}/{bucket}/p/stac/collection.json" in ok.output
    both = runner.invoke(app, ["stac", "publish", str(out), "--to", "s3://x/y", "--pgstac", "postgresql://h/db"])
    assert both.exit_code == 2 and "exactly one" in both.output
    none = runner.invoke(app, ["stac", "publish", str(tmp_path / "nothing"), "--to", "s3://x/y"])
    assert none.exit_code == 2
