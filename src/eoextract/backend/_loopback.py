"""HTTP reads restricted to loopback hosts, redirects included.

The embedded backend reads URLs given in process graphs (``load_url``, remote process
namespaces) but never reaches beyond the machine: every URL, and every redirect target, must
name ``127.0.0.1``, ``localhost`` or ``::1``. Redirects are followed by hand so each hop is
checked before anything connects to it; proxies and ``.netrc`` from the environment are
ignored.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlparse

import requests

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Host names the embedded backend reads from."""

MAX_REDIRECTS = 5
"""Redirects followed at most per read."""


class UrlNotAllowed(ValueError):
    """A URL (or a redirect target) outside the loopback allow-list, or too many redirects."""


def check_loopback_url(url: str) -> str:
    """Return ``url`` when it is an ``http(s)`` URL on a loopback host.

    Raises:
        UrlNotAllowed: For another scheme or host.
    """
    parts = urlparse(str(url))
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or host not in LOOPBACK_HOSTS:
        raise UrlNotAllowed(
            f"only http(s) URLs on {', '.join(sorted(LOOPBACK_HOSTS))} are read, "
            f"not {parts.scheme}://{host or '?'}"
        )
    return str(url)


def get_loopback(url: str, *, timeout_s: float = 30.0,
                 max_redirects: int = MAX_REDIRECTS) -> requests.Response:
    """GET a loopback URL, following only redirects that stay on loopback hosts.

    Args:
        url: The URL to read.
        timeout_s: Connect and read timeout of each request.
        max_redirects: Redirects followed at most.

    Returns:
        The final (non-redirect) response, body read.

    Raises:
        UrlNotAllowed: When the URL or a redirect target is not on a loopback host (nothing
            is sent to it), or after ``max_redirects`` redirects.
        requests.RequestException: On connection errors and timeouts.
    """
    url = check_loopback_url(url)
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment: loopback stays local
        for _ in range(max_redirects + 1):
            resp = session.get(url, timeout=timeout_s, allow_redirects=False)
            if not resp.is_redirect:
                return resp
            target = urljoin(url, resp.headers["location"])
            resp.close()
            try:
                url = check_loopback_url(target)
            except UrlNotAllowed as exc:
                raise UrlNotAllowed(f"redirect refused: {exc}") from None
    raise UrlNotAllowed(f"more than {max_redirects} redirects")
