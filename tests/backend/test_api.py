"""The openEO API of the embedded backend, driven through the unchanged ``openeo`` client."""

from __future__ import annotations

import openeo
import pytest
import requests
from api_helpers import BBOX, auth_headers, checksum, instant_graph, title  # noqa: F401
from openeo.rest import OpenEoApiError

INSTANT = {"eoextract_mode": "instant"}


def _instant_job(connection, title, **options):
    job = connection.create_job(
        instant_graph(), title=title, job_options={**INSTANT, **options}, validate=False
    )
    return job


# -- discovery and auth ----------------------------------------------------------------
def test_capabilities(local_backend):
    conn = openeo.connect(local_backend.url)
    caps = conn.capabilities()
    assert caps.api_version() == "1.2.0"
    assert caps.supports_endpoint("/jobs", "POST")
    assert caps.supports_endpoint("/credentials/basic", "GET")
    well_known = requests.get(f"{local_backend.url}.well-known/openeo", timeout=10).json()
    assert well_known["versions"][0]["api_version"] == "1.2.0"
    assert requests.get(f"{local_backend.url}conformance", timeout=10).ok


def test_basic_auth_and_me(local_backend):
    conn = local_backend.connect()
    assert conn.describe_account()["user_id"] == "eoextract"


def test_wrong_password_is_rejected(local_backend):
    with pytest.raises(OpenEoApiError) as info:
        openeo.connect(local_backend.url).authenticate_basic("eoextract", "wrong")
    assert info.value.http_status_code == 403
    assert info.value.code == "CredentialsInvalid"


def test_bearer_token_is_checked(local_backend):
    missing = requests.get(f"{local_backend.url}jobs", timeout=10)
    assert missing.status_code == 401
    assert missing.json()["code"] == "AuthenticationRequired"
    wrong = requests.get(
        f"{local_backend.url}jobs", headers={"Authorization": "Bearer basic//nope"}, timeout=10
    )
    assert wrong.status_code == 403
    body = wrong.json()
    assert body["code"] == "TokenInvalid" and body["id"] and body["message"]


def test_unknown_path_gives_openeo_error(local_backend):
    resp = requests.get(f"{local_backend.url}no/such/thing", timeout=10)
    assert resp.status_code == 404
    assert resp.json()["code"] == "NotFound"


# -- jobs ------------------------------------------------------------------------------
def test_job_crud(connection, title):
    job = _instant_job(connection, title, extra_option=3)
    meta = job.describe()
    assert meta["status"] == "created"
    assert meta["title"] == title
    assert meta["job_options"]["extra_option"] == 3
    assert meta["process"]["process_graph"] == instant_graph()

    connection.patch(f"/jobs/{job.job_id}", json={"title": title + "-2", "description": "d"},
                     expected_status=204)
    meta = job.describe()
    assert (meta["title"], meta["description"]) == (title + "-2", "d")

    job.delete()
    with pytest.raises(OpenEoApiError) as info:
        job.describe()
    assert info.value.http_status_code == 404
    assert info.value.code == "JobNotFound"


def test_create_returns_location_and_identifier(local_backend, auth_headers, title):
    body = {"title": title, "process": {"process_graph": instant_graph()}}
    resp = requests.post(f"{local_backend.url}jobs", json=body, headers=auth_headers, timeout=10)
    assert resp.status_code == 201
    job_id = resp.headers["OpenEO-Identifier"]
    assert resp.headers["Location"].endswith(f"/jobs/{job_id}")


def test_instant_job_finishes_at_once_with_verified_asset(connection, title):
    job = _instant_job(connection, title)
    job.start()
    assert job.status() == "finished"
    assert job.describe()["progress"] == 100
    results = job.get_results()
    meta = results.get_metadata()
    assert meta["type"] == "Collection"
    (asset,) = results.get_assets()
    data = asset.load_bytes()
    assert asset.metadata["file:size"] == len(data)
    assert asset.metadata["file:checksum"] == checksum(data)
    for key in ("href", "type", "roles", "title", "proj:code", "proj:shape", "proj:bbox",
                "bbox", "geometry"):
        assert key in asset.metadata, key
    assert asset.metadata["type"] == "application/x-netcdf"
    assert data[:4] in (b"\x89HDF", b"CDF\x01", b"CDF\x02")


def test_results_before_finish_is_job_not_finished(connection, title):
    job = _instant_job(connection, title)
    with pytest.raises(OpenEoApiError) as info:
        job.get_results().get_metadata()
    assert info.value.http_status_code == 400
    assert info.value.code == "JobNotFinished"


