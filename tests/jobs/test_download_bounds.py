"""Downloads are bounded: against a hostile loopback server, bytes received stay bounded and
no partial file is left.

The server is a raw socket server that answers each path with a scripted misbehaviour
(fault injection): a body that never ends (close-delimited or chunked), a body longer than
announced, a gzip body to a request for ``identity``. It counts the bytes it managed to send;
what the client received is at most that.
"""

from __future__ import annotations

import errno
import gzip
import socketserver
import threading
from pathlib import Path

import pytest

from eoextract.errors import AssetRefused
from eoextract.jobs import JobManager
from eoextract.jobs._classify import classify
from eoextract.jobs._download import RemoteAsset, download_asset, download_job_assets
from eoextract.jobs._download import _transfer

MIB = 1 << 20
#: What a misbehaving answer sends at most (the test server's own bound, so that a client
#: without bounds ends too).
SERVER_CAP = 96 * MIB
#: Bytes the client may let through before it stops: its bound plus what the kernel's
#: socket buffers on both ends hold (a few MiB on loopback); far below SERVER_CAP.
SENT_BOUND = 24 * MIB


class HostileServer:
    """``modes[path]`` is one of ``"endless"`` (no length, closes never), ``"chunked"``
    (endless chunked body), ``("long", n)`` (``Content-Length: n`` and n bytes),
    ``("gzip", n)`` (n zero bytes gzip-compressed, ``Content-Encoding: gzip``)."""

    def __init__(self) -> None:
        self.modes: dict[str, object] = {}
        self.sent: dict[str, int] = {}
        self.requests: list[str] = []
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = b""
                while b"\r\n\r\n" not in head:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    head += data
                path = head.split(b" ", 2)[1].decode()
                server.requests.append(path)
                server.sent[path] = 0
                mode = server.modes[path]
                block = b"\0" * 65536
                try:
                    if mode == "endless":
                        self.request.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                        while server.sent[path] < SERVER_CAP:
                            self.request.sendall(block)
                            server.sent[path] += len(block)
                    elif mode == "chunked":
                        self.request.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                        chunk = b"%x\r\n" % len(block) + block + b"\r\n"
                        while server.sent[path] < SERVER_CAP:
                            self.request.sendall(chunk)
                            server.sent[path] += len(block)
                        self.request.sendall(b"0\r\n\r\n")
                    elif mode[0] == "long":
                        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % mode[1])
                        while server.sent[path] < mode[1]:
                            self.request.sendall(block)
                            server.sent[path] += len(block)
                    elif mode[0] == "gzip":
                        body = gzip.compress(b"\0" * mode[1])
                        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                                             b"Content-Length: %d\r\n\r\n" % len(body) + body)
                        server.sent[path] += len(body)
                except OSError:  # the client hung up: what it refused
                    return

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def asset(self, name: str, mode: object, size: int | None = None) -> RemoteAsset:
        self.modes[f"/{name}"] = mode
        return RemoteAsset(name=name, href=f"{self.url}/{name}", size=size)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def hostile():
    srv = HostileServer()
    yield srv
    srv.close()


FAST = {"backoff": 0.0, "timeout": (5.0, 10.0)}


@pytest.mark.parametrize("mode", ["endless", "chunked"])
def test_a_body_that_never_ends_stops_at_the_announced_size(hostile, session, tmp_path, mode):
    asset = hostile.asset("openEO_0.nc", mode, size=1000)
    with pytest.raises(AssetRefused, match="longer than the 1000 bytes the results document announced") as info:
        download_asset(session, asset, tmp_path, **FAST)
    assert hostile.requests == ["/openEO_0.nc"]  # neither resumed nor downloaded again
    assert hostile.sent["/openEO_0.nc"] < SENT_BOUND
    assert list(tmp_path.iterdir()) == []
    assert classify(info.value).retryable is False


def test_an_announced_length_beyond_the_size_is_refused_before_the_body(hostile, session, tmp_path):
    asset = hostile.asset("a.nc", ("long", 64 * MIB), size=1000)
    with pytest.raises(AssetRefused, match="refused before reading it"):
        download_asset(session, asset, tmp_path, **FAST)
    assert hostile.requests == ["/a.nc"] and hostile.sent["/a.nc"] < SENT_BOUND
    assert list(tmp_path.iterdir()) == []


def test_a_gzip_body_to_an_identity_request_is_refused_not_decoded(hostile, session, tmp_path):
    asset = hostile.asset("a.nc", ("gzip", 256 * MIB))  # 256 MiB once decoded
    with pytest.raises(AssetRefused, match="Content-Encoding 'gzip'"):
        download_asset(session, asset, tmp_path, **FAST)
    assert hostile.requests == ["/a.nc"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["endless", "chunked"])
def test_without_an_announced_size_max_asset_bytes_bounds_the_file(hostile, session, tmp_path, mode):
    asset = hostile.asset("a.nc", mode)
    with pytest.raises(AssetRefused, match=r"longer than max_asset_bytes \(2097152 bytes\)"):
        download_asset(session, asset, tmp_path, max_asset_bytes=2 * MIB, **FAST)
    assert hostile.sent["/a.nc"] < SENT_BOUND
    assert list(tmp_path.iterdir()) == []


def test_without_an_announced_size_the_default_bound_is_documented():
    assert _transfer.DEFAULT_MAX_ASSET_BYTES == 16 << 30
    assert "16 GiB" in download_asset.__doc__ + _transfer.download_to_temp.__doc__


def test_without_an_announced_size_the_free_disk_space_bounds_the_file(hostile, session, tmp_path, monkeypatch):
    monkeypatch.setattr(_transfer, "_free_bytes", lambda folder: 3 * MIB)  # fault injection: a nearly full disk
    asset = hostile.asset("a.nc", "endless")
    with pytest.raises(OSError) as info:
        download_asset(session, asset, tmp_path, **FAST)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path)
    assert hostile.sent["/a.nc"] < SENT_BOUND
    assert list(tmp_path.iterdir()) == []
    assert classify(info.value).retryable is True  # the job goes on once space is freed


def test_an_announced_size_beyond_the_free_disk_space_is_refused_before_the_body(hostile, session, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setattr(_transfer, "_free_bytes", lambda folder: 3 * MIB)
    asset = hostile.asset("a.nc", ("long", 8 * MIB), size=8 * MIB)
    with pytest.raises(OSError, match="No space left on device .*8388608 more bytes needed, 3145728 free") as info:
        download_asset(session, asset, tmp_path, **FAST)
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_jobs_download_leaves_no_partial_file_and_names_the_asset(hostile, session, tmp_path):
    assets = [hostile.asset("openEO_0.nc", "endless", size=1000)]
    with pytest.raises(AssetRefused) as info:
        download_job_assets(session, assets, tmp_path, lambda a, t: a.name, job_key="job-1", **FAST)
    assert info.value.job_key == "job-1" and info.value.asset == "openEO_0.nc"
    assert not [p for p in Path(tmp_path).rglob("*") if p.is_file() and p.stat().st_size > 0
                and "downloads" not in p.parts]


def test_the_manager_takes_max_asset_bytes():
    assert JobManager(root_dir=None).max_asset_bytes == _transfer.DEFAULT_MAX_ASSET_BYTES
    assert JobManager(root_dir=None, max_asset_bytes=5 * MIB).max_asset_bytes == 5 * MIB
