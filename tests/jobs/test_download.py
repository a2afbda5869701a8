"""Streamed, verified, atomic downloads against a loopback HTTP server with faults."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import blake3
import pytest
import requests

from eoextract._util.hrefs import ensure_inside
from eoextract.errors import AssetRefused, ChecksumMismatch, DownloadError, UnsafeAssetPath
from eoextract.jobs._download import (
    STATE_DIR,
    BackendHeaders,
    RemoteAsset,
    download_asset,
    download_job_assets,
    parse_job_results,
    place_file,
    safe_relative_path,
    session_for,
)

# --------------------------------------------------------------------------- server


class FileServer:
    """Serves byte strings on 127.0.0.1, with Range support and scripted faults.

    ``faults[path]`` is a list of actions consumed one per request:
    ``"500"``/``"404"`` answer that status, ``("break", n)`` sends the headers of the
    full answer then only ``n`` bytes and closes, ``"corrupt"`` flips a byte,
    ``"norange"`` ignores the Range header, ``"badrange"`` answers another range than
    asked, ``"429"`` answers Too Many Requests, ``("sleep", s)`` waits before answering,
    ``"gzip"`` sends the body gzip-compressed with ``Content-Encoding: gzip`` although
    the client asked for ``identity``.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.json_docs: dict[str, dict] = {}
        self.faults: dict[str, list] = {}
        self.requests: list[tuple[str, str | None, str | None]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # noqa: N802
                with server._lock:
                    server.requests.append(
                        (self.path, self.headers.get("Range"), self.headers.get("Authorization"))
                    )
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                    fault = server.faults.get(self.path, [None]).pop(0) if server.faults.get(self.path) else None
                try:
                    self._answer(fault)
                finally:
                    with server._lock:
                        server.active -= 1

            def _send(self, code, body=b"", headers=None):
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _answer(self, fault):
                if isinstance(fault, tuple) and fault[0] == "sleep":
                    time.sleep(fault[1])
                    fault = None
                if self.path in server.json_docs:
                    self._send(200, json.dumps(server.json_docs[self.path]).encode(),
                               {"Content-Type": "application/json"})
                    return
                if fault == "429":
                    self._send(429, b"", {"Retry-After": "0"})
                    return
                if fault in ("500", "404") or self.path not in server.files:
                    self._send(404 if fault == "404" or self.path not in server.files else 500)
                    return
                data = server.files[self.path]
                if fault == "corrupt":
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if fault == "gzip":
                    self._send(200, gzip.compress(data), {"Content-Encoding": "gzip"})
                    return
                start = 0
                range_header = self.headers.get("Range")
                if range_header and fault == "badrange":
                    start = 1
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 1-{len(data) - 1}/{len(data)}")
                elif range_header and fault != "norange":
                    start = int(range_header.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if isinstance(fault, tuple) and fault[0] == "break":
                    self.wfile.write(body[: fault[1]])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    srv = FileServer()
    yield srv
    srv.close()


def _payload(n: int, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (n // 32) + b"x" * (n % 32)


def _asset(server: FileServer, name: str, data: bytes, *, checksum=True, size=True, **kw) -> RemoteAsset:
    href = server.add(f"/results/{name}", data)
    return RemoteAsset(
        name=name,
        href=href,
        size=len(data) if size else None,
        checksum="1220" + hashlib.sha256(data).hexdigest() if checksum else None,
        **kw,
    )


def _no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob(".eoextract-dl-*") if p.is_file()]


FAST = {"backoff": 0.0}

# --------------------------------------------------------------------------- download_asset


def test_download_asset_verifies_and_returns_temp_file(server, session, tmp_path):
    data = _payload(3_000_000)
    asset = _asset(server, "openEO_0.nc", data)
    path = download_asset(session, asset, tmp_path, chunk_size=65536)
    assert path.parent == tmp_path and path.suffix == ".nc"
    assert path.read_bytes() == data


def test_body_sent_with_a_content_encoding_is_refused_not_decoded(server, session, tmp_path):
    data = _payload(1_500_000)
    asset = _asset(server, "openEO_gz.nc", data)
    server.faults["/results/openEO_gz.nc"] = ["gzip"]
    with pytest.raises(AssetRefused, match="Content-Encoding 'gzip'"):
        download_asset(session, asset, tmp_path, chunk_size=65536)
    assert [p for p, _, _ in server.requests] == ["/results/openEO_gz.nc"]  # neither resumed nor retried
    assert list(tmp_path.iterdir()) == []


def test_download_resumes_with_range_after_broken_connection(server, session, tmp_path):
    data = _payload(2_000_000)
    asset = _asset(server, "a.tif", data)
    server.faults["/results/a.tif"] = [("break", 700_000), ("break", 300_000)]
    path = download_asset(session, asset, tmp_path, **FAST)
    assert path.read_bytes() == data
    ranges = [r for p, r, _ in server.requests if p == "/results/a.tif"]
    assert ranges[0] is None
    assert ranges[1] == "bytes=700000-"
    assert ranges[2] == "bytes=1000000-"


def test_resume_without_checksum_still_complete(server, session, tmp_path):
    data = _payload(1_000_000)
    asset = _asset(server, "a.nc", data, checksum=False, size=False)
    server.faults["/results/a.nc"] = [("break", 123_457), "500", ("break", 10)]
    assert download_asset(session, asset, tmp_path, **FAST).read_bytes() == data


def test_server_ignoring_range_restarts_cleanly(server, session, tmp_path):
    data = _payload(500_000)
    asset = _asset(server, "a.nc", data)
    server.faults["/results/a.nc"] = [("break", 100_000), "norange"]
    assert download_asset(session, asset, tmp_path, **FAST).read_bytes() == data


def test_wrong_content_range_starts_over(server, session, tmp_path):
    data = _payload(500_000)
    asset = _asset(server, "a.nc", data)
    server.faults["/results/a.nc"] = [("break", 200_000), "badrange"]
    assert download_asset(session, asset, tmp_path, **FAST).read_bytes() == data
    assert [r for _, r, _ in server.requests] == [None, "bytes=200000-", None]


def test_429_is_retried(server, session, tmp_path):
    data = _payload(10_000)
    asset = _asset(server, "a.nc", data)
    server.faults["/results/a.nc"] = ["429", "429"]
    assert download_asset(session, asset, tmp_path, **FAST).read_bytes() == data
    assert len(server.requests) == 3


def test_checksum_mismatch_is_retried_then_succeeds(server, session, tmp_path):
    data = _payload(100_000)
    asset = _asset(server, "a.nc", data)
    server.faults["/results/a.nc"] = ["corrupt"]
    assert download_asset(session, asset, tmp_path, **FAST).read_bytes() == data
    assert len(server.requests) == 2


def test_checksum_mismatch_bounded_then_error_and_nothing_left(server, session, tmp_path):
    data = _payload(100_000)
    asset = _asset(server, "a.nc", data)
    server.faults["/results/a.nc"] = ["corrupt"] * 10
    with pytest.raises(ChecksumMismatch) as info:
        download_asset(session, asset, tmp_path, max_attempts=3, **FAST)
    assert "3 times" in str(info.value) and info.value.asset == "a.nc"
    assert len(server.requests) == 3
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_detected(server, session, tmp_path):
    data = _payload(1000)
    asset = RemoteAsset(name="a.nc", href=server.add("/results/a.nc", data), size=1001)
    with pytest.raises(ChecksumMismatch, match="size 1000 instead of 1001"):
        download_asset(session, asset, tmp_path, max_attempts=1)
    assert list(tmp_path.iterdir()) == []


def test_a_longer_body_than_announced_is_refused_at_once(server, session, tmp_path):
    data = _payload(1000)
    asset = RemoteAsset(name="a.nc", href=server.add("/results/a.nc", data), size=999)
    with pytest.raises(AssetRefused, match="1000 bytes, more than the 999 bytes the results document announced"):
        download_asset(session, asset, tmp_path, max_attempts=3, **FAST)
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_persistent_breaks_give_up_without_partial_file(server, session, tmp_path):
    data = _payload(400_000)
    asset = _asset(server, "a.nc", data)
    server.faults["/results/a.nc"] = [("break", 1000)] * 20
    with pytest.raises(DownloadError, match="failed after 3 tries"):
        download_asset(session, asset, tmp_path, max_resumes=2, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_http_404_is_an_error_at_once(server, session, tmp_path):
    asset = RemoteAsset(name="gone.nc", href=server.url + "/results/gone.nc")
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_asset(session, asset, tmp_path, **FAST)
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_unsupported_scheme(session, tmp_path):
    with pytest.raises(DownloadError, match="scheme"):
        download_asset(session, RemoteAsset(name="a", href="file:///etc/passwd"), tmp_path)


def test_backend_headers_only_sent_to_backend(server, session, tmp_path):
    data = b"abc"
    inside = RemoteAsset(name="a.nc", href=server.add("/openeo/results/a.nc", data))
    outside = RemoteAsset(name="b.nc", href=server.add("/elsewhere/b.nc", data))
    headers = BackendHeaders(root_url=server.url + "/openeo/", authorization="Bearer basic//secret")
    assert "secret" not in repr(headers)
    download_asset(session, inside, tmp_path, headers=headers)
    download_asset(session, outside, tmp_path, headers=headers)
    auth = {p: a for p, _, a in server.requests}
    assert auth["/openeo/results/a.nc"] == "Bearer basic//secret"
    assert auth["/elsewhere/b.nc"] is None


def test_session_for_uses_connection_session_and_auth():
    from openeo.rest.auth.auth import BasicBearerAuth

    class FakeConnection:
        session = requests.Session()
        root_url = "http://127.0.0.1:1/openeo/1.2/"
        auth = BasicBearerAuth(access_token="tok")

    session, headers = session_for(FakeConnection())
    assert session is FakeConnection.session
    assert headers(FakeConnection.root_url + "jobs/j1/results/a.nc") == {
        "Authorization": "Bearer basic//tok"
    }
    assert headers("http://127.0.0.1:1/other") == {}
    assert "tok" not in repr(headers)


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/../../b", "a\x00b", "a\\b", "..", ".", "", "a//b", "C:x", "a\nb"]
)
def test_hostile_names_refused(name):
    with pytest.raises(UnsafeAssetPath):
        safe_relative_path(name)
    with pytest.raises(UnsafeAssetPath):
        RemoteAsset(name=name, href="http://127.0.0.1/x").relative_path


@pytest.mark.parametrize("name", ["openEO_0.nc", "sub/dir/file.tif", "openEO_2021-01-01T00:00:00Z.tif"])
def test_ordinary_names_accepted(name):
    assert str(safe_relative_path(name)) == name


def test_place_file_moves_atomically_inside_root(tmp_path):
    root = tmp_path / "out"
    tmp = tmp_path / "t.part"
    tmp.write_bytes(b"data")
    final = place_file(tmp, root / "a" / "b" / "f.nc", root)
    assert final.read_bytes() == b"data" and not tmp.exists()
    tmp.write_bytes(b"again")
    assert place_file(tmp, Path("rel/f.nc"), root) == (root / "rel" / "f.nc").resolve()


@pytest.mark.parametrize("target", ["../escape.nc", "/etc/passwd", "a/../../x.nc", "."])
def test_place_file_refuses_escapes(tmp_path, target):
    root = tmp_path / "out"
    root.mkdir()
    tmp = tmp_path / "t.part"
    tmp.write_bytes(b"data")
    with pytest.raises(UnsafeAssetPath):
        place_file(tmp, Path(target) if target.startswith("/") else root / target, root)
    assert tmp.exists()
    assert not (tmp_path / "escape.nc").exists()


def test_place_file_refuses_symlinked_folder_escaping_root(tmp_path):
    root = tmp_path / "out"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    tmp = tmp_path / "t.part"
    tmp.write_bytes(b"data")
    with pytest.raises(UnsafeAssetPath):
        place_file(tmp, root / "link" / "f.nc", root)
    assert list(outside.iterdir()) == []
    inside = root / "real"
    inside.mkdir()
    (root / "ok").symlink_to(inside, target_is_directory=True)
    assert place_file(tmp, root / "ok" / "f.nc", root) == (inside / "f.nc").resolve()


def test_ensure_inside_relative_and_root_itself(tmp_path):
    assert ensure_inside("a/b", tmp_path) == (tmp_path / "a" / "b").resolve()
    with pytest.raises(UnsafeAssetPath):
        ensure_inside(tmp_path, tmp_path)


# --------------------------------------------------------------------------- one job


def _by_index(root: Path):
    def choose(asset: RemoteAsset, tmp_path: Path) -> Path:
        assert tmp_path.exists()
        return root / f"sample_{asset.geometry_index:03d}" / f"data{asset.suffix}"

    return choose


def test_download_job_assets_parallel_and_ordered(server, session, tmp_path):
    assets = [_asset(server, f"openEO_{i}.nc", _payload(200_000, i)) for i in range(12)]
    for a in assets:
        server.faults[f"/results/{a.name}"] = [("sleep", 0.05)]
    root = tmp_path / "out"
    done = download_job_assets(session, assets, root, _by_index(root), max_workers=4, job_key="job-1")
    assert [d.asset.name for d in done] == [a.name for a in assets]
    assert server.max_active >= 2
    for i, d in enumerate(done):
        assert d.path == (root / f"sample_{i:03d}" / "data.nc").resolve()
        assert d.path.read_bytes() == _payload(200_000, i)
        assert d.checksum == assets[i].checksum and not d.reused
    assert _no_temp_files(root)
    records = list((root / STATE_DIR / "downloads").iterdir())
    assert len(records) == 1 and records[0].suffix == ".jsonl"
    header, *lines = records[0].read_text().splitlines()
    assert json.loads(header)["job_key"] == "job-1"
    assert sorted(json.loads(line)[0] for line in lines) == sorted(a.name for a in assets)  # one line each


def test_rerun_skips_verified_files(server, session, tmp_path):
    assets = [_asset(server, f"openEO_{i}.nc", _payload(10_000, i)) for i in range(5)]
    root = tmp_path / "out"
    calls = []

    def choose(asset, tmp):
        calls.append(asset.name)
        return root / asset.name

    download_job_assets(session, assets, root, choose, job_key="j")
    n_requests = len(server.requests)
    again = download_job_assets(session, assets, root, choose, job_key="j")
    assert len(server.requests) == n_requests and len(calls) == 5
    assert all(d.reused for d in again)
    # A file changed on disk (e.g. rewritten) is downloaded again; others stay.
    (root / "openEO_2.nc").write_bytes(b"changed")
    third = download_job_assets(session, assets, root, choose, job_key="j")
    assert [d.reused for d in third] == [True, True, False, True, True]
    assert (root / "openEO_2.nc").read_bytes() == _payload(10_000, 2)
    # Touched but identical content is still reused (hash checked again).
    os.utime(root / "openEO_0.nc", ns=(1, 1))
    assert download_job_assets(session, assets, root, choose, job_key="j")[0].reused
    # Without skip_verified everything is fetched again.
    before = len(server.requests)
    download_job_assets(session, assets, root, choose, job_key="j", skip_verified=False)
    assert len(server.requests) == before + 5


def _record_of(root: Path) -> Path:
    (record,) = (root / STATE_DIR / "downloads").glob("*.jsonl")
    return record


def _one_job(server, session, tmp_path, n: int, job_key: str):
    """``n`` assets of one job, its output folder, and a function downloading them (again)."""
    assets = [_asset(server, f"openEO_{i}.nc", _payload(5_000, i)) for i in range(n)]
    root = tmp_path / "out"

    def download(**options):
        return download_job_assets(session, assets, root, lambda a, t: root / a.name, job_key=job_key, **options)

    return assets, root, download


def test_record_with_a_torn_last_line_still_saves_the_rest(server, session, tmp_path):
    """A crash mid-append leaves a torn line: the lines before it still count, the record heals."""
    assets, root, download = _one_job(server, session, tmp_path, 3, "torn")
    download()
    record = _record_of(root)
    header, *lines = record.read_bytes().splitlines()
    torn = next(line for line in lines if b"openEO_2.nc" in line)
    record.write_bytes(b"\n".join([header, *[x for x in lines if x != torn]]) + b"\n" + torn[:25])
    server.requests.clear()
    assert [d.reused for d in download()] == [True, True, False]
    assert [p for p, _, _ in server.requests] == ["/results/openEO_2.nc"]
    header, *lines = record.read_bytes().splitlines()  # rewritten whole: every line whole
    assert sorted({json.loads(line)[0] for line in lines}) == [a.name for a in assets]
    assert all(d.reused for d in download())


def test_record_of_the_single_document_form_is_carried_over(server, session, tmp_path):
    assets, root, download = _one_job(server, session, tmp_path, 2, "old")
    download()
    record = _record_of(root)
    _, *lines = record.read_bytes().splitlines()
    entries = dict(json.loads(line) for line in lines)
    for entry in entries.values():  # as written then: a bare hex "sha256", no "checksum"
        entry["sha256"] = entry.pop("checksum")[4:]
    legacy = record.with_suffix(".json")
    legacy.write_text(json.dumps({"version": 1, "job_key": "old", "assets": entries}))
    record.unlink()
    server.requests.clear()
    done = download()
    assert all(d.reused for d in done) and server.requests == []
    assert [d.checksum for d in done] == [a.checksum for a in assets]
    assert not legacy.exists() and _record_of(root).exists()


def test_empty_record_left_by_a_crash_is_taken_up_quietly(server, session, tmp_path, caplog):
    """A record created but never written (a crash before its first line) is no foreign record."""
    assets, root, download = _one_job(server, session, tmp_path, 2, "empty")
    download()
    record = _record_of(root)
    record.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="eoextract"):
        assert not any(d.reused for d in download(skip_verified=True))
    assert not [r for r in caplog.records if "download record" in r.getMessage()]
    header, *lines = record.read_bytes().splitlines()
    assert json.loads(header)["job_key"] == "empty" and len(lines) == len(assets)
    assert all(d.reused for d in download())


def test_record_drops_superseded_lines(server, session, tmp_path):
    _, root, download = _one_job(server, session, tmp_path, 1, "many")
    for _ in range(30):
        download(skip_verified=False)
    lines = _record_of(root).read_bytes().splitlines()
    assert 2 <= len(lines) <= 1 + 2 * 1 + 8 + 1  # header + at most the allowed superseded lines


def test_rerun_after_partial_failure_downloads_only_the_rest(server, session, tmp_path):
    assets = [_asset(server, f"openEO_{i}.nc", _payload(5_000, i)) for i in range(4)]
    server.faults["/results/openEO_3.nc"] = ["404"]
    root = tmp_path / "out"
    with pytest.raises(DownloadError) as info:
        download_job_assets(session, assets, root, lambda a, t: root / a.name, job_key="k", **FAST)
    assert info.value.job_key == "k" and info.value.asset == "openEO_3.nc"
    assert _no_temp_files(root)
    server.requests.clear()
    done = download_job_assets(session, assets, root, lambda a, t: root / a.name, job_key="k")
    assert [p for p, _, _ in server.requests] == ["/results/openEO_3.nc"]
    assert [d.reused for d in done] == [True, True, True, False]


def test_job_with_hostile_asset_name_refused_before_download(server, session, tmp_path):
    assets = [_asset(server, "ok.nc", b"1"), RemoteAsset(name="../evil.nc", href=server.url + "/x")]
    with pytest.raises(UnsafeAssetPath):
        download_job_assets(session, assets, tmp_path / "out", lambda a, t: tmp_path / "out" / a.name)
    assert server.requests == []
    assert not (tmp_path / "evil.nc").exists()


def test_chosen_path_outside_root_refused_and_temp_removed(server, session, tmp_path):
    assets = [_asset(server, "a.nc", b"1234")]
    root = tmp_path / "out"
    with pytest.raises(UnsafeAssetPath):
        download_job_assets(session, assets, root, lambda a, t: tmp_path / "elsewhere.nc")
    assert not (tmp_path / "elsewhere.nc").exists()
    assert _no_temp_files(root)


def test_two_assets_same_path_refused(server, session, tmp_path):
    assets = [_asset(server, "a.nc", b"1"), _asset(server, "b.nc", b"2")]
    root = tmp_path / "out"
    with pytest.raises(DownloadError, match="both given the path"):
        download_job_assets(session, assets, root, lambda a, t: root / "same.nc", max_workers=1)


def test_choose_path_error_names_asset(server, session, tmp_path):
    assets = [_asset(server, "a.nc", b"1")]

    def broken(asset, tmp):
        raise KeyError("sample_id")

    with pytest.raises(KeyError) as info:
        download_job_assets(session, assets, tmp_path / "out", broken)
    assert any("'a.nc'" in note for note in info.value.__notes__)
    assert _no_temp_files(tmp_path / "out")


def test_no_assets_is_an_error(session, tmp_path):
    with pytest.raises(DownloadError, match="no result assets"):
        download_job_assets(session, [], tmp_path, lambda a, t: t)


# --------------------------------------------------------------------------- results documents

UTM_BBOX = [600000.0, 5690000.0, 600640.0, 5690640.0]
GEOM = {
    "type": "Polygon",
    "coordinates": [[[4.41, 51.35], [4.42, 51.35], [4.42, 51.36], [4.41, 51.36], [4.41, 51.35]]],
}


def item_style_document(n: int = 11) -> dict:
    """A STAC Item results document, as the embedded backend answers."""
    assets = {}
    for i in range(n):
        data = _payload(1000, i)
        assets[f"openEO_{i}.nc"] = {
            "href": f"/jobs/j-1/results/assets/openEO_{i}.nc",
            "type": "application/x-netcdf",
            "roles": ["data"],
            "title": f"openEO_{i}.nc",
            "file:size": len(data),
            "file:checksum": "1220" + hashlib.sha256(data).hexdigest(),
            "proj:code": "EPSG:32631",
            "proj:shape": [64, 64],
            "proj:bbox": UTM_BBOX,
            "bbox": [4.41, 51.35, 4.42, 51.36],
            "geometry": GEOM,
            "eo:bands": [{"name": "B02"}, {"name": "B03"}],
            "raster:bands": [{"name": "B02", "data_type": "uint16"}, {"name": "B03", "data_type": "uint16"}],
        }
    assets["job-log.json"] = {"href": "https://s3.example/log.json?X-Sig=secret", "roles": ["metadata"]}
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": "j-1",
        "geometry": GEOM,
        "bbox": [4.41, 51.35, 4.42, 51.36],
        "properties": {"start_datetime": "2021-01-01T00:00:00Z", "end_datetime": "2021-03-31T00:00:00Z",
                       "datetime": None},
        "assets": assets,
        "links": [],
    }


def collection_style_document(base: str, n: int = 3) -> tuple[dict, dict[str, dict]]:
    """A STAC 1.0.0 Collection results document with item links, as CDSE answers."""
    assets, links, items = {}, [{"rel": "self", "href": f"{base}/jobs/j-2/results"}], {}
    for i in range(n):
        name = f"openEO_{i}.nc"
        assets[name] = {
            "href": f"{base}/download/j-2/{name}?expires=1&signature=abc",
            "type": "application/x-netcdf",
            "roles": ["data"],
            "title": name,
            "proj:epsg": 32631,
            "proj:bbox": UTM_BBOX,
            "proj:shape": [64, 64],
            "eo:bands": [{"name": "S2-L2A-B02", "common_name": "blue"}, {"name": "S2-L2A-SCL"}],
            "raster:bands": [
                {"name": "S2-L2A-B02", "statistics": {"minimum": 1.0, "maximum": 9000.0}},
                {"name": "S2-L2A-SCL", "statistics": {"minimum": 0.0, "maximum": 11.0}},
            ],
        }
        item_path = f"/jobs/j-2/results/items/{name}"
        links.append({"rel": "item", "href": item_path, "type": "application/geo+json"})
        items[item_path] = {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": name,
            "geometry": {**GEOM, "coordinates": [[[x + i, y] for x, y in GEOM["coordinates"][0]]]},
            "bbox": [4.41 + i, 51.35, 4.42 + i, 51.36],
            "properties": {"datetime": None, "start_datetime": "2021-01-01T00:00:00Z",
                           "end_datetime": "2021-03-31T00:00:00Z"},
            "assets": {name: {"href": assets[name]["href"], "type": "application/x-netcdf"}},
            "links": [],
        }
    doc = {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": "j-2",
        "description": "Results of batch job j-2",
        "license": "proprietary",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
        ],
        "extent": {"spatial": {"bbox": [[4.41, 51.35, 6.42, 51.36]]},
                   "temporal": {"interval": [["2021-01-01T00:00:00Z", "2021-03-31T00:00:00Z"]]}},
        "assets": assets,
        "links": links,
    }
    return doc, items


