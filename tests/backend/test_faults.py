"""Fault injection: per job through job options, per request through the admin route."""

from __future__ import annotations

import time

import pytest
import requests
from api_helpers import auth_headers, checksum, instant_graph, title  # noqa: F401
from openeo.rest import OpenEoApiError

from eoextract.backend import LocalBackend


def _job(connection, title, fault, **extra):
    options = {"eoextract_mode": "instant", "eoextract_fault": fault, **extra}
    return connection.create_job(instant_graph(), title=title, job_options=options, validate=False)


def _wait(job, statuses=("finished", "error", "canceled"), timeout=60.0):
    deadline = time.monotonic() + timeout
    while (status := job.status()) not in statuses:
        assert time.monotonic() < deadline, f"job still {status}"
        time.sleep(0.05)
    return status


# -- job faults ------------------------------------------------------------------------
def test_error_fault(connection, title):
    job = _job(connection, title, "error")
    job.start()
    assert _wait(job) == "error"
    errors = job.logs(level="error")
    assert errors and "eoextract_fault=error" in errors[-1]["message"]


def test_error_fault_on_a_worker_job(connection, title):
    graph = instant_graph()
    job = connection.create_job(graph, title=title, job_options={"eoextract_fault": "error"},
                                validate=False)
    job.start()
    assert _wait(job) == "error"
    assert job.logs(level="error")


def test_fault_times_counts_per_title(connection, title):
    statuses = []
    for _ in range(3):
        job = _job(connection, title, "error", eoextract_fault_times=2)
        job.start()
        statuses.append(_wait(job))
    assert statuses == ["error", "error", "finished"]
    other = _job(connection, title + "-other", "error", eoextract_fault_times=2)
    other.start()
    assert _wait(other) == "error"


def test_slow_fault(connection, title):
    job = _job(connection, title, "slow", eoextract_fault_delay_s=1.0)
    t0 = time.monotonic()
    job.start()
    assert job.status() == "running"
    assert 0 < job.describe()["progress"] < 100
    assert _wait(job) == "finished"
    assert time.monotonic() - t0 >= 0.9


def test_slow_job_can_be_canceled(connection, title):
    job = _job(connection, title, "slow", eoextract_fault_delay_s=30)
    job.start()
    assert job.status() == "running"
    job.stop()
    assert job.status() == "canceled"


def test_lost_fault(connection, title):
    job = _job(connection, title, "lost")
    job.start()
    with pytest.raises(OpenEoApiError) as info:
        job.status()
    assert info.value.http_status_code == 404 and info.value.code == "JobNotFound"
    assert job.job_id not in {j["id"] for j in connection.list_jobs(limit=None)}


def test_lost_fault_after_a_delay(connection, title):
    job = _job(connection, title, "lost", eoextract_fault_delay_s=0.5)
    job.start()
    assert job.status() == "running"
    time.sleep(1.0)
    with pytest.raises(OpenEoApiError) as info:
        job.status()
    assert info.value.code == "JobNotFound"


def test_corrupt_asset_fault(connection, title):
    job = _job(connection, title, "corrupt_asset")
    job.start()
    assert job.status() == "finished"
    (asset,) = job.get_results().get_assets()
    data = asset.load_bytes()
    assert len(data) == asset.metadata["file:size"]
    assert checksum(data) != asset.metadata["file:checksum"]
    # every ranged read of the same bytes is corrupted the same way
    size = len(data)
    parts = [
        requests.get(asset.href, headers={"Range": f"bytes={a}-{min(a + 99, size - 1)}"},
                     timeout=10).content
        for a in range(0, size, 100)
    ]
    assert b"".join(parts) == data


def test_unknown_fault_is_rejected(connection, title):
    with pytest.raises(OpenEoApiError) as info:
        _job(connection, title, "explode")
    assert info.value.http_status_code == 400


