"""The live status page (``eoextract serve-status``): its data, its server following a run
driven elsewhere, and the page as a real browser renders it."""

from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest
import requests
import shapely
from typer.testing import CliRunner

from eoextract.cli import app
from eoextract.jobs import create_job_db, get_job_db
from eoextract.report._live import StatusServer, status_document


def _run_db(path):
    df = pd.DataFrame({"n": range(4)})
    import geopandas

    gdf = geopandas.GeoDataFrame(df, geometry=[shapely.Point(5 + i, 51) for i in range(4)], crs="EPSG:4326")
    db = create_job_db(path, gdf)
    db.transition("0", "creating", backend_name="cdse")
    db.transition("0", "finished", costs=1.25)
    db.transition("1", "creating", backend_name="cdse")
    db.transition("1", "error", error_class="JobFailed", error_message="out of memory at https://x.test/r?X-Amz-Signature=abc")
    db.transition("2", "creating", backend_name="cdse")
    db.save_backend_state({"capacity": {"cdse": 2}, "budget": 100.0})
    db.close()


@pytest.mark.parametrize("name", ["jobs.db", "jobs.csv"])
def test_status_document(tmp_path, name):
    _run_db(tmp_path / name)
    doc = status_document(str(tmp_path / name))
    assert doc["summary"]["total"] == 4 and doc["summary"]["counts"]["finished"] == 1
    assert doc["slots"]["cdse"] == {"active": 1, "limit": 2}
    assert doc["credits"] == {"spent": 1.25, "jobs": 1, "by_backend": {"cdse": 1.25}, "budget": 100.0}
    (failure,) = doc["failures"]
    assert failure["class"] == "JobFailed" and "abc" not in failure["message"]  # signature redacted
    assert sorted(p[2] for p in doc["points"]) == ["creating", "error", "finished", "not_started"]


@pytest.mark.parametrize("name", ["jobs.db", "jobs.csv", pytest.param("pg", marks=pytest.mark.pg)])
def test_the_server_follows_changes_made_elsewhere(tmp_path, name, request):
    path = request.getfixturevalue("pg_url") if name == "pg" else tmp_path / name
    _run_db(path)
    with StatusServer(str(path)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert "Run status" in requests.get(server.url, timeout=10).text
        first = requests.get(server.url + "status.json", timeout=10).json()
        assert first["summary"]["counts"].get("finished") == 1
        db = get_job_db(path)  # another process's run goes on
        db.transition("2", "finished")
        db.close()
        second = requests.get(server.url + "status.json", timeout=10).json()
        assert second["summary"]["counts"]["finished"] == 2
        assert requests.get(server.url + "nothing", timeout=10).status_code == 404
        assert requests.post(server.url + "status.json", timeout=10).status_code == 501  # read-only


def test_cli_refuses_a_remote_host_and_a_missing_database(tmp_path):
    _run_db(tmp_path / "jobs.db")
    runner = CliRunner()
    remote = runner.invoke(app, ["serve-status", str(tmp_path / "jobs.db"), "--host", "0.0.0.0"])
    assert remote.exit_code == 2 and "--allow-remote" in remote.output
    missing = runner.invoke(app, ["serve-status", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no job database" in missing.output
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = runner.invoke(app, ["serve-status", str(tmp_path / "jobs.db"), "--port", str(port)])
    assert busy.exit_code == 1 and f"error: port {port} on 127.0.0.1 is in use" in busy.output


def _dom(chromium, url, profile):
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=4000", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_the_page_renders_and_updates_in_a_browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    path = tmp_path / "jobs.db"
    _run_db(path)
    with StatusServer(str(path), interval_s=0.5) as server:
        dom = _dom(chromium, server.url, tmp_path / "profile")
        assert "4 jobs, 2 final (1 failed), 2 open" in dom
        assert "credits 1.25 of a budget of 100 (1 jobs)" in dom
        assert "JobFailed" in dom and dom.count('<circle cx="') == 4  # drawn (the script's own text quotes differently)
        db = get_job_db(path)
        db.transition("2", "finished")
        db.close()
        dom = _dom(chromium, server.url, tmp_path / "profile")
        assert "4 jobs, 3 final (1 failed), 1 open" in dom