def test_parse_item_style_document():
    doc = item_style_document()
    assets = parse_job_results(doc, base_url="http://127.0.0.1:9/openeo/1.2/jobs/j-1/results")
    assert len(assets) == 12
    first = assets[0]
    assert first.href == "http://127.0.0.1:9/jobs/j-1/results/assets/openEO_0.nc"
    assert first.size == 1000 and first.checksum == "1220" + hashlib.sha256(_payload(1000, 0)).hexdigest()
    assert first.epsg == 32631 and first.shape == (64, 64) and first.bbox_native == tuple(UTM_BBOX)
    assert first.geometry_4326 == GEOM and first.bbox_4326 == (4.41, 51.35, 4.42, 51.36)
    assert first.start_datetime.year == 2021 and first.end_datetime.month == 3 and first.datetime is None
    assert first.bands[0] == {"name": "B02", "data_type": "uint16"}
    assert first.media_type == "application/x-netcdf" and first.roles == ("data",)
    # Numeric order of openEO_<n>, so 10 comes after 9.
    indices = [a.geometry_index for a in assets]
    assert indices == list(range(11)) + [None]
    assert sorted(assets[:11], key=lambda a: a.geometry_index)[-1].name == "openEO_10.nc"
    log = assets[-1]
    assert log.roles == ("metadata",) and log.checksum is None and log.geometry_4326 is None


