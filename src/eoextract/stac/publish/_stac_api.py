"""Load a catalogue into a STAC API with the Transactions extension.

The collection and its items come from the catalogue on disk as a database holds them
(:func:`~eoextract.stac.publish._walk.api_documents`): no local structural links (the
API makes its own), each item's ``collection`` set, asset hrefs absolute: under
``asset_base_url`` when given (e.g. the public URL of the prefix the catalogue was
uploaded to with :func:`~eoextract.stac.publish.publish_to_s3`), else absolute local
paths.

:func:`publish_to_stac_api` creates or updates the collection, then sends the items in
batches to ``POST /collections/{id}/bulk_items`` (``method: upsert``); where the API has
no bulk endpoint it posts items one by one and answers ``409 Conflict`` with a ``PUT``
(or leaves the item alone without ``upsert``). Connection errors and the HTTP statuses
the retry policy deems retryable (``429``, ``5xx``, ...) are retried with exponential
backoff and jitter (honouring ``Retry-After``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from eoextract._util.redact import redact
from eoextract._util.retry import RetryPolicy, is_retryable_status, retry_after_of
from eoextract.errors import ConfigurationError
from eoextract.stac.publish._publish_result import PublishError, PublishResult
from eoextract.stac.publish._walk import api_documents

if TYPE_CHECKING:  # pragma: no cover
    import requests

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- STAC API


class StacApiClient:
    """A few calls of a STAC API's Transactions extensions, with retries.

    Args:
        api_url: Landing page URL of the API.
        auth: ``requests`` auth object, a ``(user, password)`` tuple, or a bearer token.
        session: A ``requests.Session`` to use (default: a new one).
        timeout: Seconds per request.
        max_retries: Retries of a request after a connection error or a retryable
            status (429, 5xx, ...).
        backoff_s: First backoff; doubled per retry, at most 60 s, with up to half taken
            off at random; a longer ``Retry-After`` (up to 60 s) is honoured.
    """

    def __init__(self, api_url: str, *, auth: Any = None, session: requests.Session | None = None,
                 timeout: float = 120.0, max_retries: int = 5, backoff_s: float = 0.5) -> None:
        import requests

        self.url = api_url.rstrip("/")
        self.session = session or requests.Session()
        if isinstance(auth, str):
            self._headers = {"Authorization": f"Bearer {auth}"}
            self._auth = None
        else:
            self._headers = {}
            self._auth = auth
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_policy = RetryPolicy(base=backoff_s, factor=2.0, maximum=60.0,
                                        retry_after_cap=60.0, jitter=0.5)
        self.bulk_supported: bool | None = None

    def __repr__(self) -> str:
        return f"StacApiClient({redact(self.url)!r})"

    def request(self, method: str, path: str, json: Any = None,
                ok: tuple[int, ...] = (200, 201, 204)) -> requests.Response:
        """Send a request; retry connection errors and retryable statuses; return any final
        answer.

        Raises:
            PublishError: When the retries are used up.
        """
        import requests

        url = f"{self.url}{path}"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = self.session.request(method, url, json=json, auth=self._auth,
                                                headers=self._headers, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code in ok or not is_retryable_status(response.status_code):
                    return response
                problem = f"HTTP {response.status_code}"
                retry_after = retry_after_of(response.headers)
            if attempt == self.max_retries:
                break
            wait = self.retry_policy.delay(attempt + 1, retry_after)
            logger.info("%s %s: %s, retrying in %.1f s", method, redact(url), problem, wait)
            time.sleep(wait)
        raise PublishError(f"{method} {redact(url)}: {problem} after {self.max_retries} retries")

    def put_collection(self, collection: Mapping[str, Any], *, upsert: bool) -> bool:
        """Create the collection, or update it when it exists and ``upsert``.

        Returns:
            Whether it was written (False: it existed and was left alone).
        """
        cid = quote(collection["id"], safe="")
        response = self.request("POST", "/collections", collection)
        if response.status_code in (200, 201):
            return True
        if response.status_code != 409:
            raise PublishError(_http_problem("create collection", response))
        if not upsert:
            return False
        response = self.request("PUT", f"/collections/{cid}", collection)
        if response.status_code in (404, 405):  # older APIs: PUT /collections
            response = self.request("PUT", "/collections", collection)
        if response.status_code not in (200, 201, 204):
            raise PublishError(_http_problem("update collection", response))
        return True

    def bulk_items(self, collection_id: str, items: list[dict[str, Any]], *,
                   upsert: bool) -> tuple[list[str], dict[str, str]] | None:
        """Send items to ``/bulk_items``.

        Returns:
            ``(written ids, {failed id: message})``, or None when the API has no bulk
            endpoint (or refused the batch as a whole with ``409``).
        """
        if self.bulk_supported is False:
            return None
        body = {"items": {it["id"]: it for it in items}, "method": "upsert" if upsert else "insert"}
        path = f"/collections/{quote(collection_id, safe='')}/bulk_items"
        response = self.request("POST", path, body)
        if response.status_code in (404, 405) and self.bulk_supported is None:
            logger.info("the API has no bulk_items endpoint; sending items one by one")
            self.bulk_supported = False
            return None
        if response.status_code == 409:
            return None
        if response.status_code not in (200, 201):
            raise PublishError(_http_problem("bulk_items", response))
        self.bulk_supported = True
        failed: dict[str, str] = {}
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, Mapping):
            for error in answer.get("errors") or []:
                if isinstance(error, Mapping) and error.get("id") is not None:
                    failed[str(error["id"])] = str(error.get("msg") or error)
        return [it["id"] for it in items if it["id"] not in failed], failed

    def put_item(self, collection_id: str, item: Mapping[str, Any], *, upsert: bool) -> bool:
        """Create one item; on ``409`` replace it when ``upsert``.

        Returns:
            Whether it was written (False: it existed and was left alone).
        """
        cid = quote(collection_id, safe="")
        response = self.request("POST", f"/collections/{cid}/items", item)
        if response.status_code in (200, 201):
            return True
        if response.status_code != 409:
            raise PublishError(_http_problem(f"create item {item['id']}", response))
        if not upsert:
            return False
        iid = quote(item["id"], safe="")
        response = self.request("PUT", f"/collections/{cid}/items/{iid}", item)
        if response.status_code not in (200, 201, 204):
            raise PublishError(_http_problem(f"update item {item['id']}", response))
        return True


def _http_problem(what: str, response: requests.Response) -> str:
    text = " ".join(response.text.split())[:300]
    return f"{what}: HTTP {response.status_code}: {text}"


def publish_to_stac_api(
    catalog_dir: str | os.PathLike[str],
    api_url: str,
    *,
    upsert: bool = True,
    batch_size: int = 500,
    auth: Any = None,
    asset_base_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    session: requests.Session | None = None,
    max_retries: int = 5,
) -> PublishResult:
    """Load a catalogue's collection and items into a STAC API with transactions.

    Args:
        catalog_dir: The catalogue (root document, its folder or the output folder).
        api_url: Landing page URL of the STAC API.
        upsert: Replace the collection and items that exist already (else keep them).
        batch_size: Items per bulk request.
        auth: ``requests`` auth, ``(user, password)``, or a bearer token string.
        asset_base_url: Public URL of the base folder for asset hrefs (see module doc).
        base_dir: Folder asset paths are relative to under ``asset_base_url``.
        session: ``requests.Session`` to use (retries and auth are added per request).
        max_retries: Retries per request after connection errors or retryable statuses.

    Returns:
        What was loaded; ``errors`` lists items the API refused.

    Raises:
        PublishError: If the collection cannot be written or a request keeps failing.
    """
    if batch_size < 1:
        raise ConfigurationError("batch_size must be at least 1")
    started = time.monotonic()
    client = StacApiClient(api_url, auth=auth, session=session, max_retries=max_retries)
    result = PublishResult(target=redact(api_url))
    collection, items = api_documents(catalog_dir, asset_base_url=asset_base_url,
                                      base_dir=base_dir)
    cid = collection["id"]
    if client.put_collection(collection, upsert=upsert):
        result.n_written += 1
    else:
        result.n_unchanged += 1
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        answer = client.bulk_items(cid, batch, upsert=upsert)
        if answer is not None:
            written, failed = answer
            result.n_written += len(written)
            result.published_items.extend(written)
            for item_id, message in failed.items():
                result.failed_items.append(item_id)
                result.errors.append(f"item {item_id}: {message}")
            return
        for item in batch:
            try:
                if client.put_item(cid, item, upsert=upsert):
                    result.n_written += 1
                else:
                    result.n_unchanged += 1
                result.published_items.append(item["id"])
            except PublishError as exc:
                result.failed_items.append(item["id"])
                result.errors.append(str(exc))

    for item in items:
        result.n_items += 1
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
            batch = []
    if batch:
        flush()
    result.elapsed_s = time.monotonic() - started
    result.root_url = f"{client.url}/collections/{quote(cid, safe='')}"
    logger.info("published %s", result.summary())
    return result
