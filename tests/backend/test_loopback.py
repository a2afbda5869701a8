"""URLs read by the embedded backend stay on loopback hosts, redirects included."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading

import pytest
import urllib3.util.connection

from eoextract.backend._api_errors import OpenEOApiError, ProcessParameterInvalid
from eoextract.backend._loopback import UrlNotAllowed, get_loopback
from eoextract.backend._user_processes import fetch_remote_process
from eoextract.backend._vector_processes import load_url

OUTSIDE = "http://203.0.113.7:8080"  # TEST-NET-3: never routed
UDP = {"id": "double", "parameters": [{"name": "x", "schema": {}}],
       "process_graph": {"m": {"process_id": "multiply",
                               "arguments": {"x": {"from_parameter": "x"}, "y": 2}, "result": True}}}
POINT = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [5.0, 51.0]}}]}


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """``/out/...`` redirects off the machine, ``/hop/...`` to a loopback path, else documents."""

    def do_GET(self) -> None:  # noqa: N802
        routes = {
            "/out": (302, OUTSIDE + "/x"),
            "/out-userinfo": (307, "http://127.0.0.1@203.0.113.7/x"),
            "/out-scheme": (301, "file:///etc/passwd"),
            "/hop-udp": (302, "/udp"),
            "/hop-points": (308, f"http://localhost:{self.server.server_address[1]}/points"),
            "/loop": (302, "/loop"),
        }
        if self.path in routes:
            status, location = routes[self.path]
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        docs = {"/udp": UDP, "/points": POINT}
        body = json.dumps(docs.get(self.path, {})).encode()
        self.send_response(200 if self.path in docs else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def redirector():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Redirecting)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def connections(monkeypatch):
    """Hosts connected to over HTTP; connecting anywhere but loopback fails at once."""
    seen: list[str] = []
    real = urllib3.util.connection.create_connection

    def spy(address, *args, **kwargs):
        seen.append(address[0])
        if address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise ConnectionRefusedError(f"test: no connection to {address[0]}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", spy)
    return seen


@pytest.mark.parametrize("path", ["/out", "/out-userinfo", "/out-scheme"])
def test_redirect_off_loopback_is_refused_before_connecting(redirector, connections, path):
    with pytest.raises(UrlNotAllowed, match="redirect refused"):
        get_loopback(redirector + path, timeout_s=5)
    assert connections and set(connections) == {"127.0.0.1"}


def test_load_url_refuses_a_redirect_off_loopback(redirector, connections):
    with pytest.raises(ProcessParameterInvalid, match="redirect refused.*203.0.113.7"):
        load_url(redirector + "/out", "GeoJSON")
    assert set(connections) == {"127.0.0.1"}


def test_remote_process_namespace_refuses_a_redirect_off_loopback(redirector, connections):
    with pytest.raises(OpenEOApiError, match="redirect refused") as info:
        fetch_remote_process(redirector + "/out", "double", timeout_s=5)
    assert info.value.code == "ProcessNamespaceInvalid" and info.value.status == 400
    assert set(connections) == {"127.0.0.1"}


def test_redirects_between_loopback_hosts_are_followed(redirector, connections):
    assert fetch_remote_process(redirector + "/hop-udp", "double", timeout_s=5)["id"] == "double"
    gdf = load_url(redirector + "/hop-points", "GeoJSON")
    assert len(gdf) == 1
    assert set(connections) <= {"127.0.0.1", "localhost", "::1"}


def test_redirect_loops_end(redirector, connections):
    with pytest.raises(UrlNotAllowed, match="more than 5 redirects"):
        get_loopback(redirector + "/loop", timeout_s=5)
    assert len(connections) <= 6


def test_non_loopback_url_is_refused_without_connecting(connections):
    with pytest.raises(UrlNotAllowed):
        get_loopback(OUTSIDE + "/x")
    with pytest.raises(OpenEOApiError, match="loopback"):
        fetch_remote_process(OUTSIDE + "/udp", "double")
    assert connections == []
