"""Shared fixtures: the embedded openEO backend over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

# Tests talk to loopback only; keep proxies out of the way.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"


@pytest.fixture(scope="session")
def local_backend(tmp_path_factory):
    """One embedded backend for the session (with fault injection enabled)."""
    from eoextract.backend.local import LocalBackend

    with LocalBackend(data_dir=tmp_path_factory.mktemp("backend"), faults=True) as backend:
        yield backend


@pytest.fixture()
def connection(local_backend):
    """An authenticated ``openeo.Connection`` to the session's embedded backend."""
    return local_backend.connect()
