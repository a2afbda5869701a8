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
        allow_udf: Run user-defined functions (``run_udf``, user code) for the backend's users;
            None: only when listening on a loopback address.
        udf_timeout_s: Time limit of one UDF call (the UDF process is killed after it).
        udf_memory_mb: Memory limit of one UDF call (additional address space).

    Attributes:
        fault_token: Bearer token ``/_admin/faults`` requires (None without ``faults``).
            :meth:`inject_fault`, :meth:`list_faults` and :meth:`clear_faults` send it.
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
        allow_udf: bool | None = None,
        udf_timeout_s: float = 600.0,
        udf_memory_mb: int = 4096,
    ):
        remote = check_host(host, allow_remote, faults=faults)
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
        """Build the app and its server and bind the socket (serving starts later)."""
        from eoextract.backend._app import create_app
        from eoextract.backend._service import BackendSettings

        settings = BackendSettings(
            data_dir=self.data_dir,
            workers=self.workers,
            faults=self.faults,
            result_style=self.result_style,
            users={self.user: self._password},
            fault_token=self.fault_token,
            allow_udf=self.allow_udf,
            udf_timeout_s=self._udf_limits[0],
            udf_memory_mb=self._udf_limits[1],
        )
        self.app = create_app(settings)
        self._sock = _bind(self.host, self.port)
        self._url = _url(self.host, self._sock)
        self._server = _server(self.app)

    def _serve_in_foreground(self) -> None:
        """Serve in this thread until interrupted, printing the URL first; then stop."""
        self._open()
        print(self._url, flush=True)
        if self._fault_token_generated:
            print(f"fault token: {self.fault_token}", flush=True)
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
        self._server = self._thread = self._sock = None
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


def serve(host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve the embedded backend in the foreground until interrupted; prints its URL.

    Args:
        host: Address to listen on (a loopback address unless ``allow_remote=True`` is
            passed, see :func:`check_host`).
        port: Port (0: a free one).
        **options: The other :class:`LocalBackend` arguments: ``data_dir`` (a temporary
            folder when None), ``workers``, ``faults``, ``fault_token`` (printed after the
            URL when generated), ``result_style``, ``user``, ``password``.
    """
    LocalBackend(host=host, port=port, **options)._serve_in_foreground()
