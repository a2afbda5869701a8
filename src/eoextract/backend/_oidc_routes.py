"""HTTP routes of the embedded OIDC provider (see :mod:`eoextract.backend._oidc`).

``GET /credentials/oidc`` lists the provider; the issuer's routes live under
``/oidc/<provider id>``. Token and device endpoints take form-encoded bodies and answer OAuth
errors (``{"error", "error_description"}``), not openEO errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from eoextract.backend._api_errors import BadRequest, NotFound
from eoextract.backend._oidc import OidcError, verification_page

if TYPE_CHECKING:  # pragma: no cover
    from eoextract.backend._service import BackendService

MAX_FORM_BYTES = 64 * 1024
"""Largest accepted form body of the token and device endpoints."""
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def _form(request: Request) -> dict[str, str]:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise OidcError("invalid_request", "request body too large")
    try:
        return dict(parse_qsl(raw.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise OidcError("invalid_request", "the form body is not UTF-8") from None


def _oauth_error(exc: OidcError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="eoextract"'
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def install_oidc_routes(app: FastAPI, backend: BackendService) -> None:
    """Add ``/credentials/oidc`` and the issuer's routes to ``app``."""
    provider = backend.oidc

    def check(provider_id: str) -> None:
        if provider_id != provider.settings.provider_id:
            raise NotFound(f"No OIDC provider {provider_id!r}.")

    @app.get("/credentials/oidc")
    async def credentials_oidc(request: Request) -> Response:
        return JSONResponse(provider.credentials_document(str(request.base_url)))

    @app.get("/oidc/{provider_id}/.well-known/openid-configuration")
    async def discovery(request: Request, provider_id: str) -> Response:
        check(provider_id)
        return JSONResponse(provider.discovery(str(request.base_url)))

    @app.get("/oidc/{provider_id}/jwks")
    async def jwks(provider_id: str) -> Response:
        check(provider_id)
        return JSONResponse(provider.jwks())

    @app.post("/oidc/{provider_id}/token")
    async def token(request: Request, provider_id: str) -> Response:
        check(provider_id)
        try:
            body = provider.token(str(request.base_url), await _form(request),
                                  request.headers.get("authorization"))
        except OidcError as exc:
            return _oauth_error(exc)
        return JSONResponse(body, headers=_NO_STORE)

    @app.post("/oidc/{provider_id}/device_authorization")
    async def device_authorization(request: Request, provider_id: str) -> Response:
        check(provider_id)
        try:
            body = provider.device_authorization(str(request.base_url), await _form(request))
        except OidcError as exc:
            return _oauth_error(exc)
        return JSONResponse(body, headers=_NO_STORE)

    @app.get("/oidc/{provider_id}/device")
    async def device_page(request: Request, provider_id: str) -> Response:
        check(provider_id)
        issuer = provider.issuer(str(request.base_url))
        return HTMLResponse(verification_page(issuer, request.query_params.get("user_code", "")))

    @app.post("/oidc/{provider_id}/device")
    async def device_approve(request: Request, provider_id: str) -> Response:
        check(provider_id)
        try:
            form = await _form(request)
        except OidcError as exc:
            raise BadRequest(exc.description) from None
        issuer = provider.issuer(str(request.base_url))
        try:
            provider.approve_device(form.get("user_code", ""), form.get("username", ""),
                                    form.get("password", ""))
        except OidcError as exc:
            return HTMLResponse(verification_page(issuer, form.get("user_code", ""), exc.description),
                                status_code=exc.status)
        return HTMLResponse(verification_page(issuer, "", "Approved: the device is signed in."))