# -- request faults --------------------------------------------------------------------
def test_request_fault_5xx_then_normal(local_backend, connection, title, auth_headers):
    job = connection.create_job(instant_graph(), title=title, validate=False)
    url = f"{local_backend.url}jobs/{job.job_id}"
    local_backend.inject_fault(rf"^/jobs/{job.job_id}$", status=503, times=2, method="GET")
    for _ in range(2):
        resp = requests.get(url, headers=auth_headers, timeout=10)
        assert resp.status_code == 503 and resp.json()["code"] == "ServiceUnavailable"
    assert requests.get(url, headers=auth_headers, timeout=10).json()["id"] == job.job_id
    # the openeo client sees a 500 as an API error
    local_backend.inject_fault(rf"^/jobs/{job.job_id}$", status=500, times=1, method="GET")
    with pytest.raises(OpenEoApiError) as info:
        job.describe()
    assert info.value.http_status_code == 500
    assert job.describe()["id"] == job.job_id


def test_request_fault_429_with_retry_after(local_backend, auth_headers):
    local_backend.inject_fault("^/me$", status=429, times=1, retry_after=7)
    resp = requests.get(f"{local_backend.url}me", headers=auth_headers, timeout=10)
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "7"
    assert resp.json()["code"] == "TooManyRequests"
    assert requests.get(f"{local_backend.url}me", headers=auth_headers, timeout=10).ok


def test_request_fault_hang(local_backend, auth_headers):
    local_backend.inject_fault("^/me$", status=None, delay_s=0.6, times=1)
    t0 = time.monotonic()
    resp = requests.get(f"{local_backend.url}me", headers=auth_headers, timeout=10)
    assert resp.ok and time.monotonic() - t0 >= 0.5
    local_backend.inject_fault("^/me$", status=None, delay_s=5, times=1)
    with pytest.raises(requests.Timeout):
        requests.get(f"{local_backend.url}me", headers=auth_headers, timeout=0.5)
    local_backend.clear_faults()


def test_admin_route_lists_and_clears(local_backend):
    local_backend.inject_fault("^/never$", times=3)
    listed = local_backend.list_faults()
    assert any(f["path_regex"] == "^/never$" and f["times"] == 3 for f in listed)
    local_backend.clear_faults()
    assert local_backend.list_faults() == []
    admin = {"Authorization": f"Bearer {local_backend.fault_token}"}
    bad = requests.post(f"{local_backend.url}_admin/faults", json={"status": 500}, headers=admin,
                        timeout=10)
    assert bad.status_code == 400 and bad.json()["code"] == "BadRequest"


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_admin_route_needs_the_fault_token(local_backend, connection, method):
    url = f"{local_backend.url}_admin/faults"
    rule = {"path_regex": "^/collections$", "status": 503}
    missing = requests.request(method, url, json=rule, timeout=10)
    assert missing.status_code == 401 and missing.json()["code"] == "AuthenticationRequired"
    wrong = requests.request(method, url, json=rule, timeout=10,
                             headers={"Authorization": f"Bearer {local_backend.fault_token}x"})
    assert wrong.status_code == 403 and wrong.json()["code"] == "TokenInvalid"
    # an openEO user's bearer token is not the fault token either
    user = requests.request(method, url, json=rule, timeout=10,
                            headers={"Authorization": f"Bearer basic//{connection.auth.bearer}"})
    assert user.status_code == 403
    assert local_backend.list_faults() == []  # nothing was added
    assert requests.get(f"{local_backend.url}collections", timeout=10).status_code == 200


def test_fault_token_is_per_instance_and_can_be_given():
    with LocalBackend(faults=True) as first, LocalBackend(faults=True, fault_token="chosen") as second:
        assert first.fault_token and len(first.fault_token) >= 24
        assert second.fault_token == "chosen"
        assert LocalBackend(faults=True).fault_token != first.fault_token
        settings = repr(first.app.state.backend.settings)
        assert first.fault_token not in settings and "'eoextract'" not in settings
        wrong = requests.get(f"{second.url}_admin/faults", timeout=10,
                             headers={"Authorization": f"Bearer {first.fault_token}"})
        assert wrong.status_code == 403
        assert second.inject_fault("^/me$")["times"] == 1 and len(second.list_faults()) == 1


def test_admin_route_absent_without_faults():
    with LocalBackend() as backend:
        resp = requests.post(f"{backend.url}_admin/faults", json={"path_regex": "x"}, timeout=10)
        assert resp.status_code == 404
        with pytest.raises(RuntimeError):
            backend.inject_fault("x")
        with pytest.raises(RuntimeError):
            backend.list_faults()
        assert backend.fault_token is None
