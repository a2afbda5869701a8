"""The local S3 + STS server behind the embedded backend's ``artifacts`` capability.

Run as a child process (``python -m eoextract.backend._artifacts_server``) by
:class:`eoextract.backend._artifacts.ArtifactServer`. It serves moto's S3 (its WSGI app)
behind a thin layer that does what moto leaves out and the openeo client's
``openeo.extra.artifacts`` relies on:

- **STS ``AssumeRoleWithWebIdentity``**: the web identity token must be an access token of
  the backend's OIDC issuer (signature checked against the issuer's JWKS, ``iss``, ``typ``,
  ``exp``); the answer carries temporary credentials and ``SubjectFromWebIdentityToken``
  (the token's ``sub``). Invalid tokens get ``InvalidIdentityToken``, expired ones
  ``ExpiredTokenException``.
- **Credentials**: S3 requests must carry an access key issued here and not expired (SigV4
  ``Authorization`` header or ``X-Amz-Credential`` of a presigned URL); signatures themselves
  are not recomputed.
- **Presigned URL expiry**: a URL past ``X-Amz-Date`` + ``X-Amz-Expires`` is answered 403
  ``AccessDenied`` "Request has expired", as S3 does.
- **Path prefix**: the openeo client derives the S3 region from an AWS-style endpoint name
  (``...s3.<region>....``), which a loopback endpoint lacks; the endpoint therefore carries
  it in a path prefix (``/artifacts.s3.<region>``), stripped here before moto sees a request.

Nothing is logged per request: request lines hold presigned URL query strings.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import string
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit
from xml.sax.saxutils import escape

_STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_MAX_SESSION_S = 43200


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class IdentityTokenError(Exception):
    """A web identity token STS refuses; ``code`` is the STS error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class IssuerKeys:
    """Verifies access tokens of one OIDC issuer with the keys its JWKS publishes."""

    def __init__(self, issuer: str):
        self.issuer = issuer
        self._keys: Any = None
        self._lock = threading.Lock()

    def _fetch(self) -> Any:
        import requests
        from joserfc.jwk import KeySet

        with requests.Session() as session:
            session.trust_env = False
            config = session.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
            config.raise_for_status()
            resp = session.get(config.json()["jwks_uri"], timeout=10)
            resp.raise_for_status()
            return KeySet.import_key_set(resp.json())

    def claims(self, token: str) -> dict[str, Any]:
        """The claims of a valid, unexpired access token of the issuer.

        Raises:
            IdentityTokenError: ``InvalidIdentityToken`` or ``ExpiredTokenException``.
        """
        from joserfc import jwt
        from joserfc.errors import JoseError

        for attempt in range(2):
            with self._lock:
                if self._keys is None or attempt:
                    try:
                        self._keys = self._fetch()
                    except Exception as exc:
                        raise IdentityTokenError(
                            "IDPCommunicationError",
                            f"cannot read the issuer's keys: {type(exc).__name__}",
                        ) from None
                keys = self._keys
            try:
                claims = jwt.decode(token, keys, algorithms=["RS256"]).claims
                break
            except (JoseError, ValueError, TypeError) as exc:
                if attempt:  # the issuer's key may have changed: read the JWKS once more
                    raise IdentityTokenError(
                        "InvalidIdentityToken",
                        f"the web identity token is not valid ({type(exc).__name__})",
                    ) from None
        if claims.get("iss") != self.issuer or claims.get("typ") != "Bearer":
            raise IdentityTokenError("InvalidIdentityToken",
                                     "the token is not an access token of the issuer")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= time.time():
            raise IdentityTokenError("ExpiredTokenException", "the web identity token has expired")
        return claims


