"""The embedded OIDC provider with the unchanged openeo client: discovery, the client-credentials,
device-code and refresh-token grants, expired access tokens renewed, bad tokens refused."""

from __future__ import annotations

import logging
import re
import threading
import time

import openeo
import pytest
import requests
from openeo.rest.auth.oidc import OidcException

from eoextract.backend import LocalBackend

pytest.importorskip("joserfc")


@pytest.fixture(autouse=True)
def _openeo_config_home(tmp_path, monkeypatch):
    """Keep the openeo client's auth config and refresh-token store out of the home folder."""
    # the client uses the first folder that exists: it must exist to win over the home folder
    (tmp_path / "openeo-config").mkdir()
    monkeypatch.setenv("OPENEO_CONFIG_HOME", str(tmp_path / "openeo-config"))
    for name in ("OPENEO_AUTH_METHOD", "OPENEO_AUTH_CLIENT_ID", "OPENEO_AUTH_CLIENT_SECRET",
                 "OPENEO_AUTH_PROVIDER_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def backend():
    with LocalBackend(workers=1) as b:
        yield b


def _stats(b: LocalBackend):
    return b.app.state.backend.oidc.stats


def _get(url: str, token: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with requests.Session() as s:
        s.trust_env = False
        return s.get(url, headers=headers, timeout=10)


def test_credentials_discovery_and_jwks(backend):
    providers = _get(f"{backend.url}credentials/oidc").json()["providers"]
    assert [p["id"] for p in providers] == ["eoextract"]
    provider = providers[0]
    assert provider["issuer"] == f"{backend.url}oidc/eoextract"
    grants = provider["default_clients"][0]["grant_types"]
    assert "refresh_token" in grants and "urn:ietf:params:oauth:grant-type:device_code+pkce" in grants
    config = _get(f"{provider['issuer']}/.well-known/openid-configuration").json()
    assert config["issuer"] == provider["issuer"]
    assert config["token_endpoint"].startswith(provider["issuer"])
    keys = _get(config["jwks_uri"]).json()["keys"]
    assert keys[0]["kty"] == "RSA" and "d" not in keys[0]  # public part only
    caps = _get(backend.url).json()
    assert {"path": "/credentials/oidc", "methods": ["GET"]} in caps["endpoints"]
    assert "artifacts" not in caps


def test_client_credentials(backend):
    con = openeo.connect(backend.url).authenticate_oidc_client_credentials(
        client_id=backend.oidc_client_id, client_secret=backend.oidc_client_secret)
    assert con.auth.bearer.startswith("oidc/eoextract/")
    assert con.describe_account()["user_id"] == "eoextract"
    # same user as basic auth: jobs are shared
    assert backend.connect().describe_account()["user_id"] == "eoextract"
    with pytest.raises(OidcException, match="invalid_client"):
        openeo.connect(backend.url).authenticate_oidc_client_credentials(
            client_id=backend.oidc_client_id, client_secret="wrong")


def test_client_credentials_from_environment(backend, monkeypatch):
    monkeypatch.setenv("OPENEO_AUTH_METHOD", "client_credentials")
    monkeypatch.setenv("OPENEO_AUTH_CLIENT_ID", backend.oidc_client_id)
    monkeypatch.setenv("OPENEO_AUTH_CLIENT_SECRET", backend.oidc_client_secret)
    con = openeo.connect(backend.url).authenticate_oidc()
    assert con.describe_account()["user_id"] == "eoextract"


def test_device_flow_then_refresh_token(backend, tmp_path):
    """Device code (default client, PKCE, auto-approved) stores a refresh token; the
    refresh-token grant then works with it, from the store and given explicitly."""
    messages = []
    con = openeo.connect(backend.url).authenticate_oidc_device(
        store_refresh_token=True, max_poll_time=20, display=messages.append)
    assert con.describe_account()["user_id"] == "eoextract"
    assert any("/oidc/eoextract/device?user_code=" in m for m in messages)
    assert (tmp_path / "openeo-config" / "refresh-tokens.json").exists()  # stored here only
    con2 = openeo.connect(backend.url).authenticate_oidc_refresh_token()
    assert con2.describe_account()["user_id"] == "eoextract"
    assert con2.auth.bearer != con.auth.bearer
    with pytest.raises(OidcException, match="invalid_grant"):
        openeo.connect(backend.url).authenticate_oidc_refresh_token(refresh_token="not-a-token")


def test_authenticate_oidc_picks_device_then_refresh_token(backend, capsys):
    con = openeo.connect(backend.url).authenticate_oidc(max_poll_time=20, display=lambda m: None)
    assert con.describe_account()["user_id"] == "eoextract"
    assert "device code flow" in capsys.readouterr().out
    con2 = openeo.connect(backend.url).authenticate_oidc()
    assert con2.describe_account()["user_id"] == "eoextract"
    assert "refresh token" in capsys.readouterr().out


def test_expired_access_token_is_renewed(tmp_path):
    with LocalBackend(workers=1, oidc_token_lifetime=1) as b:
        cc = b.connect_oidc()
        device = b.connect_oidc("refresh_token")
        old_cc, old_device = cc.auth.bearer, device.auth.bearer
        time.sleep(2.1)
        resp = _get(f"{b.url}me", old_cc)
        assert resp.status_code == 403 and resp.json()["code"] == "TokenInvalid"
        assert "expired" in resp.json()["message"]
        assert cc.describe_account()["user_id"] == "eoextract"  # renewed (client credentials)
        assert device.describe_account()["user_id"] == "eoextract"  # renewed (refresh token)
        assert cc.auth.bearer != old_cc and device.auth.bearer != old_device
        stats = _stats(b)
        assert stats["rejected:expired"] >= 3
        assert stats["token:client_credentials"] == 2
        assert stats["token:refresh_token"] == 2  # connect, renew


def test_manual_device_approval(tmp_path):
    with LocalBackend(workers=1, oidc_device_approval="manual") as b:
        shown: list[str] = []
        result: dict = {}

        def login():
            try:
                result["con"] = openeo.connect(b.url).authenticate_oidc_device(
                    max_poll_time=30, display=shown.append)
            except Exception as exc:  # pragma: no cover - reported below
                result["error"] = exc

        thread = threading.Thread(target=login)
        thread.start()
        deadline = time.monotonic() + 10
        while not shown and time.monotonic() < deadline:
            time.sleep(0.05)
        user_code = re.search(r"user_code=([A-Z0-9-]+)", shown[0]).group(1)
        time.sleep(1.5)  # at least one poll answered "authorization_pending"
        assert thread.is_alive()
        page = _get(f"{b.url}oidc/eoextract/device?user_code={user_code}")
        assert page.status_code == 200 and user_code in page.text
        with requests.Session() as s:
            s.trust_env = False
            denied = s.post(f"{b.url}oidc/eoextract/device", timeout=10,
                            data={"user_code": user_code, "username": "eoextract", "password": "no"})
        assert denied.status_code == 403
        b.approve_device(user_code)
        thread.join(30)
        assert "error" not in result
        assert result["con"].describe_account()["user_id"] == "eoextract"
        # the convenience approves its own device code with the backend's user
        assert b.connect_oidc("refresh_token").describe_account()["user_id"] == "eoextract"


def test_bad_tokens_are_refused(backend, tmp_path):
    con = backend.connect_oidc("refresh_token")
    access = con.auth.bearer.split("/", 2)[2]
    refresh = con._oidc_auth_renewer._refresh_token
    for bearer in (
        "oidc/eoextract/not.a.jwt",
        f"oidc/other/{access}",  # unknown provider
        f"oidc/eoextract/{refresh}",  # a refresh token is no access token
        f"oidc/eoextract/{access[:-4]}AAAA",  # signature altered
        "oidc/eoextract",
    ):
        resp = _get(f"{backend.url}jobs", bearer)
        assert resp.status_code == 403, bearer
        assert resp.json()["code"] == "TokenInvalid"
    with LocalBackend(workers=1, data_dir=tmp_path / "other") as other:  # another signing key
        resp = _get(f"{other.url}me", other.connect_oidc().auth.bearer)
        assert resp.status_code == 200
        resp = _get(f"{other.url}me", con.auth.bearer)
        assert resp.status_code == 403 and resp.json()["code"] == "TokenInvalid"
    assert _get(f"{backend.url}me").status_code == 401
    assert backend.connect().describe_account()["user_id"] == "eoextract"  # basic auth unchanged


def test_token_endpoint_errors(backend):
    token_url = f"{backend.url}oidc/eoextract/token"
    with requests.Session() as s:
        s.trust_env = False
        r = s.post(token_url, data={"grant_type": "password", "client_id": "eoextract-default"})
        assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
        r = s.post(token_url, data={"grant_type": "client_credentials", "client_id": "nobody"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = s.post(token_url, data={"grant_type": "client_credentials", "client_id": "eoextract-default"})
        assert r.json()["error"] == "unauthorized_client"
        r = s.post(token_url, data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                    "client_id": "eoextract-default", "device_code": "x"})
        assert r.json()["error"] == "invalid_grant"
        # client_secret_basic works too
        r = s.post(token_url, data={"grant_type": "client_credentials"},
                   auth=(backend.oidc_client_id, backend.oidc_client_secret))
        assert r.status_code == 200 and r.json()["expires_in"] == 300
        assert r.headers["cache-control"] == "no-store"
    assert _get(f"{backend.url}oidc/nope/jwks").status_code == 404


def test_tokens_stay_out_of_logs(backend, caplog):
    with caplog.at_level(logging.DEBUG):
        con = backend.connect_oidc()
        con.describe_account()
    token = con.auth.bearer.split("/", 2)[2]
    assert "client_credentials token issued" in caplog.text
    assert token not in caplog.text and backend.oidc_client_secret not in caplog.text


def test_remote_hosts_default_to_manual_device_approval(caplog):
    from eoextract.errors import ConfigurationError

    assert LocalBackend()._oidc.device_approval == "auto"
    remote = LocalBackend(host="0.0.0.0", allow_remote=True)  # constructed only: nothing is bound
    assert remote._oidc.device_approval == "manual"
    with caplog.at_level(logging.WARNING):
        LocalBackend(host="0.0.0.0", allow_remote=True, oidc_device_approval="auto")
    assert "approved without credentials" in caplog.text
    with pytest.raises(ConfigurationError, match="loopback"):
        LocalBackend(host="0.0.0.0", allow_remote=True, artifacts=True)
    with pytest.raises(ValueError, match="device_approval"):
        LocalBackend(oidc_device_approval="sometimes")


def test_tokens_survive_a_restart_on_the_same_data_dir(tmp_path):
    import stat

    with LocalBackend(workers=1, data_dir=tmp_path / "d") as first:
        bearer = first.connect_oidc().auth.bearer
        port = int(first.url.rsplit(":", 1)[1].strip("/"))
    key = tmp_path / "d" / "oidc-signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with LocalBackend(workers=1, data_dir=tmp_path / "d", port=port) as second:
        assert _get(f"{second.url}me", bearer).json()["user_id"] == "eoextract"
