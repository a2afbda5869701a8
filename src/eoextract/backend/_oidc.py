"""A minimal OpenID Connect provider inside the embedded backend.

The issuer is ``<backend URL>oidc/<provider id>`` on the backend's own server; under it are
the discovery document (``/.well-known/openid-configuration``), the JSON web key set
(``/jwks``), the token endpoint (``/token``: grants ``client_credentials``, ``refresh_token``
and ``urn:ietf:params:oauth:grant-type:device_code``), the device authorization endpoint
(``/device_authorization``) and the verification page (``/device``) where a device code is
approved with a basic-auth user's name and password.

Access, refresh and ID tokens are JSON web tokens signed with RS256 (joserfc); the RSA key
is kept in the data folder (``oidc-signing-key.pem``) so tokens outlive a restart that keeps
it. Access tokens are short lived (:attr:`OidcSettings.token_lifetime_s`); the openEO
routes answer an expired one with 403 ``TokenInvalid``, which makes the openeo client renew
it with its refresh token or client credentials.

Two clients exist: a public default client (device code with or without PKCE, refresh
token), listed in ``/credentials/oidc`` as ``default_clients`` so the client's default-client
flows find it, and a confidential service client (client credentials, with a secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eoextract._util.files import atomic_path

logger = logging.getLogger(__name__)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
"""Grant type of the device authorization flow (RFC 8628)."""
DEFAULT_CLIENT_ID = "eoextract-default"
"""The public default client: device code (+PKCE) and refresh token grants."""
SERVICE_CLIENT_ID = "eoextract-service"
"""The confidential client of the client-credentials grant."""
DEVICE_APPROVALS = ("auto", "manual")
_ALG = "RS256"


@dataclass
class OidcSettings:
    """Settings of the embedded OIDC provider.

    Attributes:
        provider_id: Provider id in ``/credentials/oidc`` and in bearer tokens
            (``oidc/<provider_id>/<access token>``).
        token_lifetime_s: Lifetime of access (and ID) tokens, seconds.
        refresh_lifetime_s: Lifetime of refresh tokens, seconds.
        device_approval: ``"auto"``: device codes are approved for the default user as soon
            as they are issued; ``"manual"``: they wait for the verification page (or
            :meth:`OidcProvider.approve_device`).
        device_code_lifetime_s: How long a device code can be approved and redeemed.
        client_secret: Secret of the service client (generated when None).
    """

    provider_id: str = "eoextract"
    token_lifetime_s: int = 300
    refresh_lifetime_s: int = 7 * 86400
    device_approval: str = "auto"
    device_code_lifetime_s: int = 600
    client_secret: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.device_approval not in DEVICE_APPROVALS:
            raise ValueError(f"device_approval must be one of {DEVICE_APPROVALS}")
        if int(self.token_lifetime_s) < 1 or int(self.refresh_lifetime_s) < 1:
            raise ValueError("token lifetimes must be at least 1 second")
        self.token_lifetime_s = int(self.token_lifetime_s)
        self.refresh_lifetime_s = int(self.refresh_lifetime_s)
        if not self.client_secret:
            self.client_secret = secrets.token_urlsafe(24)


class OidcError(Exception):
    """An OAuth 2 error of the token or device endpoints (``{"error", "error_description"}``)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(f"{error}: {description}")
        self.error, self.description, self.status = error, description, status

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        return {"error": self.error, "error_description": self.description}


class AccessTokenRejected(Exception):
    """An access token that is not valid here; ``expired`` tells why."""

    def __init__(self, message: str, *, expired: bool = False):
        super().__init__(message)
        self.expired = expired


@dataclass
class _DeviceRequest:
    client_id: str
    user_code: str
    scope: str
    expires_at: float
    code_challenge: str | None = None
    user: str | None = None
    redeemed: bool = False


