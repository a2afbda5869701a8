"""Files the package writes get the mode ``open()`` would give (``0666`` less the umask)."""

from __future__ import annotations

import functools
import os
import stat
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from eoextract._util.files import atomic_write, atomic_write_json, current_umask, temp_file
from eoextract.jobs._download import RemoteAsset, download_asset, place_file


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_current_umask_reads_without_changing_it(umask):
    assert current_umask() == umask
    assert current_umask() == umask


def test_atomic_writes_respect_the_umask(tmp_path, umask):
    atomic_write(tmp_path / "a.txt", "text")
    atomic_write_json(tmp_path / "item.json", {"id": "x"})
    fd, tmp = temp_file(tmp_path)
    os.close(fd)
    expected = 0o666 & ~umask
    assert mode(tmp_path / "a.txt") == expected
    assert mode(tmp_path / "item.json") == expected
    assert mode(tmp) == expected


def test_downloaded_data_files_respect_the_umask(tmp_path, umask):
    served = tmp_path / "served"
    served.mkdir()
    (served / "openEO_0.nc").write_bytes(b"netcdf" * 1000)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        asset = RemoteAsset(name="openEO_0.nc",
                            href=f"http://127.0.0.1:{httpd.server_port}/openEO_0.nc", size=6000)
        with requests.Session() as session:
            session.trust_env = False
            tmp = download_asset(session, asset, tmp_path / "tmp")
        final = place_file(tmp, tmp_path / "out" / "sample_0.nc", tmp_path / "out")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert final.read_bytes() == b"netcdf" * 1000
    assert mode(final) == 0o666 & ~umask
