"""The openEO API 1.2 HTTP application of the embedded backend (FastAPI).

``create_app(settings)`` returns an ASGI app; :mod:`eoextract.backend._local` runs it with
uvicorn. Every error is answered as openEO error JSON ``{"id", "code", "message", "links"}``
with the matching HTTP status, including malformed requests (400 ``BadRequest``, never
FastAPI's 422 shape).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from eoextract.backend._api_errors import BadRequest, JobNotFound, NotFound, OpenEOApiError
from eoextract.backend._faults import FaultMiddleware, RequestFault, RequestFaultInjector
from eoextract.backend._job_lifecycle import is_instant
from eoextract.backend._job_store import FINISHED, parse_job_body
from eoextract.backend._oidc_routes import install_oidc_routes
from eoextract.backend._result_documents import item_document, results_document
from eoextract.backend._service import API_VERSION, BackendService, BackendSettings, file_response
from eoextract.backend._user_processes import check_process_id
from eoextract.backend._worker_pool import TaskCanceled


logger = logging.getLogger(__name__)

MAX_JSON_DEPTH = 128
"""Deepest nesting of arrays and objects accepted in a request body."""


class OrjsonResponse(JSONResponse):
    """JSON response rendered with orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> OrjsonResponse:
    return OrjsonResponse(data, status_code=status, headers=headers)


def error_response(exc: OpenEOApiError) -> OrjsonResponse:
    """openEO error JSON for an :class:`OpenEOApiError`."""
    body = {"id": uuid.uuid4().hex, "code": exc.code, "message": exc.message, "links": []}
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return _json(body, exc.status, headers)


def _too_large(limit: int) -> OpenEOApiError:
    return OpenEOApiError(
        f"Request body larger than {limit} bytes ({limit / 2**20:g} MiB).",
        code="PayloadTooLarge",
        status=413,
    )


async def _read_body(request: Request, limit: int) -> bytearray:
    """The request body, refused (413) from its ``Content-Length`` or while it streams in.

    A body is never held more than once: chunks are appended to one buffer as they arrive.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"Invalid Content-Length {declared!r}.") from None
        if size > limit:
            raise _too_large(limit)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise _too_large(limit)
    return raw


def _json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON (a scalar: 0), level by level without recursion.

    Stops counting once ``limit`` is passed (then returns ``limit + 1``).
    """
    depth = 0
    level = [value] if isinstance(value, dict | list) else []
    while level and depth <= limit:
        depth += 1
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
    return depth


async def _body(request: Request) -> Any:
    """The request's JSON body, checked for size and nesting before any route acts on it.

    Raises:
        OpenEOApiError: 413 ``PayloadTooLarge``; 400 ``BadRequest`` when empty, not JSON or
            nested deeper than :data:`MAX_JSON_DEPTH`.
    """
    raw = await _read_body(request, request.app.state.backend.settings.max_body_bytes)
    if not raw or raw.isspace():
        raise BadRequest("The request body is empty; a JSON object is expected.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    if _json_depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.")
    return data


def _int_param(request: Request, name: str, *, signed: bool = False) -> int | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except ValueError:
        raise BadRequest(f"Query parameter {name!r} must be an integer.") from None
    if number < 0 and not signed:
        raise BadRequest(f"Query parameter {name!r} must not be negative.")
    return number


def _expires_param(request: Request, required: bool) -> int | None:
    """The ``expires`` query parameter of a signed asset URL (a missing one fails to verify)."""
    value = request.query_params.get("expires")
    if value is None:
        return -1 if required else None
    try:
        return int(value)
    except ValueError:
        return -1