def test_parse_collection_style_document_follows_item_links(server, session):
    doc, items = collection_style_document(server.url)
    server.json_docs.update(items)
    fetched = []

    def fetch(url):
        fetched.append(url)
        return session.get(url).json()

    assets = parse_job_results(doc, base_url=server.url + "/jobs/j-2/results", fetch=fetch)
    assert len(fetched) == 3 and [a.name for a in assets] == ["openEO_0.nc", "openEO_1.nc", "openEO_2.nc"]
    second = assets[1]
    assert second.epsg == 32631 and second.shape == (64, 64) and second.size is None and second.checksum is None
    assert second.bbox_4326 == (5.41, 51.35, 5.42, 51.36)
    assert second.geometry_4326["coordinates"][0][0] == [5.41, 51.35]
    assert second.start_datetime.isoformat() == "2021-01-01T00:00:00+00:00"
    assert second.bands[0]["common_name"] == "blue" and second.bands[0]["statistics"]["maximum"] == 9000.0
    assert second.geometry_index == 1
    # Without fetch, the collection's temporal extent still gives the time range.
    bare = parse_job_results(doc, base_url=server.url)
    assert bare[0].geometry_4326 is None and bare[0].end_datetime.month == 3


def test_unreadable_item_link_is_tolerated(server):
    doc, _ = collection_style_document(server.url, n=1)

    def fetch(url):
        raise requests.ConnectionError("boom")

    (asset,) = parse_job_results(doc, base_url=server.url, fetch=fetch)
    assert asset.geometry_4326 is None and asset.epsg == 32631


