"""State behind the HTTP routes: settings, authentication, engine metadata, file responses."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from eoextract._util.files import atomic_path
from eoextract.backend._api_errors import (
    AuthenticationRequired,
    BadRequest,
    CredentialsInvalid,
    NotFound,
    OpenEOApiError,
    ProcessUnsupported,
    TokenInvalid,
)
from eoextract.backend._faults import RequestFaultInjector, corrupt_chunk
from eoextract.backend._job_lifecycle import JobService
from eoextract.backend._job_store import JobRecord, JobStore, check_process
from eoextract.backend._oidc import AccessTokenRejected, OidcProvider, OidcSettings
from eoextract.backend._profile import BackendProfile, resolve_profile
from eoextract.backend._result_documents import RESULT_STYLES, UrlSigner
from eoextract.backend._user_processes import UdpResolver, UdpStore
from eoextract.backend._udf import worker_env as udf_worker_env
from eoextract.backend._worker_pool import WorkerPool


logger = logging.getLogger(__name__)

API_VERSION = "1.2.0"
BACKEND_VERSION = "0.1.0"
STAC_VERSION = "1.1.0"
_CHUNK = 1 << 20
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Default largest accepted request body."""

_ENDPOINTS: list[tuple[str, list[str]]] = [
    ("/", ["GET"]),
    ("/conformance", ["GET"]),
    ("/credentials/basic", ["GET"]),
    ("/credentials/oidc", ["GET"]),
    ("/me", ["GET"]),
    ("/collections", ["GET"]),
    ("/collections/{collection_id}", ["GET"]),
    ("/processes", ["GET"]),
    ("/file_formats", ["GET"]),
    ("/udf_runtimes", ["GET"]),
    ("/validation", ["POST"]),
    ("/result", ["POST"]),
    ("/jobs", ["GET", "POST"]),
    ("/jobs/{job_id}", ["GET", "PATCH", "DELETE"]),
    ("/jobs/{job_id}/results", ["GET", "POST", "DELETE"]),
    ("/jobs/{job_id}/logs", ["GET"]),
    ("/process_graphs", ["GET"]),
    ("/process_graphs/{process_graph_id}", ["GET", "PUT", "DELETE"]),
]


@dataclass
class BackendSettings:
    """Settings of the embedded backend.

    Attributes:
        data_dir: Jobs, results and stored processes (a temporary folder when None,
            deleted on close); made absolute at construction.
        workers: Jobs executed at the same time (worker processes).
        faults: Enable the request-fault admin route ``/_admin/faults``.
        fault_token: Bearer token the admin route requires (generated when faults are
            enabled and none is given).
        result_style: ``"current"`` or ``"cdse"`` (see :mod:`eoextract.backend._result_documents`).
        users: User name → password for ``/credentials/basic``.
        worker_nice: Niceness increment of worker processes.
        allow_udf: Run user-defined functions (``run_udf``).
        udf_timeout_s: Time limit of one UDF call.
        udf_memory_mb: Memory limit of one UDF call (additional address space).
        max_body_bytes: Largest accepted request body; larger ones are answered 413
            ``PayloadTooLarge`` as soon as their ``Content-Length`` or their streamed bytes
            exceed it.
        oidc: Settings of the embedded OIDC provider (see :mod:`eoextract.backend._oidc`).
        artifacts: The ``artifacts`` capability (S3 + STS providers) advertised in ``GET /``;
            None advertises none (see :mod:`eoextract.backend._artifacts`).
        profile: Production-like behaviours: a :class:`BackendProfile`, or a profile name
            (``"default"``, ``"cdse"``); see :mod:`eoextract.backend._profile`.
        historical_jobs: Finished jobs seeded into the first user's listing at start
            (in memory, cheap: a production account's history for listing tests).
    """

    data_dir: Path | None = None
    workers: int = 2
    faults: bool = False
    result_style: str = "current"
    users: dict[str, str] = field(default_factory=lambda: {"eoextract": "eoextract"}, repr=False)
    worker_nice: int = 5
    max_body_bytes: int = MAX_BODY_BYTES
    fault_token: str | None = field(default=None, repr=False)
    oidc: OidcSettings = field(default_factory=OidcSettings, repr=False)
    artifacts: dict[str, Any] | None = None
    profile: BackendProfile | str | None = None
    historical_jobs: int = 0
    allow_udf: bool = True
    udf_timeout_s: float = 600.0
    udf_memory_mb: int = 4096

    def __post_init__(self) -> None:
        self.profile = resolve_profile(self.profile)
        if self.profile.result_style is not None:
            self.result_style = self.profile.result_style
        if self.historical_jobs < 0:
            raise ValueError("historical_jobs must not be negative")
        if self.result_style not in RESULT_STYLES:
            raise ValueError(f"result_style must be one of {RESULT_STYLES}, not {self.result_style!r}")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.faults and not self.fault_token:
            self.fault_token = secrets.token_urlsafe(24)