def create_app(settings: BackendSettings | None = None) -> FastAPI:
    """Build the ASGI application.

    Args:
        settings: Server settings (defaults: temporary data folder, 2 workers, no faults).

    Returns:
        A FastAPI app; ``app.state.backend`` is its :class:`BackendService`.
    """
    settings = settings or BackendSettings()
    backend = BackendService(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await run_in_threadpool(backend.close)

    app = FastAPI(
        title="eoextract embedded openEO backend",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    app.state.backend = backend
    if settings.faults:
        app.add_middleware(FaultMiddleware, injector=backend.request_faults)

    # -- errors ------------------------------------------------------------------------
    @app.exception_handler(OpenEOApiError)
    async def _openeo_error(_request: Request, exc: OpenEOApiError) -> Response:
        if exc.status >= 500:
            logger.error("%s: %s", exc.code, exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(BadRequest(f"Invalid request: {details}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {404: "NotFound", 405: "MethodNotAllowed"}
        message = (
            f"No such resource: {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        code = codes.get(exc.status_code, "BadRequest" if exc.status_code < 500 else "Internal")
        return error_response(OpenEOApiError(message, code=code, status=exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error")
        return error_response(OpenEOApiError(f"Internal server error: {type(exc).__name__}: {exc}"))

    # -- discovery ---------------------------------------------------------------------
    @app.get("/.well-known/openeo")
    async def well_known(request: Request) -> Response:
        return _json(
            {
                "versions": [
                    {"url": str(request.base_url), "api_version": API_VERSION, "production": False}
                ]
            }
        )

    @app.get("/")
    async def capabilities(request: Request) -> Response:
        return _json(backend.capabilities(str(request.base_url)))

    @app.get("/conformance")
    async def conformance() -> Response:
        return _json({"conformsTo": backend.conformance()})

    @app.get("/credentials/basic")
    async def credentials_basic(request: Request) -> Response:
        user, token = backend.login(request.headers.get("authorization"))
        logger.info("user %s logged in", user)
        return _json({"access_token": token, "user_id": user})

    install_oidc_routes(app, backend)

    @app.get("/me")
    async def me(request: Request) -> Response:
        user = backend.authenticate(request)
        return _json({"user_id": user, "name": user, "default_plan": "free", "links": []})

    @app.get("/collections")
    async def collections(request: Request) -> Response:
        return _json(await run_in_threadpool(backend.collections, str(request.base_url)))

    @app.get("/collections/{collection_id}")
    async def collection(request: Request, collection_id: str) -> Response:
        return _json(
            await run_in_threadpool(backend.collection, collection_id, str(request.base_url))
        )

    @app.get("/processes")
    async def processes() -> Response:
        return _json({"processes": await run_in_threadpool(backend.process_specs), "links": []})

    @app.get("/processes/{namespace}/{process_id}")
    async def namespaced_process(request: Request, namespace: str, process_id: str) -> Response:
        return _json(
            await run_in_threadpool(
                backend.namespaced_process, namespace, process_id, str(request.base_url)
            )
        )

    @app.get("/file_formats")
    async def file_formats() -> Response:
        return _json(await run_in_threadpool(backend.file_formats))

    @app.get("/udf_runtimes")
    async def udf_runtimes() -> Response:
        from eoextract.backend._udf import udf_runtimes as runtimes

        return _json(await run_in_threadpool(runtimes))

    @app.post("/validation")
    async def validation(request: Request) -> Response:
        user = backend.authenticate(request)
        body = await _body(request)
        process = body.get("process", body) if isinstance(body, dict) else None
        errors = await run_in_threadpool(backend.validate, user, process)
        return _json({"errors": errors})

    # -- synchronous processing ------------------------------------------------------
    @app.post("/result")
    async def result(request: Request) -> Response:
        user = backend.authenticate(request)
        fields_ = parse_job_body(await _body(request))
        out_dir = backend.sync_dir()
        cleanup = BackgroundTask(shutil.rmtree, out_dir, ignore_errors=True)
        try:
            if is_instant(fields_.get("job_options")):
                assets = await run_in_threadpool(backend.jobs.instant.copy_to, out_dir)
            else:
                task = backend.jobs.run_sync(user, fields_["process"], out_dir)
                try:
                    assets = await asyncio.wrap_future(task.future)
                except asyncio.CancelledError:  # client went away
                    task.cancel_requested.set()
                    raise
                except TaskCanceled:
                    raise OpenEOApiError("Processing was canceled.", code="Internal") from None
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        if len(assets) != 1:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise BadRequest(
                f"The process graph produced {len(assets)} files; synchronous processing returns "
                "exactly one. Use a batch job instead."
            )
        asset = assets[0]
        return file_response(
            out_dir / asset["path"],
            asset.get("media_type") or "application/octet-stream",
            request.headers.get("range"),
            request.method,
            filename=asset["name"],
            background=cleanup,
        )

    # -- batch jobs --------------------------------------------------------------------
    @app.get("/jobs")
    async def list_jobs(request: Request) -> Response:
        user = backend.authenticate(request)
        limit = _int_param(request, "limit") or backend.profile.default_page_size
        oldest_first = backend.profile.job_listing_order == "oldest_first"
        key = "after" if oldest_first else "before"  # cursors: sequence numbers, history's below 0
        page, cursor = backend.jobs.store.listing(user, limit=limit or None, oldest_first=oldest_first,
                                                  cursor=_int_param(request, key, signed=True))
        links = []
        if cursor is not None:
            links.append({"rel": "next", "href": f"{request.base_url}jobs?limit={limit}&{key}={cursor}",
                          "type": "application/json"})
        return _json({"jobs": [r.summary() for r in page], "links": links})

    @app.post("/jobs")
    async def create_job(request: Request) -> Response:
        user = backend.authenticate(request)
        record = await run_in_threadpool(backend.jobs.create, user, await _body(request))
        url = f"{request.base_url}jobs/{record.id}"
        return Response(
            status_code=201, headers={"Location": url, "OpenEO-Identifier": record.id}
        )

    @app.get("/jobs/{job_id}")
    async def describe_job(request: Request, job_id: str) -> Response:
        user = backend.authenticate(request)
        return _json(backend.jobs.store.get(job_id, user).describe())

    def job_action(action: Callable[..., Any], status: int, *, with_body: bool = False) -> Any:
        """A route calling ``action(user, job_id[, body])``, answering ``status`` and no body."""

        async def route(request: Request, job_id: str) -> Response:
            user = backend.authenticate(request)
            body = (await _body(request),) if with_body else ()
            await run_in_threadpool(action, user, job_id, *body)
            return Response(status_code=status)

        return route

    app.patch("/jobs/{job_id}")(job_action(backend.jobs.update, 204, with_body=True))
    app.delete("/jobs/{job_id}")(job_action(backend.jobs.delete, 204))
    app.post("/jobs/{job_id}/results")(job_action(backend.jobs.start, 202))
    app.delete("/jobs/{job_id}/results")(job_action(backend.jobs.cancel, 204))

    @app.get("/jobs/{job_id}/results")
    async def job_results(request: Request, job_id: str) -> Response:
        user = backend.authenticate(request)
        partial = request.query_params.get("partial", "").lower() in ("true", "1")
        if partial:
            record = backend.jobs.store.get(job_id, user)
        else:
            record = backend.jobs.results(user, job_id)
        base = str(request.base_url)
        doc = results_document(record, base, backend.signer, backend.result_style(record))
        if record.status != FINISHED:
            doc["assets"] = {}
            doc["links"] = doc["links"][:1]
        return _json(doc)

    @app.get("/jobs/{job_id}/results/items/{signature}/{item_id}")
    async def job_result_item(request: Request, job_id: str, signature: str, item_id: str) -> Response:
        record = backend.jobs.store.get(job_id)
        if record.status != FINISHED or not backend.signer.verify(job_id, "item:" + item_id, signature):
            raise NotFound(f"No result item {item_id!r} for job {job_id}.")
        asset = next((a for a in record.assets if a["name"] == item_id), None)
        if asset is None:
            raise NotFound(f"No result item {item_id!r} for job {job_id}.")
        style = backend.result_style(record)
        return _json(item_document(record, asset, str(request.base_url), backend.signer, style))

    @app.api_route("/jobs/{job_id}/results/assets/{signature}/{name:path}", methods=["GET", "HEAD"])
    async def job_asset(request: Request, job_id: str, signature: str, name: str) -> Response:
        try:
            record = backend.jobs.store.get(job_id)
        except JobNotFound:
            raise NotFound(f"No asset {name!r}: job {job_id} does not exist.") from None
        asset = next((a for a in record.assets if a["name"] == name), None)
        expires = _expires_param(request, backend.signer.ttl_s is not None)
        if asset is None or not backend.signer.verify(job_id, name, signature, expires):
            raise NotFound(f"No asset {name!r} for job {job_id}.")
        if backend.signer.expired(expires):
            raise OpenEOApiError(
                "The signed URL of this result asset has expired; request the job's results "
                f"again (GET /jobs/{job_id}/results) for a fresh one.",
                code="ResultLinkExpired",
                status=backend.profile.expired_url_status,
            )
        path = backend.jobs.store.results_dir(job_id) / asset["path"]
        return file_response(
            path,
            asset.get("media_type") or "application/octet-stream",
            request.headers.get("range"),
            request.method,
            filename=Path(asset["path"]).name,
            corrupt=record.fault == "corrupt_asset",
        )

    @app.get("/jobs/{job_id}/logs")
    async def job_logs(request: Request, job_id: str) -> Response:
        user = backend.authenticate(request)
        backend.jobs.store.get(job_id, user)
        offset = request.query_params.get("offset") or None
        level = (request.query_params.get("level") or "").lower() or None
        limit = _int_param(request, "limit")
        entries = backend.jobs.store.logs(job_id, offset=offset, level=level)
        links = []
        if limit and len(entries) > limit:
            entries = entries[:limit]
            query = f"offset={entries[-1]['id']}&limit={limit}" + (f"&level={level}" if level else "")
            links.append({"rel": "next", "href": f"{request.base_url}jobs/{job_id}/logs?{query}"})
        return _json({"level": level or "debug", "logs": entries, "links": links})

    # -- user-defined processes --------------------------------------------------------
    @app.get("/process_graphs")
    async def list_udps(request: Request) -> Response:
        user = backend.authenticate(request)
        items = await run_in_threadpool(backend.udps.list, user)
        return _json({"processes": items, "links": []})

    @app.get("/process_graphs/{process_id}")
    async def get_udp(request: Request, process_id: str) -> Response:
        user = backend.authenticate(request)
        spec = backend.udps.get(user, process_id)
        return _json(backend.with_canonical_link(spec, user, str(request.base_url)))

    @app.put("/process_graphs/{process_id}")
    async def put_udp(request: Request, process_id: str) -> Response:
        user = backend.authenticate(request)
        check_process_id(process_id)
        body = await _body(request)
        await run_in_threadpool(backend.udps.put, user, process_id, body)
        return Response(status_code=200)

    @app.delete("/process_graphs/{process_id}")
    async def delete_udp(request: Request, process_id: str) -> Response:
        user = backend.authenticate(request)
        backend.udps.delete(user, process_id)
        return Response(status_code=204)

    # -- admin: request faults (only with faults enabled, with the fault token) ----------
    if settings.faults:
        injector: RequestFaultInjector = backend.request_faults

        @app.post("/_admin/faults")
        async def add_fault(request: Request) -> Response:
            backend.authorize_admin(request)
            rule = RequestFault.from_dict(await _body(request))
            injector.add(rule)
            return _json(rule.to_dict(), 201)

        @app.get("/_admin/faults")
        async def list_faults(request: Request) -> Response:
            backend.authorize_admin(request)
            return _json({"faults": injector.list()})

        @app.delete("/_admin/faults")
        async def clear_faults(request: Request) -> Response:
            backend.authorize_admin(request)
            injector.clear()
            return Response(status_code=204)

    return app