@pytest.mark.parametrize(
    "doc, message",
    [
        ([], "JSON object"),
        ({"type": "FeatureCollection", "features": []}, "unexpected type"),
        ({"type": "Feature", "assets": {}}, "no assets"),
        ({"type": "Collection"}, "no assets"),
        ({"type": "Feature", "assets": {"a": {"type": "image/tiff"}}}, "no href"),
        ({"type": "Feature", "assets": {"a": "http://x"}}, "not an object"),
    ],
)
def test_invalid_results_documents(doc, message):
    with pytest.raises(DownloadError, match=message):
        parse_job_results(doc, base_url="http://127.0.0.1/")


def test_feature_index_field_gives_geometry_index():
    doc = {"type": "Feature", "assets": {
        "sample.nc": {"href": "http://h/a", "feature_index": 4},
        "openEO_2.nc": {"href": "http://h/b", "feature_index": 7},
        "log.json": {"href": "http://h/c", "feature_index": True},
    }}
    assert [a.geometry_index for a in parse_job_results(doc, base_url="http://h/")] == [4, 2, None]


def test_checksums_of_unknown_hash_functions_or_malformed_are_ignored():
    doc = {"type": "Feature", "assets": {
        "sha1": {"href": "http://h/a", "file:checksum": "1114" + "AB" * 20},
        "keccak": {"href": "http://h/b", "file:checksum": "1b20" + "ab" * 32},
        "short": {"href": "http://h/c", "file:checksum": "1220" + "ab" * 31},
        "number": {"href": "http://h/d", "file:checksum": 1220},
    }}
    checksums = {a.name: a.checksum for a in parse_job_results(doc, base_url="http://h/")}
    assert checksums == {"sha1": "1114" + "ab" * 20, "keccak": None, "short": None, "number": None}


