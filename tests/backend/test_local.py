"""LocalBackend life cycle, restarts on the same data folder, and ``eoextract backend serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests
from api_helpers import BBOX, instant_graph

from eoextract.backend import LocalBackend

INSTANT = {"eoextract_mode": "instant"}


def _wait(job, statuses=("finished", "error", "canceled"), timeout=120.0):
    deadline = time.monotonic() + timeout
    while (status := job.status()) not in statuses:
        assert time.monotonic() < deadline, f"job still {status}"
        time.sleep(0.1)
    return status


def _instant_job_round_trip(backend: LocalBackend, download_dir) -> bytes:
    """Create, start and finish an instant job, then download its result; its bytes."""
    conn = backend.connect()
    job = conn.create_job(instant_graph(), title="relative", job_options=INSTANT, validate=False)
    job.start()
    assert _wait(job) == "finished", job.logs()
    (asset,) = job.get_results().get_assets()
    path = asset.download(download_dir / "result.nc")
    data = path.read_bytes()
    assert len(data) == asset.metadata["file:size"] > 0
    return data


def test_relative_data_dir_runs_jobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from eoextract.backend import BackendSettings

    assert BackendSettings(data_dir="rel").data_dir == tmp_path.resolve() / "rel"
    backend = LocalBackend(data_dir="rel", workers=1)
    assert backend.data_dir == tmp_path.resolve() / "rel"
    with backend:
        monkeypatch.chdir(tmp_path / "rel")  # a later change of directory must not matter
        data = _instant_job_round_trip(backend, tmp_path)
    assert data.startswith(b"\x89HDF")
    assert list((tmp_path / "rel" / "jobs").iterdir())


def test_serve_options_with_relative_data_dir_run_jobs(tmp_path, monkeypatch):
    """The README's ``backend serve --data-dir ./backend-data``, through the CLI's option handling."""
    from typer.testing import CliRunner

    from eoextract.cli import app

    served: list[LocalBackend] = []

    def serve_briefly(self: LocalBackend) -> None:  # instead of serving until interrupted
        served.append(self)
        with self:
            _instant_job_round_trip(self, tmp_path)

    monkeypatch.setattr(LocalBackend, "_serve_in_foreground", serve_briefly)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["backend", "serve", "--port", "0", "--data-dir", "./backend-data", "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    (backend,) = served
    assert backend.data_dir == tmp_path.resolve() / "backend-data"
    assert list((tmp_path / "backend-data" / "jobs").iterdir())


def test_start_stop_and_temporary_data_dir():
    backend = LocalBackend()
    with backend:
        assert backend.url.startswith("http://127.0.0.1:")
        data_dir = backend.app.state.backend.data_dir
        assert data_dir.is_dir()
        assert requests.get(backend.url, timeout=10).json()["api_version"] == "1.2.0"
        url = backend.url
    assert not data_dir.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)
    with pytest.raises(RuntimeError):
        _ = backend.url


def test_a_script_starting_the_backend_prints_no_dependency_notice(tmp_path):
    """openeo-processes-dask's notice about its machine-learning extra stays out of a script's output."""
    code = ("from eoextract import LocalBackend\n"
            "with LocalBackend() as b:\n"
            "    cube = b.connect().load_collection('SENTINEL2_L2A', spatial_extent={'west': 5.0, "
            "'south': 51.0, 'east': 5.01, 'north': 51.01}, temporal_extent=['2021-06-01', "
            "'2021-06-10'], bands=['B04'])\n"
            "    job = cube.create_job(out_format='NetCDF', job_options={'eoextract_mode': 'instant'})\n"
            "    job.start_and_wait(print=lambda *a: None, max_poll_interval=0.2)\n"
            "    print(job.status())\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "finished"
    assert "machine learning" not in run.stderr


def test_custom_credentials_and_cdse_style(tmp_path):
    with LocalBackend(user="alice", password="s3cret", result_style="cdse") as backend:
        conn = backend.connect()
        assert conn.describe_account()["user_id"] == "alice"
        job = conn.create_job(instant_graph(), job_options=INSTANT, validate=False)
        job.start()
        meta = job.get_results().get_metadata()
        assert meta["stac_version"] == "1.0.0"
        (asset,) = meta["assets"].values()
        assert "proj:epsg" in asset and "file:checksum" not in asset


@pytest.mark.slow
def test_jobs_survive_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    graph = {
        "load": {"process_id": "load_collection",
                 "arguments": {"id": "SENTINEL2_L2A", "spatial_extent": BBOX,
                               "temporal_extent": ["2021-06-01", "2021-06-06"], "bands": ["B04"]}},
        "save": {"process_id": "save_result",
                 "arguments": {"data": {"from_node": "load"}, "format": "NetCDF"}, "result": True},
    }
    with LocalBackend(data_dir=data_dir, workers=1) as first:
        port = int(first.url.rsplit(":", 1)[1].strip("/"))
        conn = first.connect()
        done = conn.create_job(instant_graph(), title="done", job_options=INSTANT, validate=False)
        done.start()
        before = done.get_results().get_metadata()["assets"]
        untouched = conn.create_job(instant_graph(), title="untouched", validate=False)
        # holds the only worker slot ("running"), so the next job stays "queued"
        running = conn.create_job(graph, title="running", validate=False,
                                  job_options={"eoextract_fault": "slow",
                                               "eoextract_fault_delay_s": 60})
        running.start()
        _wait(running, statuses=("running",))
        queued = conn.create_job(graph, title="queued", validate=False)
        queued.start()
        assert queued.status() == "queued"
        conn.save_user_defined_process("kept", graph, parameters=[])

    with LocalBackend(data_dir=data_dir, workers=1, port=port) as second:
        # the old connection's token is still valid (same data folder, same URL)
        assert conn.describe_account()["user_id"] == "eoextract"
        assert done.status() == "finished"
        after = done.get_results().get_metadata()["assets"]
        assert [a["file:checksum"] for a in after.values()] == [
            a["file:checksum"] for a in before.values()
        ]
        (asset,) = done.get_results().get_assets()
        assert len(asset.load_bytes()) == asset.metadata["file:size"]
        assert untouched.status() == "created"
        assert running.status() == "error"
        assert "restarted" in running.logs(level="error")[-1]["message"]
        assert _wait(queued) == "finished"
        assert "kept" in [p["id"] for p in conn.list_user_defined_processes()]
        assert second.url.endswith(f":{port}/")


def test_serve_command_prints_url_and_serves(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-c", "from eoextract.cli import app; app()", "backend", "serve",
           "--port", "0", "--data-dir", str(tmp_path / "d"), "--workers", "1", "--faults",
           "--user", "bob", "--password", "pw-1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        label, _, token = proc.stdout.readline().strip().partition(": ")
        assert label == "fault token" and len(token) >= 24
        caps = requests.get(url, timeout=10).json()
        assert caps["api_version"] == "1.2.0"
        assert requests.get(f"{url}_admin/faults", timeout=10).status_code == 401
        admin = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{url}_admin/faults", headers=admin, timeout=10).status_code == 200
        assert requests.get(f"{url}credentials/basic", auth=("bob", "pw-1"), timeout=10).ok
        wrong = requests.get(f"{url}credentials/basic", auth=("eoextract", "eoextract"), timeout=10)
        assert wrong.status_code in (401, 403)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            raise
    assert (tmp_path / "d" / "jobs").is_dir()


def test_serve_takes_the_fault_token_from_the_environment(monkeypatch):
    from typer.testing import CliRunner

    from eoextract.cli import app

    served: list[LocalBackend] = []
    monkeypatch.setattr(LocalBackend, "_serve_in_foreground", lambda self: served.append(self))
    result = CliRunner().invoke(app, ["backend", "serve", "--port", "0", "--faults"],
                                env={"EOEXTRACT_BACKEND_FAULT_TOKEN": "from-env"})
    assert result.exit_code == 0, result.output
    assert served[0].fault_token == "from-env" and "from-env" not in result.output


# -- the address to listen on --------------------------------------------------------------
def test_loopback_hosts_are_accepted_and_others_need_an_opt_in(caplog):
    from eoextract.errors import ConfigurationError

    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert LocalBackend(host=host).host == host  # constructed only: nothing is bound
    for host in ("0.0.0.0", "::", "192.168.1.20"):
        with pytest.raises(ConfigurationError, match="not a loopback address.*allow-remote"):
            LocalBackend(host=host)
    for host in ("not an address", "example.org", "999.1.1.1", ""):
        with pytest.raises(ConfigurationError, match="invalid host"):
            LocalBackend(host=host, allow_remote=True)
    with caplog.at_level("WARNING", logger="eoextract.backend"):
        LocalBackend(host="0.0.0.0", allow_remote=True, faults=True)
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "reachable from other machines" in warning.getMessage()
    assert "fault" in warning.getMessage()


@pytest.mark.parametrize(("host", "expected"), [
    ("0.0.0.0", "not a loopback address"),
    ("10.0.0.1", "--allow-remote"),
    ("not-an-address", "invalid host 'not-an-address'"),
])
def test_serve_refuses_a_host_with_a_usage_error(monkeypatch, host, expected):
    from typer.testing import CliRunner

    from eoextract.cli import app

    served: list[LocalBackend] = []
    monkeypatch.setattr(LocalBackend, "_serve_in_foreground", lambda self: served.append(self))
    result = CliRunner().invoke(app, ["backend", "serve", "--port", "0", "--host", host])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and expected in result.output
    assert "Traceback" not in result.output and served == []


@pytest.mark.parametrize(("option", "expected"), [
    (["--profile", "prod"], "--profile must be 'default' or 'cdse', not 'prod'"),
    (["--result-style", "x"], "--result-style must be 'current' or 'cdse'"),
    (["--workers", "0"], "--workers"),
    (["--port", "70000"], "--port"),
])
def test_serve_refuses_bad_options_with_a_usage_error(monkeypatch, option, expected):
    from typer.testing import CliRunner

    from eoextract.cli import app

    served: list[LocalBackend] = []
    monkeypatch.setattr(LocalBackend, "_serve_in_foreground", lambda self: served.append(self))
    result = CliRunner().invoke(app, ["backend", "serve", "--port", "0", *option])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output and served == []


def test_serve_on_a_port_in_use_says_so(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "-c", "from eoextract.cli import app; app()", "backend",
                              "serve", "--port", str(port), "--data-dir", "d"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip() == (f"error: port {port} on 127.0.0.1 is in use (another server?); "
                                  "give another --port (0 picks a free one)")


def test_serve_with_allow_remote_warns(monkeypatch, caplog):
    from typer.testing import CliRunner

    from eoextract.cli import app

    served: list[LocalBackend] = []
    monkeypatch.setattr(LocalBackend, "_serve_in_foreground", lambda self: served.append(self))
    with caplog.at_level("WARNING", logger="eoextract.backend"):
        result = CliRunner().invoke(
            app, ["backend", "serve", "--port", "0", "--host", "0.0.0.0", "--allow-remote"])
    assert result.exit_code == 0, result.output
    assert served[0].host == "0.0.0.0"
    assert any("reachable from other machines" in r.getMessage() for r in caplog.records)
