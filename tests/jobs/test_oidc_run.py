"""A manager run on the embedded backend with OIDC access tokens that expire mid-run."""

from __future__ import annotations

import pytest

from eoextract.backend import LocalBackend
from eoextract.jobs import MultiBackendJobManager

pytest.importorskip("joserfc")


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
def test_access_token_expires_mid_run(grant, start_jobs, job_df, tmp_path, monkeypatch):
    """Tokens live 1 s, each job runs ~1 s longer: the manager's requests meet expired tokens,
    the openeo client renews them (client credentials, or the refresh token) and every job
    ends finished, results downloaded."""
    # the client uses the first folder that exists: it must exist to win over the home folder
    (tmp_path / "openeo-config").mkdir()
    monkeypatch.setenv("OPENEO_CONFIG_HOME", str(tmp_path / "openeo-config"))
    with LocalBackend(workers=2, oidc_token_lifetime=1) as backend:
        connection = backend.connect_oidc(grant)
        manager = MultiBackendJobManager(poll_sleep=0.2, retry_backoff=0.05, root_dir=tmp_path / "out")
        manager.add_backend("local", connection, parallel_jobs=2)
        slow = {"eoextract_fault": "slow", "eoextract_fault_delay_s": 1.0}
        stats = manager.run_jobs(job_df(4), start_jobs(lambda row: slow), job_db=tmp_path / "jobs.db")
        oidc = backend.app.state.backend.oidc.stats
    assert stats["status_counts"] == {"finished": 4}
    assert len(list((tmp_path / "out").rglob("*.nc"))) == 4
    assert oidc["rejected:expired"] >= 1  # an expired token was met during the run ...
    renewals = oidc[f"token:{grant}"] - 1  # the first one was issued on connecting
    assert renewals >= 1  # ... and renewed
    assert oidc["rejected:invalid"] == 0


def test_token_refreshed_ahead_of_starts_at_most_once_a_minute(start_jobs, job_df, tmp_path, monkeypatch):
    """As openeo's manager does: a fresh access token before the first job start or download,
    then not again within 60 s (the token lives longer than the run here)."""
    (tmp_path / "openeo-config").mkdir()
    monkeypatch.setenv("OPENEO_CONFIG_HOME", str(tmp_path / "openeo-config"))
    with LocalBackend(workers=2) as backend:
        connection = backend.connect_oidc("client_credentials")
        manager = MultiBackendJobManager(poll_sleep=0.1, retry_backoff=0.05, root_dir=tmp_path / "out")
        manager.add_backend("local", connection, parallel_jobs=2)
        stats = manager.run_jobs(job_df(3), start_jobs(), job_db=tmp_path / "jobs.db")
        oidc = backend.app.state.backend.oidc.stats
    assert stats["status_counts"] == {"finished": 3}
    assert oidc["token:client_credentials"] == 2  # on connecting, and once ahead of the first start
    assert oidc["rejected:expired"] == 0