def test_announced_checksum_is_verified_with_its_own_hash_function(server, session, tmp_path):
    data = _payload(300_000, 7)
    href = server.add("/results/openEO_0.nc", data)
    good = RemoteAsset(name="openEO_0.nc", href=href, checksum="1340" + hashlib.sha512(data).hexdigest())
    (done,) = download_job_assets(session, [good], tmp_path / "out", _by_index(tmp_path / "out"), job_key="j")
    assert done.checksum == good.checksum
    bad = RemoteAsset(name="openEO_0.nc", href=href, checksum="1340" + hashlib.sha512(data + b"!").hexdigest())
    with pytest.raises(ChecksumMismatch):
        download_job_assets(session, [bad], tmp_path / "out2", _by_index(tmp_path / "out2"), job_key="j2",
                            max_attempts=1)


def test_unannounced_checksum_is_sha256_and_kept_across_reruns(server, session, tmp_path):
    data = _payload(250_000, 3)
    asset = _asset(server, "openEO_1.nc", data, checksum=False)
    root = tmp_path / "out"
    (first,) = download_job_assets(session, [asset], root, _by_index(root), job_key="j")
    assert first.checksum == "1220" + hashlib.sha256(data).hexdigest()
    (again,) = download_job_assets(session, [asset], root, _by_index(root), job_key="j")
    assert again.reused and again.checksum == first.checksum
    # the backend now announces the same SHA-256: the placed file is neither fetched nor hashed again
    announced = RemoteAsset(name=asset.name, href=asset.href, checksum=first.checksum)
    requests_before = len(server.requests)
    (third,) = download_job_assets(session, [announced], root, _by_index(root), job_key="j")
    assert third.reused and third.checksum == announced.checksum and len(server.requests) == requests_before


