"""Reading the environment's HTTP settings once per host, not once per request.

``requests`` looks up proxies (``HTTPS_PROXY``, ``NO_PROXY``, ...) and CA bundles
(``REQUESTS_CA_BUNDLE``) in ``os.environ`` on every request of a session that trusts the
environment: a scan of the whole environment each time, a fifth of the job manager's CPU
when it follows many short jobs. :func:`cache_environment_settings` keeps what a session
found for each scheme and host for :data:`ENVIRONMENT_TTL_S` seconds, so a long run still
sees a changed environment, and keeps at most :data:`MAX_HOSTS` hosts. Sessions that do not
trust the environment, and requests that name their own proxies, are left as they are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

#: Seconds a host's environment settings are reused.
ENVIRONMENT_TTL_S = 60.0
#: Hosts whose settings are kept per session (the oldest is dropped past this).
MAX_HOSTS = 64
_CACHED = "_eoextract_environment_cached"


class EnvironmentSettingsCache:
    """What ``merge_environment_settings`` returned, per scheme, host and request settings."""

    def __init__(self, merge: Callable[..., dict[str, Any]], session: requests.Session, *,
                 ttl_s: float = ENVIRONMENT_TTL_S, max_hosts: int = MAX_HOSTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._merge = merge
        self._session = session
        self._ttl_s = ttl_s
        self._max_hosts = max_hosts
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[float, dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, url: str, proxies: dict[str, str] | None, stream: Any, verify: Any,
                 cert: Any) -> dict[str, Any]:
        session = self._session
        if not session.trust_env or proxies:
            return self._merge(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        try:
            key = (parts.scheme, parts.netloc, stream, verify, cert, tuple(sorted(session.proxies.items())),
                   session.stream, session.verify, session.cert)
            hash(key)
        except TypeError:  # unhashable settings: no caching
            return self._merge(url, proxies, stream, verify, cert)
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
        if hit is None or now - hit[0] >= self._ttl_s:
            settings = self._merge(url, {} if proxies is None else proxies, stream, verify, cert)
            with self._lock:
                self._entries.pop(key, None)
                while len(self._entries) >= self._max_hosts:
                    del self._entries[next(iter(self._entries))]
                self._entries[key] = (now, settings)
        else:
            settings = hit[1]
        return {**settings, "proxies": dict(settings["proxies"])}  # callers may change the proxies


def cache_environment_settings(session: requests.Session) -> requests.Session:
    """Make ``session`` read the environment's proxies and CA bundle once per host and
    :data:`ENVIRONMENT_TTL_S` (once per session; an instance attribute only)."""
    if not getattr(session, _CACHED, False):
        session.merge_environment_settings = EnvironmentSettingsCache(  # type: ignore[method-assign]
            session.merge_environment_settings, session)
        setattr(session, _CACHED, True)
    return session