def test_download_supports_range_and_head(connection, title, tmp_path):
    job = _instant_job(connection, title)
    job.start()
    (asset,) = job.get_results().get_assets()
    size = asset.metadata["file:size"]
    head = requests.head(asset.href, timeout=10)
    assert head.status_code == 200
    assert head.headers["Accept-Ranges"] == "bytes"
    assert int(head.headers["Content-Length"]) == size
    full = requests.get(asset.href, timeout=10).content
    part = requests.get(asset.href, headers={"Range": "bytes=10-19"}, timeout=10)
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 10-19/{size}"
    assert part.headers["Content-Length"] == "10"
    assert part.content == full[10:20]
    tail = requests.get(asset.href, headers={"Range": "bytes=-5"}, timeout=10)
    assert tail.content == full[-5:]
    bad = requests.get(asset.href, headers={"Range": f"bytes={size + 10}-"}, timeout=10)
    assert bad.status_code == 416
    # the client's own (ranged) download gives the same bytes
    target = asset.download(tmp_path / "a.nc")
    assert target.read_bytes() == full
    # a forged signature is refused
    parts = asset.href.split("/")
    parts[-2] = "0" * 32
    assert requests.get("/".join(parts), timeout=10).status_code == 404


def test_job_listing_is_paginated(connection, title, local_backend, auth_headers):
    ids = {_instant_job(connection, f"{title}-{i}").job_id for i in range(5)}
    listing = connection.list_jobs(limit=None)
    listed = {j["id"]: j for j in listing}
    assert ids <= set(listed)
    for job_id in ids:
        entry = listed[job_id]
        assert {"id", "title", "description", "status", "progress", "created", "updated"} <= set(entry)
        assert entry["status"] == "created"
    # follow `next` links in pages of 2
    url, seen, pages = f"{local_backend.url}jobs?limit=2", [], 0
    while url:
        page = requests.get(url, headers=auth_headers, timeout=10).json()
        assert len(page["jobs"]) <= 2
        seen += [j["id"] for j in page["jobs"]]
        url = next((link["href"] for link in page["links"] if link["rel"] == "next"), None)
        pages += 1
    assert len(seen) == len(set(seen)) == len(listed)
    assert pages >= 3


def test_logs_with_offset_and_level(connection, title):
    job = _instant_job(connection, title)
    job.start()
    logs = job.logs()
    assert len(logs) >= 2
    later = job.logs(offset=logs[0]["id"])
    assert [e["id"] for e in later] == [e["id"] for e in logs[1:]]
    assert job.logs(level="error") == []


def test_job_log_level_drops_lower_entries(connection, title):
    job = connection.create_job(instant_graph(), title=title, job_options=INSTANT,
                                log_level="warning", validate=False)
    job.start()
    assert job.status() == "finished"
    assert job.logs() == []


def test_active_job_is_locked_and_delete_cancels(connection, title):
    job = _instant_job(connection, title, eoextract_fault="slow", eoextract_fault_delay_s=30)
    job.start()
    assert job.status() == "running"
    job.start()  # starting again leaves it alone
    assert job.status() == "running"
    with pytest.raises(OpenEoApiError) as info:
        connection.patch(f"/jobs/{job.job_id}", json={"title": "x"}, expected_status=204)
    assert info.value.http_status_code == 400 and info.value.code == "JobLocked"
    job.delete()
    with pytest.raises(OpenEoApiError):
        job.status()