def _random(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


class ArtifactsApp:
    """WSGI layer in front of moto (see the module docstring).

    Args:
        moto_app: moto's WSGI application.
        issuer: The OIDC issuer whose access tokens STS accepts.
        prefix: Path prefix of the endpoint (``/artifacts.s3.<region>``).
    """

    def __init__(self, moto_app: Any, issuer: str, prefix: str):
        self.moto_app = moto_app
        self.keys = IssuerKeys(issuer)
        self.prefix = prefix.rstrip("/")
        self._credentials: dict[str, datetime] = {}  # access key id -> expiry
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self._strip_prefix(environ)
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "POST" and environ.get("PATH_INFO") in ("", "/"):
            body = self._form_body(environ)
            if body is not None and dict(parse_qsl(body)).get("Action") == "AssumeRoleWithWebIdentity":
                return self._assume_role(dict(parse_qsl(body)), start_response)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        denied = self._check_credentials(environ, query)
        if denied is not None:
            return self._s3_error(start_response, *denied)
        return self.moto_app(environ, start_response)

    # -- plumbing --------------------------------------------------------------------------
    def _strip_prefix(self, environ: dict[str, Any]) -> None:
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            environ["PATH_INFO"] = path[len(self.prefix):] or "/"
        for key in ("RAW_URI", "REQUEST_URI"):
            raw = environ.get(key)
            if not raw:
                continue
            parts = urlsplit(raw)
            if parts.scheme:
                if parts.path.startswith(self.prefix):
                    environ[key] = urlunsplit(parts._replace(path=parts.path[len(self.prefix):] or "/"))
            elif raw.startswith(self.prefix):
                rest = raw[len(self.prefix):]
                environ[key] = rest if rest.startswith("/") else "/" + rest

    @staticmethod
    def _form_body(environ: dict[str, Any]) -> str | None:
        if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            return None
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        raw = environ["wsgi.input"].read(size) if size else b""
        environ["wsgi.input"] = io.BytesIO(raw)
        return raw.decode("utf-8", "replace")

    # -- STS -------------------------------------------------------------------------------
    def _assume_role(self, params: dict[str, str], start_response: Any) -> list[bytes]:
        try:
            claims = self.keys.claims(params.get("WebIdentityToken", ""))
        except IdentityTokenError as exc:
            body = (f'<ErrorResponse xmlns="{_STS_NS}"><Error><Type>Sender</Type>'
                    f"<Code>{exc.code}</Code><Message>{escape(exc.message)}</Message></Error>"
                    f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
            return self._respond(start_response, "400 Bad Request", body)
        try:
            duration = min(max(int(params.get("DurationSeconds", 3600)), 900), _MAX_SESSION_S)
        except ValueError:
            duration = 3600
        access_key = "ASIA" + _random(string.ascii_uppercase + string.digits, 16)
        secret = _random(string.ascii_letters + string.digits, 40)
        expiry = _now() + timedelta(seconds=duration)
        with self._lock:
            now = _now()
            self._credentials = {k: v for k, v in self._credentials.items() if v > now}
            self._credentials[access_key] = expiry
        role = params.get("RoleArn", "")
        session = params.get("RoleSessionName", "session")
        body = (
            f'<AssumeRoleWithWebIdentityResponse xmlns="{_STS_NS}"><AssumeRoleWithWebIdentityResult>'
            f"<SubjectFromWebIdentityToken>{escape(str(claims['sub']))}</SubjectFromWebIdentityToken>"
            f"<Audience>{escape(str(claims.get('azp', '')))}</Audience>"
            f"<AssumedRoleUser><Arn>{escape(role)}/{escape(session)}</Arn>"
            f"<AssumedRoleId>AROA{_random(string.ascii_uppercase, 12)}:{escape(session)}</AssumedRoleId>"
            "</AssumedRoleUser>"
            f"<Credentials><AccessKeyId>{access_key}</AccessKeyId>"
            f"<SecretAccessKey>{secret}</SecretAccessKey>"
            f"<SessionToken>{secrets.token_urlsafe(48)}</SessionToken>"
            f"<Expiration>{_iso(expiry)}</Expiration>"
            f"</Credentials><Provider>{escape(self.keys.issuer)}</Provider>"
            "</AssumeRoleWithWebIdentityResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        )
        return self._respond(start_response, "200 OK", body)

    # -- S3 --------------------------------------------------------------------------------
    def _check_credentials(self, environ: dict[str, Any],
                           query: dict[str, list[str]]) -> tuple[str, str, str, dict[str, str]] | None:
        """None when the request may go to moto, else ``(status, code, message, extra)``."""
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if "Credential=" in auth:
            credential = auth.split("Credential=", 1)[1].split(",", 1)[0]
        else:
            credential = (query.get("X-Amz-Credential") or [""])[0]
        access_key = credential.split("/", 1)[0]
        with self._lock:
            expiry = self._credentials.get(access_key)
        if expiry is None:
            return ("403 Forbidden", "InvalidAccessKeyId",
                    "The AWS access key id you provided does not exist in our records.", {})
        if expiry <= _now():
            return "400 Bad Request", "ExpiredToken", "The provided token has expired.", {}
        if "X-Amz-Expires" in query:
            try:
                signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                expires = signed + timedelta(seconds=int(query["X-Amz-Expires"][0]))
            except (KeyError, ValueError):
                return ("403 Forbidden", "AuthorizationQueryParametersError",
                        "Invalid X-Amz-Date or X-Amz-Expires.", {})
            now = _now()
            if now > expires:
                return ("403 Forbidden", "AccessDenied", "Request has expired",
                        {"X-Amz-Expires": query["X-Amz-Expires"][0], "Expires": _iso(expires),
                         "ServerTime": _iso(now)})
        return None

    def _s3_error(self, start_response: Any, status: str, code: str, message: str,
                  extra: dict[str, str]) -> list[bytes]:
        fields = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in extra.items())
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{escape(message)}</Message>{fields}"
                f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>")
        return self._respond(start_response, status, body)

    @staticmethod
    def _respond(start_response: Any, status: str, body: str) -> list[bytes]:
        data = body.encode()
        start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))])
        return [data]


def _watch_parent() -> None:
    """Exit when the parent closes our stdin (it stopped, or died)."""
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """Serve until stdin closes; print the port on the first line of stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.s3.models import s3_backends
    from werkzeug.serving import make_server

    from eoextract._util.redact import redact

    class QuietHandler(MotoRequestHandler):
        """No request lines (they hold presigned URLs); other messages redacted."""

        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

        def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002
            sys.stderr.write(f"{type}: {redact(message % args if args else message)}\n")

    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(args.bucket, args.region)
    app = ArtifactsApp(DomainDispatcherApplication(create_backend_app), args.issuer, args.prefix)
    server = make_server(args.host, 0, app, threaded=True, request_handler=QuietHandler)
    threading.Thread(target=_watch_parent, daemon=True).start()
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    main()
