"""The HTTP session and credentials of an ``openeo.Connection``, for downloads, and the
results document of a batch job read through them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from eoextract.jobs._download._document import RemoteAsset, parse_job_results


@dataclass(frozen=True)
class BackendHeaders:
    """Request headers carrying a backend's credentials, sent only to that backend.

    Call it with a URL to get the headers for that URL: the ``Authorization``
    header goes only to URLs under the backend's root URL (as the openEO client
    itself does), never to object stores or other hosts the assets may live on.
    """

    #: Root URL of the backend the credentials belong to.
    root_url: str
    authorization: str | None = field(default=None, repr=False)

    def __call__(self, url: str) -> dict[str, str]:
        if self.authorization and _same_origin_under(url, self.root_url):
            return {"Authorization": self.authorization}
        return {}


def _same_origin_under(url: str, root_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(root_url)
    if (a.scheme, a.netloc.lower()) != (b.scheme, b.netloc.lower()):
        return False
    root_path = b.path.rstrip("/")
    return a.path == root_path or a.path.startswith(root_path + "/")


def session_for(connection: Any) -> tuple[requests.Session, BackendHeaders]:
    """The HTTP session and credentials of an ``openeo.Connection``, for downloads.

    Reuses the connection's own ``requests.Session`` (its adapters and retry
    settings) and turns its current auth into a :class:`BackendHeaders`, which
    never shows the token in ``repr`` or logs.

    Args:
        connection: An ``openeo.Connection`` (authenticated or not).

    Returns:
        ``(session, headers)`` to pass to :func:`~eoextract.jobs._download.download_asset` /
        :func:`~eoextract.jobs._download.download_job_assets`.
    """
    session = connection.session
    root_url = connection.root_url
    authorization = None
    auth = getattr(connection, "auth", None)
    if auth is not None:
        probe = requests.Request("GET", root_url).prepare()
        probe.headers.clear()
        probe = auth(probe) or probe
        authorization = probe.headers.get("Authorization")
    return session, BackendHeaders(root_url=root_url, authorization=authorization)


def fetch_job_assets(connection: Any, job_id: str, *, timeout: float = 60.0
                     ) -> tuple[list[RemoteAsset], requests.Session, BackendHeaders]:
    """Read a batch job's results document and its assets, with what downloads need.

    Follows the ``item`` links of a Collection-style document (with the backend's
    credentials only where they belong).

    Args:
        connection: An ``openeo.Connection`` to the job's backend.
        job_id: The backend's job id.
        timeout: Seconds to wait for each document.

    Returns:
        ``(assets, session, headers)`` ready for :func:`~eoextract.jobs._download.download_job_assets`.
    """
    session, headers = session_for(connection)
    path = f"/jobs/{job_id}/results"
    document = connection.get(path, expected_status=200).json()

    def fetch(url: str) -> dict:
        response = session.get(url, headers=headers(url), timeout=timeout)
        response.raise_for_status()
        return response.json()

    assets = parse_job_results(document, base_url=connection.build_url(path), fetch=fetch)
    return assets, session, headers