def test_invalid_json_body_is_bad_request(local_backend, auth_headers):
    resp = requests.post(
        f"{local_backend.url}jobs",
        data=b"{not json",
        headers={**auth_headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == "BadRequest"
    assert "JSON" in body["message"]


def test_missing_or_malformed_process_graph(local_backend, auth_headers):
    url = f"{local_backend.url}jobs"
    resp = requests.post(url, json={"title": "x"}, headers=auth_headers, timeout=10)
    assert resp.status_code == 400 and resp.json()["code"] == "ProcessGraphMissing"
    resp = requests.post(
        url, json={"process": {"process_graph": {"a": {"arguments": {}}}}}, headers=auth_headers,
        timeout=10,
    )
    assert resp.status_code == 400 and resp.json()["code"] == "ProcessGraphInvalid"


def test_unknown_job(connection):
    with pytest.raises(OpenEoApiError) as info:
        connection.job("j-doesnotexist").status()
    assert info.value.code == "JobNotFound"
    assert info.value.http_status_code == 404


# -- request bodies: size and nesting ---------------------------------------------------
def _raw_post(url: str, headers: dict, head_extra: list[str], body_chunks, timeout: float = 20.0):
    """POST over a plain socket, sending ``body_chunks`` until the server answers or they run out.

    Returns ``(status, json_body, bytes_sent, answered_early)``.
    """
    import json
    import select
    import socket
    from urllib.parse import urlparse

    parts = urlparse(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    try:
        head = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}",
                "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items()),
                *head_extra]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent, early = 0, False
        for chunk in body_chunks:
            if select.select([sock], [], [], 0)[0]:
                early = True
                break
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed the connection after answering
                early = True
                break
            sent += len(chunk)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(65536)
        head_bytes, _, rest = reply.partition(b"\r\n\r\n")
        status = int(head_bytes.split()[1])
        length = next(int(line.split(b":")[1]) for line in head_bytes.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += sock.recv(65536)
        return status, json.loads(rest[:length]), sent, early
    finally:
        sock.close()


def test_body_over_the_limit_is_refused_from_content_length(local_backend, auth_headers):
    limit = local_backend.app.state.backend.settings.max_body_bytes
    # announce more than the limit and send nothing: the answer must not wait for the body
    status, body, _, _ = _raw_post(f"{local_backend.url}jobs", auth_headers,
                                   [f"Content-Length: {limit + 1}"], [], timeout=10)
    assert status == 413
    assert body["code"] == "PayloadTooLarge" and "MiB" in body["message"] and body["id"]


def test_chunked_body_over_the_limit_is_refused_while_streaming(local_backend, auth_headers):
    limit = local_backend.app.state.backend.settings.max_body_bytes
    piece = 1 << 20
    data = b"[" + b" " * (piece - 1)
    frame = f"{len(data):x}\r\n".encode() + data + b"\r\n"
    n_chunks = limit // piece + 32  # never terminated: the server must answer before the end
    status, body, sent, early = _raw_post(f"{local_backend.url}jobs", auth_headers,
                                          ["Transfer-Encoding: chunked"],
                                          (frame for _ in range(n_chunks)), timeout=20)
    assert status == 413 and body["code"] == "PayloadTooLarge"
    assert early and limit < sent < limit + 24 * piece


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize("depth", [300, 1000, 2000])
def test_deeply_nested_body_is_refused_and_creates_nothing(local_backend, auth_headers, depth):
    url = f"{local_backend.url}jobs"
    before = {j["id"] for j in requests.get(url, headers=auth_headers, timeout=10).json()["jobs"]}
    body = ('{"title": "deep", "process": {"process_graph": {"c": {"process_id": "constant", '
            '"arguments": {"x": ' + _nested(depth) + '}, "result": true}}}}')
    resp = requests.post(url, data=body, timeout=10,
                         headers={**auth_headers, "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["code"] == "BadRequest" and resp.json()["id"]
    after = {j["id"] for j in requests.get(url, headers=auth_headers, timeout=10).json()["jobs"]}
    assert after == before


def test_moderately_nested_body_is_accepted(local_backend, auth_headers):
    body = ('{"process": {"process_graph": {"c": {"process_id": "constant", '
            '"arguments": {"x": ' + _nested(100) + '}, "result": true}}}}')
    resp = requests.post(f"{local_backend.url}jobs", data=body, timeout=10,
                         headers={**auth_headers, "Content-Type": "application/json"})
    assert resp.status_code == 201
    job_url = resp.headers["Location"]
    patch = requests.patch(job_url, data='{"job_options": {"x": ' + _nested(300) + "}}", timeout=10,
                           headers={**auth_headers, "Content-Type": "application/json"})
    assert patch.status_code == 400
    described = requests.get(job_url, headers=auth_headers, timeout=10).json()
    assert described.get("job_options") in (None, {})


def test_store_keeps_nothing_of_a_job_it_cannot_write(tmp_path):
    import orjson

    from eoextract.backend._api_errors import BadRequest
    from eoextract.backend._job_store import JobStore, parse_job_body

    store = JobStore(tmp_path)
    deep = orjson.loads(_nested(300))
    fields_ = parse_job_body({"process": {"process_graph": {
        "c": {"process_id": "constant", "arguments": {"x": deep}, "result": True}}}})
    with pytest.raises(BadRequest, match="cannot be stored"):
        store.create("eoextract", fields_)
    assert store.listing("eoextract") == ([], None)
    assert not any(store.jobs_dir.glob("*/job.json"))
    record = store.create("eoextract", {**fields_, "process": {"process_graph": instant_graph()}})
    with pytest.raises(BadRequest):
        store.update(record, job_options={"x": deep})
    assert record.job_options == {} and store.get(record.id).job_options == {}
    assert orjson.loads((store.job_dir(record.id) / "job.json").read_bytes())["job_options"] == {}