def test_blake3_on_request_and_its_records_kept(server, session, tmp_path):
    data = _payload(250_000, 4)
    asset = _asset(server, "openEO_1.nc", data, checksum=False)
    root = tmp_path / "out"
    (first,) = download_job_assets(session, [asset], root, _by_index(root), job_key="j",
                                   checksum_algorithm="blake3")
    assert first.checksum == "1e20" + blake3.blake3(data).hexdigest()
    # a rerun with the default keeps the BLAKE3 record rather than download again
    (again,) = download_job_assets(session, [asset], root, _by_index(root), job_key="j")
    assert again.reused and again.checksum == first.checksum
    # the backend now announces a SHA-256: the placed file is hashed with it, not fetched again
    announced = RemoteAsset(name=asset.name, href=asset.href, checksum="1220" + hashlib.sha256(data).hexdigest())
    requests_before = len(server.requests)
    (third,) = download_job_assets(session, [announced], root, _by_index(root), job_key="j")
    assert third.reused and third.checksum == announced.checksum and len(server.requests) == requests_before
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        download_job_assets(session, [asset], tmp_path / "x", _by_index(tmp_path / "x"), job_key="x",
                            checksum_algorithm="crc32")


@pytest.mark.parametrize("overlap", [True, False, None])
def test_hashing_in_a_thread_or_inline_gives_the_same_checksum(server, session, tmp_path, overlap):
    data = _payload(3_000_000, 5)
    asset = _asset(server, "openEO_2.nc", data, checksum=False)
    root = tmp_path / "out"
    (done,) = download_job_assets(session, [asset], root, _by_index(root), job_key="j", chunk_size=1 << 16,
                                  overlap_hashing=overlap)
    assert done.checksum == "1220" + hashlib.sha256(data).hexdigest()
    assert done.path.read_bytes() == data


