"""Run the embedded backend: :class:`LocalBackend` (in a background thread) and :func:`serve`.

Example::

    from eoextract.backend import LocalBackend

    with LocalBackend() as backend:
        connection = backend.connect()
        job = connection.create_job(cube, job_options={"eoextract_mode": "instant"})
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from eoextract.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    import openeo
    from fastapi import FastAPI

    from eoextract.backend._profile import BackendProfile


logger = logging.getLogger(__name__)


def check_host(host: str, allow_remote: bool = False, *, faults: bool = False) -> bool:
    """Check the address to listen on; True when it is reachable from other machines.

    Loopback addresses (``127.0.0.1``, ``::1``, ``localhost``) are always accepted. Any other
    address exposes a backend with basic-auth users (by default ``eoextract``/``eoextract``)
    and, with faults enabled, fault injection to the network, so it needs ``allow_remote``
    and is logged as a warning.

    Raises:
        ConfigurationError: When ``host`` is not an IP address (or ``localhost``), or is not
            a loopback address and ``allow_remote`` is False.
    """
    if host == "localhost":
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigurationError(
            f"invalid host {host!r}: give an IP address to listen on, e.g. 127.0.0.1 or ::1"
        ) from None
    if address.is_loopback:
        return False
    if not allow_remote:
        raise ConfigurationError(
            f"host {host} is not a loopback address: the backend would be reachable from other "
            "machines, with its basic-auth users and, with faults, fault injection; pass "
            "allow_remote=True (--allow-remote) to do so on a trusted network"
        )
    logger.warning(
        "the embedded openEO backend listens on %s and is reachable from other machines: "
        "anyone who can reach it may log in with its basic-auth users%s; use it on a trusted "
        "network only", host, ", and request faults can be set with the fault token" if faults else "",
    )
    return True


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # an explicit IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections;
    # without it, keep-alive requests wait ~40 ms each (Nagle + delayed ACK)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, sock: socket.socket) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def _server(app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


class LocalBackend:
    """The embedded openEO backend on 127.0.0.1, served from a background thread.

    Use it as a context manager (or call :meth:`start`/:meth:`stop`). Worker processes are
    stopped with it.

    Args:
        data_dir: Keep jobs, results and stored processes here (survives restarts); a
            temporary folder, deleted on stop, when None. A relative path is resolved
            against the working directory at construction.
        workers: Jobs executed at the same time.
        faults: Enable the request-fault admin route (see :meth:`inject_fault`), which
            needs :attr:`fault_token`.
        result_style: ``"current"`` or ``"cdse"``.
        user: User name accepted by ``/credentials/basic``.
        password: Its password.
        port: Port to listen on (0: a free one).
        host: Address to listen on: a loopback IP address or ``localhost``, or any IP
            address with ``allow_remote`` (see :func:`check_host`).
        allow_remote: Accept a host reachable from other machines (logged as a warning).
        fault_token: Token of the fault admin route (generated when None and ``faults``).
        oidc_token_lifetime: Lifetime of OIDC access tokens, seconds.
        oidc_device_approval: ``"auto"`` (device codes approved at once, for ``user``) or
            ``"manual"`` (approved on the verification page or with :meth:`approve_device`);
            None: ``"auto"`` on a loopback host, ``"manual"`` on one reachable from others.
        oidc_client_secret: Secret of the OIDC service client (generated when None).
        artifacts: Start a local S3 + STS (moto, needs the ``artifacts`` extra) and advertise
            it as the ``artifacts`` capability for ``openeo.extra.artifacts`` (loopback
            hosts only).
        profile: Production-like behaviours: ``"default"`` (today's backend), ``"cdse"``
            (job limits, usage and costs, expiring asset URLs, CDSE results documents) or a
            :class:`~eoextract.backend.BackendProfile` with each behaviour set on its own.
        historical_jobs: Finished jobs already in the user's listing (cheap; e.g. 20,000).
        allow_udf: Run user-defined functions (``run_udf``, user code) for the backend's users;
            None: only when listening on a loopback address.
        udf_timeout_s: Time limit of one UDF call (the UDF process is killed after it).
        udf_memory_mb: Memory limit of one UDF call (additional address space).

    Attributes:
        fault_token: Bearer token ``/_admin/faults`` requires (None without ``faults``).
            :meth:`inject_fault`, :meth:`list_faults` and :meth:`clear_faults` send it.
        oidc_provider_id: Id of the OIDC provider (``/credentials/oidc``).
        oidc_client_id: The confidential client of the client-credentials grant.
        oidc_client_secret: Its secret.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        workers: int = 2,
        faults: bool = False,
        result_style: str = "current",
        user: str = "eoextract",
        password: str = "eoextract",
        port: int = 0,
        host: str = "127.0.0.1",
        fault_token: str | None = None,
        allow_remote: bool = False,
        oidc_token_lifetime: int = 300,
        oidc_device_approval: str | None = None,
        oidc_client_secret: str | None = None,
        artifacts: bool = False,
        profile: BackendProfile | str | None = None,
        historical_jobs: int = 0,
        allow_udf: bool | None = None,
        udf_timeout_s: float = 600.0,
        udf_memory_mb: int = 4096,
    ):
        from eoextract.backend._oidc import SERVICE_CLIENT_ID, OidcSettings  # light: no joserfc

        remote = check_host(host, allow_remote, faults=faults)
        if remote and artifacts:
            raise ConfigurationError("artifacts (a local S3 + STS) need a loopback host")
        if remote and oidc_device_approval == "auto":
            logger.warning("OIDC device codes are approved without credentials on %s: anyone "
                           "who can reach it gets tokens", host)
        self.profile = profile
        self.historical_jobs = historical_jobs
        self.allow_udf = (not remote) if allow_udf is None else bool(allow_udf)
        self._udf_limits = (float(udf_timeout_s), int(udf_memory_mb))
        # resolved once: a relative folder would otherwise be joined to itself by the
        # stores, and a later change of the working directory would move it
        self.data_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else None
        self.workers = workers
        self.faults = faults
        self._fault_token_generated = faults and not fault_token
        self.fault_token = (fault_token or secrets.token_urlsafe(24)) if faults else None
        self.result_style = result_style
        self.user = user
        self._password = password
        self.port = port
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._url: str | None = None
        self.app: FastAPI | None = None
        self._oidc_secret_generated = not oidc_client_secret
        self._oidc = OidcSettings(token_lifetime_s=oidc_token_lifetime,
                                  device_approval=oidc_device_approval
                                  or ("manual" if remote else "auto"),
                                  client_secret=oidc_client_secret)
        self.oidc_provider_id = self._oidc.provider_id
        self.oidc_client_id = SERVICE_CLIENT_ID
        self.oidc_client_secret: str = self._oidc.client_secret or ""
        self.artifacts = artifacts
        self._artifacts: Any = None

    def __repr__(self) -> str:
        return f"<LocalBackend {self._url or '(stopped)'}>"

    @property
    def url(self) -> str:
        """Root URL of the API, e.g. ``http://127.0.0.1:43121/``."""
        if self._url is None:
            raise RuntimeError("the backend is not running; call start() or use 'with'")
        return self._url

    def start(self, timeout_s: float = 60.0) -> LocalBackend:
        """Start serving and wait until the API answers.

        Raises:
            RuntimeError: When the server does not come up within ``timeout_s``.
        """
        if self._thread is not None:
            return self
        self._open()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]},
            name="eoextract-local-backend", daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the embedded openEO backend did not start")
            time.sleep(0.01)
        logger.info("embedded openEO backend at %s", self._url)
        return self

    def _open(self) -> None:
        """Bind the socket, start the artifacts server if asked, build the app and its server
        (serving starts later); on failure, release what was started."""
        try:
            self._build()
        except BaseException:
            self.stop()
            raise

    def _build(self) -> None:
        from eoextract.backend._app import create_app
        from eoextract.backend._service import BackendSettings

        self._sock = _bind(self.host, self.port)
        self._url = _url(self.host, self._sock)
        capability = None
        if self.artifacts:
            from eoextract.backend._artifacts import ArtifactServer

            issuer = f"{self._url}oidc/{self.oidc_provider_id}"
            log = self.data_dir / "artifacts-server.log" if self.data_dir else None
            if log is not None:
                log.parent.mkdir(parents=True, exist_ok=True)
            self._artifacts = ArtifactServer(issuer, host=self.host, log_path=log).start()
            capability = self._artifacts.capability()
        settings = BackendSettings(
            data_dir=self.data_dir,
            workers=self.workers,
            faults=self.faults,
            result_style=self.result_style,
            users={self.user: self._password},
            fault_token=self.fault_token,
            oidc=self._oidc,
            artifacts=capability,
            profile=self.profile,
            historical_jobs=self.historical_jobs,
            allow_udf=self.allow_udf,
            udf_timeout_s=self._udf_limits[0],
            udf_memory_mb=self._udf_limits[1],
        )
        self.app = create_app(settings)
        self._server = _server(self.app)

    def _serve_in_foreground(self) -> None:
        """Serve in this thread until interrupted, printing the URL first; then stop."""
        self._open()
        print(self._url, flush=True)
        if self._fault_token_generated:
            print(f"fault token: {self.fault_token}", flush=True)
        if self._oidc_secret_generated:
            print(f"oidc client: {self.oidc_client_id} {self.oidc_client_secret}", flush=True)
        if self._artifacts is not None:
            print(f"artifacts S3/STS: {self._artifacts.endpoint}", flush=True)
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving and stop the workers."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():  # pragma: no cover
                logger.warning("the backend server thread did not stop in time")
        if self.app is not None:
            self.app.state.backend.close()  # no-op when the lifespan already did it
        if self._sock is not None:
            self._sock.close()
        if self._artifacts is not None:
            self._artifacts.stop()
        self._server = self._thread = self._sock = self._artifacts = None
        self._url = None

    def __enter__(self) -> LocalBackend:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def connect(self, **kwargs: Any) -> openeo.Connection:
        """An ``openeo.Connection`` authenticated with the configured user.

        Args:
            **kwargs: Passed to ``openeo.connect``.
        """
        import openeo

        return openeo.connect(self.url, **kwargs).authenticate_basic(self.user, self._password)

    def connect_oidc(self, grant: str = "client_credentials", **kwargs: Any) -> openeo.Connection:
        """An ``openeo.Connection`` authenticated through the embedded OIDC provider, which
        renews its access token when it expires.

        Args:
            grant: ``"client_credentials"`` (the service client and its secret) or
                ``"refresh_token"`` (a refresh token of the default client, obtained here with
                a device code approved for :attr:`user`; nothing is stored on disk).
            **kwargs: Passed to ``openeo.connect``.
        """
        import openeo

        from eoextract.backend._oidc import DEFAULT_CLIENT_ID, DEVICE_GRANT

        connection = openeo.connect(self.url, **kwargs)
        if grant == "client_credentials":
            return connection.authenticate_oidc_client_credentials(
                client_id=self.oidc_client_id, client_secret=self.oidc_client_secret,
                provider_id=self.oidc_provider_id)
        if grant != "refresh_token":
            raise ValueError(f"grant must be 'client_credentials' or 'refresh_token', not {grant!r}")
        issuer = f"{self.url}oidc/{self.oidc_provider_id}"
        with _session() as session:
            device = session.post(f"{issuer}/device_authorization", timeout=10, data={
                "client_id": DEFAULT_CLIENT_ID, "scope": "openid offline_access"})
            device.raise_for_status()
            codes = device.json()
            if self._oidc.device_approval == "manual":
                self.approve_device(codes["user_code"])
            tokens = session.post(f"{issuer}/token", timeout=10, data={
                "grant_type": DEVICE_GRANT, "client_id": DEFAULT_CLIENT_ID,
                "device_code": codes["device_code"]})
            tokens.raise_for_status()
        return connection.authenticate_oidc_refresh_token(
            client_id=DEFAULT_CLIENT_ID, refresh_token=tokens.json()["refresh_token"],
            provider_id=self.oidc_provider_id)

    def approve_device(self, user_code: str) -> None:
        """Approve a waiting OIDC device code for :attr:`user`, as on the verification page."""
        with _session() as session:
            resp = session.post(
                f"{self.url}oidc/{self.oidc_provider_id}/device", timeout=10,
                data={"user_code": user_code, "username": self.user, "password": self._password},
            )
        resp.raise_for_status()

    # -- request faults ----------------------------------------------------------------
    def inject_fault(
        self,
        path_regex: str,
        status: int | None = 503,
        times: int = 1,
        *,
        method: str | None = None,
        retry_after: float | None = None,
        delay_s: float | None = None,
    ) -> dict[str, Any]:
        """Make the next ``times`` requests matching ``path_regex`` fail or hang.

        Args:
            path_regex: Regular expression searched in the request path.
            status: Status to answer with; None to only delay (then serve normally).
            times: Number of requests affected.
            method: Only this HTTP method.
            retry_after: ``Retry-After`` header value (seconds), e.g. with 429.
            delay_s: Wait this long before answering.

        Returns:
            The rule as stored by the server.

        Raises:
            RuntimeError: When the backend runs without faults enabled.
        """
        headers = self._admin_headers()
        body = {
            "path_regex": path_regex,
            "status": status,
            "times": times,
            "method": method,
            "retry_after": retry_after,
            "delay_s": delay_s,
        }
        resp = requests.post(f"{self.url}_admin/faults", json=body, headers=headers, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def list_faults(self) -> list[dict[str, Any]]:
        """The request faults still waiting for a matching request.

        Raises:
            RuntimeError: When the backend runs without faults enabled.
        """
        resp = requests.get(f"{self.url}_admin/faults", headers=self._admin_headers(), timeout=10)
        resp.raise_for_status()
        return resp.json()["faults"]

    def clear_faults(self) -> None:
        """Remove all request faults."""
        if self.faults:
            requests.delete(f"{self.url}_admin/faults", headers=self._admin_headers(),
                            timeout=10).raise_for_status()

    def _admin_headers(self) -> dict[str, str]:
        if not self.faults:
            raise RuntimeError("start LocalBackend(faults=True) to inject request faults")
        return {"Authorization": f"Bearer {self.fault_token}"}


def _session() -> requests.Session:
    """A session for loopback requests: no proxies or ``.netrc`` from the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


def serve(host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve the embedded backend in the foreground until interrupted; prints its URL.

    Args:
        host: Address to listen on (a loopback address unless ``allow_remote=True`` is
            passed, see :func:`check_host`).
        port: Port (0: a free one).
        **options: The other :class:`LocalBackend` arguments: ``data_dir`` (a temporary
            folder when None), ``workers``, ``faults``, ``fault_token`` (printed after the
            URL when generated), ``result_style``, ``user``, ``password``,
            ``oidc_token_lifetime``, ``oidc_device_approval``, ``oidc_client_secret`` (printed
            when generated), ``artifacts``, ``profile``,
            ``historical_jobs``.
    """
    LocalBackend(host=host, port=port, **options)._serve_in_foreground()