class OidcProvider:
    """Issues and checks the tokens of the embedded backend's OIDC provider.

    Args:
        settings: Provider settings.
        key_path: PEM file of the RSA signing key (created on first use).
        users: Basic-auth users (name → password); the first is the default user, whom
            the service client and auto-approved device codes act for.
    """

    def __init__(self, settings: OidcSettings, key_path: Path, users: dict[str, str]):
        self.settings = settings
        self._key_path = key_path
        self._users = users
        self.default_user = next(iter(users))
        self._key: Any = None
        self._lock = threading.Lock()
        self._devices: dict[str, _DeviceRequest] = {}
        self.stats: Counter[str] = Counter()
        """Counts: ``token:<grant>`` tokens issued, ``rejected:expired``/``rejected:invalid``."""

    # -- keys ------------------------------------------------------------------------------
    def _signing_key(self) -> Any:
        from joserfc.jwk import RSAKey

        with self._lock:
            if self._key is None:
                if not self._key_path.exists():
                    key = RSAKey.generate_key(2048, private=True)
                    with atomic_path(self._key_path, fsync=False) as tmp:
                        tmp.write_bytes(key.as_pem(private=True))
                        os.chmod(tmp, 0o600)
                pem = self._key_path.read_bytes()
                kid = hashlib.sha256(pem).hexdigest()[:16]
                self._key = RSAKey.import_key(pem, {"kid": kid, "use": "sig", "alg": _ALG})
            return self._key

    def jwks(self) -> dict[str, Any]:
        """The public JSON web key set."""
        return {"keys": [self._signing_key().as_dict(private=False)]}

    # -- documents -------------------------------------------------------------------------
    def issuer(self, base_url: str) -> str:
        """The issuer URL for a backend root URL (``http://127.0.0.1:8080/``)."""
        return f"{base_url}oidc/{self.settings.provider_id}"

    def credentials_document(self, base_url: str) -> dict[str, Any]:
        """The ``GET /credentials/oidc`` document."""
        return {
            "providers": [
                {
                    "id": self.settings.provider_id,
                    "issuer": self.issuer(base_url),
                    "title": "eoextract embedded OIDC provider",
                    "description": "Local OpenID Connect provider of the embedded backend.",
                    "scopes": ["openid"],
                    "default_clients": [
                        {
                            "id": DEFAULT_CLIENT_ID,
                            "grant_types": [DEVICE_GRANT + "+pkce", DEVICE_GRANT, "refresh_token"],
                            "redirect_urls": [],
                        }
                    ],
                    "links": [],
                }
            ]
        }

    def discovery(self, base_url: str) -> dict[str, Any]:
        """The OpenID discovery document of the issuer."""
        issuer = self.issuer(base_url)
        return {
            "issuer": issuer,
            "token_endpoint": f"{issuer}/token",
            "device_authorization_endpoint": f"{issuer}/device_authorization",
            "jwks_uri": f"{issuer}/jwks",
            "grant_types_supported": ["client_credentials", "refresh_token", DEVICE_GRANT],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [_ALG],
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "client_secret_basic", "none"],
            "code_challenge_methods_supported": ["S256", "plain"],
            "scopes_supported": ["openid", "offline_access"],
        }

    # -- token endpoint --------------------------------------------------------------------
    def token(self, base_url: str, form: dict[str, str],
              authorization: str | None = None) -> dict[str, Any]:
        """Answer a token request (form fields of the POST).

        Raises:
            OidcError: With the OAuth error code (``invalid_client``, ``invalid_grant``,
                ``authorization_pending``, ``expired_token``, ``unsupported_grant_type``, ...).
        """
        client_id, secret = self._client_auth(form, authorization)
        grant = form.get("grant_type", "")
        if grant == "client_credentials":
            if client_id != SERVICE_CLIENT_ID:
                raise OidcError("unauthorized_client",
                                f"client {client_id!r} may not use client credentials")
            self._check_secret(secret)
            return self._issue(base_url, client_id, self.default_user, form.get("scope", "openid"),
                               grant, refresh=False)
        if grant == "refresh_token":
            self._check_client(client_id, secret)
            claims = self._verify(form.get("refresh_token", ""), base_url, "Refresh",
                                  error=lambda m: OidcError("invalid_grant", m))
            if claims.get("azp") != client_id:
                raise OidcError("invalid_grant", "the refresh token was issued to another client")
            return self._issue(base_url, client_id, claims["sub"], claims.get("scope", "openid"),
                               grant, refresh=True)
        if grant == DEVICE_GRANT:
            return self._redeem_device(base_url, client_id, secret, form)
        raise OidcError("unsupported_grant_type", f"grant type {grant!r} is not supported")

    def _client_auth(self, form: dict[str, str], authorization: str | None) -> tuple[str, str | None]:
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "basic" and value:
            try:
                client_id, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise OidcError("invalid_client", "malformed client credentials", 401) from None
        if client_id not in (DEFAULT_CLIENT_ID, SERVICE_CLIENT_ID):
            raise OidcError("invalid_client", f"unknown client {client_id!r}", 401)
        return client_id, secret

    def _check_secret(self, secret: str | None) -> None:
        expected = self.settings.client_secret or ""
        if not secret or not hmac.compare_digest(secret.encode(), expected.encode()):
            raise OidcError("invalid_client", "wrong client secret", 401)

    def _check_client(self, client_id: str, secret: str | None) -> None:
        if client_id == SERVICE_CLIENT_ID:
            self._check_secret(secret)

    def _issue(self, base_url: str, client_id: str, user: str, scope: str, grant: str, *,
               refresh: bool) -> dict[str, Any]:
        from joserfc import jwt

        now = int(time.time())
        life = self.settings.token_lifetime_s
        common = {"iss": self.issuer(base_url), "sub": user, "azp": client_id, "iat": now}
        key = self._signing_key()
        header = {"alg": _ALG, "kid": key.kid, "typ": "JWT"}
        access = {**common, "aud": self.settings.provider_id, "exp": now + life, "typ": "Bearer",
                  "scope": scope, "client_id": client_id, "jti": uuid.uuid4().hex}
        result: dict[str, Any] = {
            "access_token": jwt.encode(header, access, key),
            "token_type": "Bearer",
            "expires_in": life,
            "scope": scope,
        }
        if "openid" in scope.split():
            result["id_token"] = jwt.encode(
                header, {**common, "aud": client_id, "exp": now + life, "typ": "ID"}, key)
        if refresh:
            rlife = self.settings.refresh_lifetime_s
            result["refresh_token"] = jwt.encode(
                header, {**common, "aud": self.issuer(base_url), "exp": now + rlife,
                         "typ": "Refresh", "scope": scope, "jti": uuid.uuid4().hex}, key)
            result["refresh_expires_in"] = rlife
        self.stats[f"token:{grant}"] += 1
        logger.info("OIDC %s token issued to client %s for user %s", grant, client_id, user)
        return result

    def _verify(self, token: str, base_url: str, typ: str, *, error: Any) -> dict[str, Any]:
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            claims = jwt.decode(token, self._signing_key(), algorithms=[_ALG]).claims
        except (JoseError, ValueError, TypeError) as exc:
            raise error(f"the {typ.lower()} token is not valid ({type(exc).__name__})") from None
        if claims.get("typ") != typ or claims.get("iss") != self.issuer(base_url):
            raise error(f"the token is not a {typ.lower()} token of this issuer")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= time.time():
            raise error(f"the {typ.lower()} token has expired")
        return claims

    # -- device flow -----------------------------------------------------------------------
    def device_authorization(self, base_url: str, form: dict[str, str]) -> dict[str, Any]:
        """Start a device flow: answer the device code, the user code and where to approve it."""
        client_id = form.get("client_id", "")
        if client_id not in (DEFAULT_CLIENT_ID, SERVICE_CLIENT_ID):
            raise OidcError("invalid_client", f"unknown client {client_id!r}", 401)
        challenge = form.get("code_challenge")
        method = form.get("code_challenge_method", "plain" if challenge else None)
        if challenge and method not in ("S256", "plain"):
            raise OidcError("invalid_request", f"code_challenge_method {method!r} is not supported")
        if challenge and method == "plain":
            challenge = _s256(challenge)
        device_code = secrets.token_urlsafe(32)
        user_code = "-".join(secrets.token_hex(2).upper() for _ in range(2))
        request = _DeviceRequest(
            client_id=client_id, user_code=user_code, scope=form.get("scope", "openid"),
            expires_at=time.time() + self.settings.device_code_lifetime_s, code_challenge=challenge,
        )
        if self.settings.device_approval == "auto":
            request.user = self.default_user
        with self._lock:
            self._devices = {k: v for k, v in self._devices.items() if v.expires_at > time.time()}
            self._devices[device_code] = request
        verification = f"{self.issuer(base_url)}/device"
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification,
            "verification_uri_complete": f"{verification}?user_code={user_code}",
            "expires_in": self.settings.device_code_lifetime_s,
            "interval": 1,
        }

    def approve_device(self, user_code: str, user: str, password: str | None = None) -> None:
        """Approve a waiting device code for ``user`` (checked against ``password`` when given).

        Raises:
            OidcError: ``access_denied`` for wrong credentials, ``invalid_request`` for an
                unknown or expired user code.
        """
        if password is not None:
            expected = self._users.get(user)
            if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
                raise OidcError("access_denied", "wrong user name or password", 403)
        with self._lock:
            request = next((r for r in self._devices.values()
                            if r.user_code == user_code.strip().upper() and r.expires_at > time.time()),
                           None)
            if request is None:
                raise OidcError("invalid_request", "unknown or expired user code")
            request.user = user
        logger.info("OIDC device code approved for user %s", user)

    def _redeem_device(self, base_url: str, client_id: str, secret: str | None,
                       form: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            request = self._devices.get(form.get("device_code", ""))
            if request is None or request.client_id != client_id or request.redeemed:
                raise OidcError("invalid_grant", "unknown device code")
            if request.expires_at <= time.time():
                raise OidcError("expired_token", "the device code has expired")
            if request.code_challenge:
                if _s256(form.get("code_verifier", "")) != request.code_challenge:
                    raise OidcError("invalid_grant", "PKCE code verifier does not match")
            elif client_id == SERVICE_CLIENT_ID:
                self._check_secret(secret)
            if request.user is None:
                raise OidcError("authorization_pending", "the user has not approved the code yet")
            request.redeemed = True
        return self._issue(base_url, client_id, request.user, request.scope, DEVICE_GRANT,
                           refresh="offline_access" in request.scope.split()
                           or client_id == DEFAULT_CLIENT_ID)

    # -- openEO routes ---------------------------------------------------------------------
    def verify_access_token(self, token: str, base_url: str) -> str:
        """The user an access token was issued for.

        Raises:
            AccessTokenRejected: When it is not a valid access token of this issuer, or has
                expired (``expired=True``).
        """
        def reject(message: str) -> AccessTokenRejected:
            return AccessTokenRejected(message, expired=message.endswith("has expired"))

        try:
            claims = self._verify(token, base_url, "Bearer", error=reject)
        except AccessTokenRejected as exc:
            self.stats["rejected:expired" if exc.expired else "rejected:invalid"] += 1
            raise
        return str(claims["sub"])


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verification_page(issuer: str, user_code: str = "", message: str = "") -> str:
    """The HTML page where a device code is approved with a basic-auth user's credentials."""
    from html import escape

    return (
        "<!doctype html><html><head><title>Approve device</title></head><body>"
        f"<h1>eoextract embedded backend: approve a device</h1><p>{escape(message)}</p>"
        f'<form method="post" action="{escape(issuer)}/device">'
        f'<label>User code <input name="user_code" value="{escape(user_code)}"></label><br>'
        '<label>User <input name="username"></label><br>'
        '<label>Password <input name="password" type="password"></label><br>'
        '<button type="submit">Approve</button></form></body></html>'
    )