def test_end_to_end_item_document(server, session, tmp_path):
    doc = item_style_document(n=3)
    del doc["assets"]["job-log.json"]
    for i in range(3):
        server.add(f"/jobs/j-1/results/assets/openEO_{i}.nc", _payload(1000, i))
    assets = parse_job_results(doc, base_url=server.url + "/jobs/j-1/results")
    root = tmp_path / "out"
    done = download_job_assets(session, assets, root, _by_index(root), job_key="j-1")
    assert [d.path.parent.name for d in done] == ["sample_000", "sample_001", "sample_002"]


def test_fresh_file_times_are_not_trusted(tmp_path):
    from eoextract.jobs._download._download_records import _Manifest

    manifest = _Manifest(tmp_path, "job")
    path = tmp_path / "f.nc"
    path.write_bytes(b"x")
    asset = RemoteAsset(name="f.nc", href="http://127.0.0.1:1/f.nc")
    assert manifest.record(asset, path, 1, "0" * 64) is None
    os.utime(path, ns=(10**18, 10**18))
    assert manifest.record(asset, path, 1, "0" * 64) == 10**18


def test_without_fsync_still_places_and_verifies(server, session, tmp_path):
    assets = [_asset(server, f"openEO_{i}.nc", _payload(3000, i)) for i in range(3)]
    root = tmp_path / "out"
    done = download_job_assets(session, assets, root, lambda a, t: root / a.name, fsync=False)
    assert [d.path.read_bytes() for d in done] == [_payload(3000, i) for i in range(3)]