class _EngineHolder:
    """The API process's own engine, built on first use, for metadata and validation only."""

    def __init__(self) -> None:
        self._engine: Any = None
        self._lock = threading.Lock()
        self._cache: dict[str, Any] = {}

    def get(self) -> Any:
        with self._lock:
            if self._engine is None:
                from eoextract.backend._execution import Engine

                logger.info("building the execution engine for metadata")
                self._engine = Engine()
            return self._engine

    def cached(self, key: str, fn: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = fn(self.get())
        return self._cache[key]


class BackendService:
    """Everything the routes share: stores, job service, signer, auth, engine metadata.

    Args:
        settings: Server settings.
    """

    def __init__(self, settings: BackendSettings):
        self.settings = settings
        self._own_dir = settings.data_dir is None
        self.data_dir = Path(settings.data_dir or tempfile.mkdtemp(prefix="eoextract-backend-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = self._secret()
        profile: BackendProfile = settings.profile  # type: ignore[assignment]  # resolved
        self.profile = profile
        self.signer = UrlSigner(secret, ttl_s=profile.asset_url_ttl_s)
        self._tokens = {
            hmac.new(secret, f"token:{user}".encode(), hashlib.sha256).hexdigest(): user
            for user in settings.users
        }
        self.oidc = OidcProvider(settings.oidc, self.data_dir / "oidc-signing-key.pem", settings.users)
        self.udps = UdpStore(self.data_dir / "process_graphs")
        self.request_faults = RequestFaultInjector()
        self.engine = _EngineHolder()
        self.jobs = JobService(
            JobStore(self.data_dir),
            pool_factory=lambda: WorkerPool(
                settings.workers, self.data_dir / "worker-logs", nice=settings.worker_nice,
                env=udf_worker_env(settings.allow_udf, settings.udf_timeout_s, settings.udf_memory_mb),
            ),
            resolver_for=lambda user: UdpResolver(self.udps.root, user).to_dict(),
            profile=profile,
            style_for=self.result_style,
        )
        if settings.historical_jobs:
            self._seed_history(settings.historical_jobs)
        self._closed = False

    def _seed_history(self, count: int) -> None:
        """Seed ``count`` finished jobs of the first user (see :meth:`JobStore.seed_historical`)."""
        user = next(iter(self.settings.users))
        process = {"process_graph": {"load": {
            "process_id": "load_collection", "result": True,
            "arguments": {"id": "SENTINEL2_L2A", "bands": ["B04"],
                          "spatial_extent": {"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
                          "temporal_extent": ["2021-06-01", "2021-06-10"]}}}}
        shared: dict[str, Any] = {}
        if self.profile.report_usage:
            probe = JobRecord(id="", seq=0, user=user, process=process)
            shared["usage"], shared["costs"] = self.jobs.usage_of(probe)
        self.jobs.store.seed_historical(user, count, process, **shared)

    def _secret(self) -> bytes:
        path = self.data_dir / "secret.key"
        if not path.exists():
            with atomic_path(path, fsync=False) as tmp:
                tmp.write_bytes(secrets.token_bytes(32))
                os.chmod(tmp, 0o600)
        return path.read_bytes()

    def close(self) -> None:
        """Stop workers; delete the data folder when it was temporary."""
        if self._closed:
            return
        self._closed = True
        self.jobs.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- auth --------------------------------------------------------------------------
    def login(self, authorization: str | None) -> tuple[str, str]:
        """Check HTTP Basic credentials; return ``(user, access token)``."""
        if not authorization or not authorization.lower().startswith("basic "):
            raise AuthenticationRequired("HTTP Basic credentials are required.")
        try:
            decoded = base64.b64decode(authorization[6:].strip()).decode()
            user, _, password = decoded.partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise CredentialsInvalid("Malformed HTTP Basic credentials.") from None
        expected = self.settings.users.get(user)
        if expected is None or not hmac.compare_digest(expected, password):
            raise CredentialsInvalid("Wrong user name or password.")
        token = next(t for t, u in self._tokens.items() if u == user)
        return user, token

    def authorize_admin(self, request: Request) -> None:
        """Check the fault token of an ``/_admin`` request (``Authorization: Bearer <token>``).

        Raises:
            AuthenticationRequired: 401 when no bearer token is given.
            TokenInvalid: 403 when it is not the fault token.
        """
        scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise AuthenticationRequired("The admin routes need the fault token as a bearer token.")
        expected = self.settings.fault_token or ""
        if not expected or not hmac.compare_digest(value.strip().encode(), expected.encode()):
            raise TokenInvalid("The fault token is not valid.")

    def authenticate(self, request: Request) -> str:
        """The user of a request with an openEO bearer token.

        Accepted: ``Bearer basic//<token>`` (from ``/credentials/basic``) and
        ``Bearer oidc/<provider id>/<access token>`` (from the embedded OIDC provider).

        Raises:
            AuthenticationRequired: 401 without a bearer token.
            TokenInvalid: 403 for an unknown, malformed or expired token (the openeo client
                renews an OIDC access token on this answer).
        """
        header = request.headers.get("authorization")
        if not header:
            raise AuthenticationRequired("Authentication required: no bearer token given.")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            raise AuthenticationRequired("Authentication required: a bearer token is expected.")
        token = value.strip()
        if token.startswith("oidc/"):
            _, provider_id, access_token = (token.split("/", 2) + ["", ""])[:3]
            if provider_id != self.oidc.settings.provider_id:
                raise TokenInvalid(f"Unknown OIDC provider {provider_id!r} in the bearer token.")
            try:
                return self.oidc.verify_access_token(access_token, str(request.base_url))
            except AccessTokenRejected as exc:
                raise TokenInvalid(
                    "Authorization token has expired or is invalid. Please authenticate again."
                    f" ({exc})"
                ) from None
        if token.startswith("basic//"):
            token = token[len("basic//"):]
        user = self._tokens.get(token)
        if user is None:
            raise TokenInvalid("The bearer token is not valid.")
        return user

    # -- metadata ----------------------------------------------------------------------
    def capabilities(self, base_url: str) -> dict[str, Any]:
        """The ``GET /`` document."""
        doc = {
            "api_version": API_VERSION,
            "backend_version": BACKEND_VERSION,
            "stac_version": STAC_VERSION,
            "type": "Catalog",
            "id": "eoextract-local",
            "title": "eoextract embedded openEO backend",
            "description": "A local openEO backend with synthetic collections, for tests and trials.",
            "production": False,
            "endpoints": [{"path": p, "methods": m} for p, m in _ENDPOINTS],
            "billing": {"currency": None, "default_plan": "free",
                        "plans": [{"name": "free", "description": "Local, free.", "paid": False}]},
            "links": [
                {"rel": "self", "href": base_url, "type": "application/json"},
                {"rel": "data", "href": f"{base_url}collections", "type": "application/json"},
                {"rel": "conformance", "href": f"{base_url}conformance", "type": "application/json"},
                {"rel": "version-history", "href": f"{base_url}.well-known/openeo",
                 "type": "application/json"},
            ],
        }
        if self.settings.artifacts:
            doc["artifacts"] = self.settings.artifacts
        return doc

    def conformance(self) -> list[str]:
        """Conformance classes."""
        return [
            "https://api.openeo.org/1.2.0",
            "https://api.stacspec.org/v1.0.0/collections",
        ]

    def collections(self, base_url: str) -> dict[str, Any]:
        """The ``GET /collections`` document."""
        items = self.engine.cached("collections", lambda e: e.collections())
        return {
            "collections": [self._with_collection_links(c, base_url) for c in items],
            "links": [{"rel": "self", "href": f"{base_url}collections"}],
        }

    def collection(self, collection_id: str, base_url: str) -> dict[str, Any]:
        """The ``GET /collections/{id}`` document."""
        return self._with_collection_links(self.engine.get().collection(collection_id), base_url)

    @staticmethod
    def _with_collection_links(coll: dict[str, Any], base_url: str) -> dict[str, Any]:
        coll = dict(coll)
        links = [link for link in coll.get("links", []) if link.get("rel") not in ("self", "root")]
        links += [
            {"rel": "self", "href": f"{base_url}collections/{coll['id']}"},
            {"rel": "root", "href": base_url},
        ]
        coll["links"] = links
        return coll

    def process_specs(self) -> list[dict[str, Any]]:
        """Predefined processes."""
        return self.engine.cached("processes", lambda e: e.process_specs())

    def file_formats(self) -> dict[str, Any]:
        """The ``GET /file_formats`` document."""
        return self.engine.cached("file_formats", lambda e: e.file_formats())

    def namespaced_process(self, namespace: str, process_id: str, base_url: str) -> dict[str, Any]:
        """A predefined process (namespace ``backend``) or a user's stored process, public."""
        if namespace == "backend":
            for spec in self.process_specs():
                if spec.get("id") == process_id:
                    return spec
            raise ProcessUnsupported(f"Process {process_id!r} is not available.")
        try:
            spec = self.udps.get(namespace, process_id)
        except BadRequest:
            raise NotFound(f"No process {process_id!r} in namespace {namespace!r}.") from None
        return self.with_canonical_link(spec, namespace, base_url)

    @staticmethod
    def with_canonical_link(spec: dict[str, Any], user: str, base_url: str) -> dict[str, Any]:
        """A stored process with a ``canonical`` link to its public URL."""
        spec = dict(spec)
        links = [link for link in spec.get("links", []) if link.get("rel") != "canonical"]
        links.append(
            {"rel": "canonical", "href": f"{base_url}processes/{user}/{spec['id']}",
             "type": "application/json"}
        )
        spec["links"] = links
        return spec

    def validate(self, user: str, process: Any) -> list[dict[str, Any]]:
        """Errors found in a process graph (empty when valid)."""
        try:
            check_process(process)
            resolver = UdpResolver(self.udps.root, user)
            return list(self.engine.get().validate(process["process_graph"], udp_resolver=resolver))
        except OpenEOApiError as exc:
            return [{"code": exc.code, "message": exc.message}]

    # -- jobs helpers ------------------------------------------------------------------
    def result_style(self, record: JobRecord) -> str:
        """Result style for a job (job option ``eoextract_result_style`` wins)."""
        style = (record.job_options or {}).get("eoextract_result_style")
        return style if style in RESULT_STYLES else self.settings.result_style

    def sync_dir(self) -> Path:
        """A fresh folder for one synchronous request."""
        path = self.data_dir / "sync" / uuid.uuid4().hex
        path.mkdir(parents=True)
        return path


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` (inclusive) of a single ``bytes=`` range, or None for the whole file.

    Raises:
        OpenEOApiError: 416 when the range cannot be satisfied.
    """
    if not header or not header.strip().lower().startswith("bytes=") or "," in header:
        return None
    spec = header.strip()[6:].strip()
    first, _, last = spec.partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                raise ValueError
            start, end = max(0, size - length), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
            end = min(end, size - 1)
    except ValueError:
        return None
    if start >= size or start > end:
        raise OpenEOApiError(
            f"Range {header!r} not satisfiable for {size} bytes.",
            code="RangeNotSatisfiable",
            status=416,
        )
    return start, end


def _iter_file(path: Path, start: int, end: int, size: int, corrupt: bool):
    with open(path, "rb") as fh:
        fh.seek(start)
        pos = start
        while pos <= end:
            chunk = fh.read(min(_CHUNK, end - pos + 1))
            if not chunk:
                break
            yield corrupt_chunk(chunk, pos, size) if corrupt else chunk
            pos += len(chunk)


def file_response(
    path: Path,
    media_type: str,
    range_header: str | None,
    method: str,
    *,
    filename: str | None = None,
    corrupt: bool = False,
    background: BackgroundTask | None = None,
) -> Response:
    """A file as an HTTP response with ``Accept-Ranges`` and single-range (206) support.

    Args:
        path: The file.
        media_type: Its ``Content-Type``.
        range_header: The request's ``Range`` header.
        method: ``GET`` or ``HEAD`` (no body).
        filename: Name for ``Content-Disposition``.
        corrupt: Serve corrupted bytes (fault injection).
        background: Run after the response was sent.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise NotFound(f"Result file {path.name!r} is missing.") from None
    span = _parse_range(range_header, size)
    start, end = span if span is not None else (0, size - 1)
    length = max(0, end - start + 1)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(length)}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    if method == "HEAD" or length == 0:
        return Response(b"", status_code=status, media_type=media_type, headers=headers,
                        background=background)
    if length <= _CHUNK:
        data = b"".join(_iter_file(path, start, end, size, corrupt))
        return Response(data, status_code=status, media_type=media_type, headers=headers,
                        background=background)
    return StreamingResponse(
        _iter_file(path, start, end, size, corrupt),
        status_code=status,
        media_type=media_type,
        headers=headers,
        background=background,
    )
