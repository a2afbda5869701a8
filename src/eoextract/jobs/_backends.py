"""Registered backends: name, connection factory, parallel slots; tagging and cheap polling.

Two mechanisms live here:

* **Creation tags.** Before a backend is asked to create a job, the manager stores a unique
  tag for it. :func:`tag_requests` makes every ``POST /jobs`` sent through a connection in
  the current thread carry that tag in the job's ``description`` (the user's ``title`` is
  left alone), whatever ``create_job``/``execute_batch`` call user code makes. After a
  crash, :func:`find_tagged_jobs` looks the tags up in the backend's job listing so the
  job is adopted instead of created a second time.
* **Listing polls.** :meth:`BackendSpec.poll_statuses` gets the status of many jobs with
  one paginated ``GET /jobs`` instead of one request per job.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openeo
import requests
from requests.adapters import HTTPAdapter

from eoextract.jobs._classify import install_retry_after_hook

_log = logging.getLogger(__name__)
_local = threading.local()
#: Seconds between two proactive refreshes of a backend's access token.
TOKEN_REFRESH_S = 60.0
_TAG_RE = re.compile(r"\[eoextract:([A-Za-z0-9_.:-]+)\]")
_START_RE = re.compile(r"/jobs/([^/?#]+)/results/?$")
_WRAPPED = "_eoextract_request_wrapped"


def make_tag(job_key: str, attempt: int, nonce: str) -> str:
    """A tag unique per job attempt, safe in a description."""
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", str(job_key))[:64]
    return f"{key}:{attempt}:{nonce}"


def add_tag(description: str | None, tag: str) -> str:
    """``description`` with the tag appended (an existing eoextract tag is replaced)."""
    text = _TAG_RE.sub("", description or "").rstrip()
    marker = f"[eoextract:{tag}]"
    return f"{text}\n{marker}" if text else marker


def find_tag(description: str | None) -> str | None:
    """The eoextract tag in a job description, if any."""
    match = _TAG_RE.search(description or "")
    return match.group(1) if match else None


@dataclass
class TagContext:
    """What happened in one ``start_job`` call, as seen on the wire."""

    tag: str
    created: list[str] = field(default_factory=list)
    started: set[str] = field(default_factory=set)


@contextlib.contextmanager
def tag_requests(tag: str) -> Iterator[TagContext]:
    """Tag the jobs created in this thread (through wrapped connections) while active."""
    ctx = TagContext(tag=tag)
    previous = getattr(_local, "ctx", None)
    _local.ctx = ctx
    try:
        yield ctx
    finally:
        _local.ctx = previous


def _wrap_connection(connection: openeo.Connection) -> openeo.Connection:
    """Install the tagging wrapper on a connection (once; instance attribute only)."""
    if getattr(connection, _WRAPPED, False):
        return connection
    original = connection.request

    def request(method: str, path: str, *args: Any, **kwargs: Any):
        ctx: TagContext | None = getattr(_local, "ctx", None)
        if ctx is None or method.lower() != "post":
            return original(method, path, *args, **kwargs)
        bare = path.split("?", 1)[0].rstrip("/")
        if bare.endswith("/jobs") or bare == "jobs":
            body = kwargs.get("json")
            if isinstance(body, dict):
                body = dict(body)
                body["description"] = add_tag(body.get("description"), ctx.tag)
                kwargs["json"] = body
            response = original(method, path, *args, **kwargs)
            job_id = response.headers.get("OpenEO-Identifier") or (
                response.headers.get("Location", "").rstrip("/").rsplit("/", 1)[-1]
            )
            if job_id:
                ctx.created.append(job_id.strip())
            return response
        match = _START_RE.search(bare)
        response = original(method, path, *args, **kwargs)
        if match:
            ctx.started.add(match.group(1))
        return response

    connection.request = request  # type: ignore[method-assign]
    setattr(connection, _WRAPPED, True)
    install_retry_after_hook(connection.session)
    _widen_connection_pool(connection.session)
    return connection


def _widen_connection_pool(session: requests.Session, size: int = 32) -> None:
    """Let the manager's worker threads share the session without queueing for sockets
    (requests keeps 10 per host by default); retry settings are kept."""
    for prefix, adapter in list(session.adapters.items()):
        if isinstance(adapter, HTTPAdapter) and getattr(adapter, "_pool_maxsize", size) < size:
            session.mount(prefix, HTTPAdapter(pool_connections=adapter._pool_connections,
                                              pool_maxsize=size, max_retries=adapter.max_retries))


@dataclass
class BackendSpec:
    """A registered backend.

    Attributes:
        name: name used in the job database's ``backend_name`` column.
        get_connection: factory returning an (authenticated) ``openeo.Connection``.
        parallel_jobs: jobs this backend may hold at once (active statuses).
        queueing_limit: jobs it may hold waiting to run (created or queued; None: no limit
            but ``parallel_jobs``), as openeo's ``queueing_limit``.
    """

    name: str
    get_connection: Callable[[], openeo.Connection]
    parallel_jobs: int = 2
    queueing_limit: int | None = None
    _connection: openeo.Connection | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _token_refreshed_at: float = field(default=float("-inf"), repr=False)

    def connection(self) -> openeo.Connection:
        """The backend's connection, created on first use and wrapped for tagging."""
        with self._lock:
            if self._connection is None:
                self._connection = _wrap_connection(self.get_connection())
            return self._connection

    def refresh_token(self, max_age_s: float = TOKEN_REFRESH_S) -> None:
        """Get a fresh OIDC access token before a job start or a download, at most once per
        ``max_age_s`` seconds (as openeo's manager does, so that a long run's requests do not
        meet an expired token); connections without a renewable token are left as they are."""
        con = self.connection()
        refresh = getattr(con, "try_access_token_refresh", None)
        if refresh is None or getattr(con, "_oidc_auth_renewer", None) is None:
            return
        with self._lock:
            if time.time() - self._token_refreshed_at < max_age_s:
                return
            self._token_refreshed_at = time.time()
        try:
            refreshed = refresh(reason="ahead of a job start or download")
        except Exception as exc:  # noqa: BLE001 - the request that follows will tell
            _log.warning("backend %r: refreshing the access token failed: %s", self.name, exc)
            return
        if not refreshed:
            _log.warning("backend %r: could not refresh the access token ahead of time", self.name)

    def reset_connection(self) -> None:
        """Forget the connection so the next call creates a fresh one."""
        with self._lock:
            self._connection = None

    @property
    def url(self) -> str | None:
        """Root URL of the backend (``None`` before the first connection)."""
        return self._connection.root_url if self._connection is not None else None

    def iter_job_listing(self, *, page_size: int = 100, max_pages: int = 50) -> Iterator[dict]:
        """Yield the items of the backend's ``GET /jobs`` listing, following ``next`` links."""
        con = self.connection()
        url: str | None = "/jobs"
        params: dict | None = {"limit": page_size}
        for _ in range(max_pages):
            if url is None:
                return
            data = con.get(url, params=params, expected_status=200).json()
            yield from data.get("jobs", [])
            url = next((link.get("href") for link in data.get("links", [])
                        if link.get("rel") == "next" and link.get("href")), None)
            params = None

    def poll_statuses(self, job_ids: Iterable[str], *, page_size: int | None = None) -> dict[str, dict]:
        """Status metadata of the given jobs from the job listing (one request per page).

        Stops paging once every wanted job was seen. Pages hold twice as many jobs as are
        wanted (20 to 100, unless ``page_size`` is given): listings come newest first, so
        the jobs a run follows are usually on the first page, and a small page is cheap to
        ask for often. Jobs the listing does not mention, or mentions without a ``status``,
        are missing from the result (the caller falls back to ``GET /jobs/{id}``).
        """
        wanted = set(job_ids)
        found: dict[str, dict] = {}
        if not wanted:
            return found
        if page_size is None:
            page_size = min(100, max(20, 2 * len(wanted)))
        max_pages = len(wanted) // page_size + 6
        for item in self.iter_job_listing(page_size=page_size, max_pages=max_pages):
            job_id = item.get("id")
            if job_id in wanted and item.get("status"):
                found[job_id] = item
                if len(found) == len(wanted):
                    break
        return found


def find_tagged_jobs(backend: BackendSpec, tags: Iterable[str], *, max_pages: int = 50) -> dict[str, dict]:
    """Backend jobs carrying one of ``tags`` in their description: tag → listing item.

    Listing items without a description are described one by one (some backends leave it
    out of the listing).
    """
    wanted = set(tags)
    found: dict[str, dict] = {}
    if not wanted:
        return found
    con = backend.connection()
    for item in backend.iter_job_listing(max_pages=max_pages):
        description = item.get("description")
        if description is None:
            try:
                description = con.job(item["id"]).describe().get("description")
            except Exception:  # noqa: BLE001 - best effort during reconciliation
                continue
        tag = find_tag(description)
        if tag in wanted:
            found[tag] = item
            if len(found) == len(wanted):
                break
    return found