def test_a_failed_flush_leaves_no_placed_file_and_is_reported(server, session, tmp_path, monkeypatch):
    """The flush runs after the download in another thread; when the disk reports an error
    there, the asset fails, nothing is placed or recorded, and the others still land."""
    import errno

    import eoextract.jobs._download._job_assets as download_module

    assets = [_asset(server, f"openEO_{i}.nc", _payload(3_000_000, i)) for i in range(3)]
    real = download_module.fdatasync_file
    flushed: list[str] = []

    def flaky(path):
        if path.stat().st_size and _payload(3_000_000, 1)[:64] == path.read_bytes()[:64]:
            raise OSError(errno.EIO, "Input/output error")
        real(path)
        flushed.append(path.name)

    monkeypatch.setattr(download_module, "fdatasync_file", flaky)
    root = tmp_path / "out"
    with pytest.raises(OSError, match="Input/output error") as info:
        download_job_assets(session, assets, root, lambda a, t: root / a.name, max_workers=1, job_key="j")
    assert "1 of 3 assets failed" not in str(info.value)  # one failure: no summary note
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["openEO_0.nc", "openEO_2.nc"]
    assert len(flushed) == 2 and _no_temp_files(root)
    # a rerun downloads only the missing one
    before = len(server.requests)
    monkeypatch.setattr(download_module, "fdatasync_file", real)
    done = download_job_assets(session, assets, root, lambda a, t: root / a.name, job_key="j")
    assert [d.reused for d in done] == [True, False, True] and len(server.requests) == before + 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range exists only on Linux")
def test_early_writeback_hands_pages_to_the_disk_and_gives_up_where_unsupported(tmp_path):
    from eoextract.jobs._download._disk import EarlyWriteback

    with open(tmp_path / "f.bin", "wb") as fh:
        writeback = EarlyWriteback(fh, step=1 << 20)
        fh.write(b"x" * 300_000)
        writeback.advance(300_000)
        assert writeback.started == 0  # less than a step: nothing yet
        fh.write(b"y" * (2 << 20))
        writeback.advance(300_000 + (2 << 20))
        assert writeback.enabled and writeback.started == 300_000 + (2 << 20)
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "wb", closefd=False) as pipe:
            writeback = EarlyWriteback(pipe, step=1)
            pipe.write(b"z" * 10)
            writeback.advance(10)  # ESPIPE: switched off, no error
            assert not writeback.enabled and writeback.started == 0
    finally:
        os.close(read_end)
        os.close(write_end)
