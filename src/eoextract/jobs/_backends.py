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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import openeo
import requests
from openeo.rest import OpenEoApiError
from requests.adapters import HTTPAdapter

from eoextract._util.utc import parse_utc, to_utc
from eoextract.jobs._classify import install_retry_after_hook
from eoextract.jobs._environment_settings import cache_environment_settings

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
    cache_environment_settings(connection.session)
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

    def iter_job_listing(self, *, page_size: int = 100, max_pages: int | None = 50) -> Iterator[dict]:
        """Yield the items of the backend's ``GET /jobs`` listing, following ``next`` links
        (at most ``max_pages`` pages; None: the whole listing)."""
        for page in self.iter_job_pages(page_size=page_size, max_pages=max_pages):
            yield from page

    def iter_job_pages(self, *, page_size: int = 100, max_pages: int | None = 50) -> Iterator[list[dict]]:
        """Yield the pages of the backend's ``GET /jobs`` listing, as :meth:`iter_job_listing`."""
        con = self.connection()
        url: str | None = "/jobs"
        params: dict | None = {"limit": page_size}
        pages = 0
        while url is not None and (max_pages is None or pages < max_pages):
            data = con.get(url, params=params, expected_status=200).json()
            pages += 1
            yield list(data.get("jobs", []))
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


#: How much earlier than the creation attempt a backend job's ``created`` may read and still
#: be looked at: room for the clocks of manager and backend to disagree.
TAG_SEARCH_MARGIN = timedelta(hours=1)


def find_tagged_jobs(backend: BackendSpec, tags: Mapping[str, datetime | None] | Iterable[str], *,
                     margin: timedelta = TAG_SEARCH_MARGIN, page_size: int = 100) -> dict[str, dict]:
    """Backend jobs carrying one of ``tags`` in their description: tag → listing item.

    Args:
        backend: Where to look.
        tags: The tags, each with the time its creation attempt began (None: unknown), or
            just the tags.
        margin: Room for the clocks of manager and backend to disagree.
        page_size: Jobs per listing page.

    The lookup reads the job listing up to the oldest attempt (less ``margin``) and never
    further, however long the account's history: a job cannot be older than the attempt
    that created it. That stop relies on the listing being ordered newest first (as
    openEO backends list); it is checked on every item read, and where the listing is not
    so ordered, lacks ``created`` or a tag's attempt time is unknown, the whole listing is
    read. Where a backend leaves descriptions out of its listing, the jobs listed in the
    window are described one by one.
    """
    attempts = dict(tags) if isinstance(tags, Mapping) else dict.fromkeys(tags)
    found: dict[str, dict] = {}
    if not attempts:
        return found
    times = [to_utc(t) for t in attempts.values()]
    cutoff = None if any(t is None for t in times) else min(times) - margin  # type: ignore[type-var]
    con = backend.connection()
    newest_first, previous, pages, items = True, None, 0, 0
    lists_descriptions = False
    for page in backend.iter_job_pages(page_size=page_size, max_pages=None):
        pages += 1
        reached_cutoff = False
        for item in page:
            items += 1
            created = parse_utc(item.get("created"))
            if created is not None:
                if newest_first and previous is not None and created > previous:
                    newest_first = False
                    _log.warning("backend %r does not list its jobs newest first; reading the whole "
                                 "listing to find %d creation tag(s)", backend.name, len(attempts))
                previous = created
                old = cutoff is not None and created < cutoff
                reached_cutoff = reached_cutoff or old
            else:
                old = False
            # a backend that lists descriptions lists them all (a job without one may lack the key)
            lists_descriptions = lists_descriptions or "description" in item
            description = item.get("description")
            if description is None and not (old or lists_descriptions) and item.get("id"):
                try:
                    description = con.job(item["id"]).describe().get("description")
                except OpenEoApiError as exc:
                    if exc.http_status_code == 404:  # deleted since it was listed
                        continue
                    raise  # the caller looks again later rather than miss a tag
            tag = find_tag(description)
            if tag in attempts and tag not in found:
                found[tag] = item
                if len(found) == len(attempts):
                    _log.debug("backend %r: %d creation tag(s) found in %d listed jobs", backend.name,
                               len(found), items)
                    return found
        # the whole page was checked for order: nothing newer can follow an old item
        if reached_cutoff and newest_first:
            break
    _log.debug("backend %r: %d of %d creation tag(s) found in %d listed jobs (%d pages)", backend.name,
               len(found), len(attempts), items, pages)
    return found
