"""Load a catalogue into a STAC API (Transactions extension) or straight into pgstac.

Both take the collection and its items from the catalogue on disk, drop their local
structural links (the API or pgstac makes its own) and set each item's ``collection``.
Relative asset hrefs mean nothing in a database, so they become absolute: under
``asset_base_url`` when given (e.g. the public URL of the prefix the catalogue was
uploaded to with :func:`~eoextract.stac.publish_s3.publish_to_s3`), else absolute local
paths.

:func:`publish_to_stac_api` creates or updates the collection, then sends the items in
batches to ``POST /collections/{id}/bulk_items`` (``method: upsert``); where the API has
no bulk endpoint it posts items one by one and answers ``409 Conflict`` with a ``PUT``
(or leaves the item alone without ``upsert``). Connection errors, ``429`` and ``5xx``
answers are retried with exponential backoff (honouring ``Retry-After``).

:func:`load_into_pgstac` uses pypgstac's ``Loader`` (the collection first, then the
items in chunks, ``Methods.upsert`` by default), the fastest path for large catalogues.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from eoextract._util.redact import redact
from eoextract.errors import ConfigurationError
from eoextract.stac.publish import (
    PublishError,
    PublishResult,
    find_root,
    item_asset_paths,
    mark_jobs_published,
    output_dir_of,
    strip_structural_links,
    walk_catalog,
)

if TYPE_CHECKING:  # pragma: no cover
    import requests

    from eoextract.jobs.db import JobDatabase

__all__ = ["StacApiClient", "api_documents", "load_into_pgstac", "publish_to_stac_api"]

logger = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


# --------------------------------------------------------------------------- documents


def api_documents(
    catalog_dir: str | os.PathLike[str],
    *,
    asset_base_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The collection and (lazily) the items of a catalogue, as a database holds them.

    Args:
        catalog_dir: The catalogue (root document or folder).
        asset_base_url: URL that local asset paths relative to ``base_dir`` are appended
            to; without it, asset hrefs become absolute local paths.
        base_dir: Folder the asset paths are taken relative to (default: the parent of
            the catalogue's folder, as in :func:`~eoextract.stac.publish_s3.publish_to_s3`).

    Returns:
        The collection dict and an iterator over item dicts.

    Raises:
        PublishError: If the root is not a collection.
    """
    root = find_root(catalog_dir)
    import orjson

    collection = orjson.loads(root.read_bytes())
    if collection.get("type") != "Collection":
        raise PublishError(f"{root} is not a STAC collection (a STAC API and pgstac hold "
                           "items in collections)")
    collection = strip_structural_links(collection)
    collection_id = collection["id"]
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else root.parent.parent
    base_url = asset_base_url.rstrip("/") if asset_base_url else None
    base_prefix = str(base).rstrip(os.sep) + os.sep

    def items() -> Iterator[dict[str, Any]]:
        for entry in walk_catalog(root):
            if entry.kind != "item":
                continue
            item = strip_structural_links(entry.data)
            item["collection"] = collection_id
            paths = item_asset_paths(entry.path, entry.data)
            if paths:
                assets = dict(item.get("assets") or {})
                for name, path in paths.items():
                    if base_url is not None:
                        if not path.startswith(base_prefix):
                            raise PublishError(f"asset {path} lies outside {base}")
                        rel = path[len(base_prefix):].replace(os.sep, "/")
                        href = f"{base_url}/{quote(rel)}"
                    else:
                        href = path
                    assets[name] = {**assets[name], "href": href}
                item["assets"] = assets
            yield item

    return collection, items()


# --------------------------------------------------------------------------- STAC API


class StacApiClient:
    """A few calls of a STAC API's Transactions extensions, with retries.

    Args:
        api_url: Landing page URL of the API.
        auth: ``requests`` auth object, a ``(user, password)`` tuple, or a bearer token.
        session: A ``requests.Session`` to use (default: a new one).
        timeout: Seconds per request.
        max_retries: Retries of a request after a connection error, 429 or 5xx.
        backoff_s: First backoff; doubled per retry (with jitter), at most 60 s.
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
        self.backoff_s = backoff_s
        self.bulk_supported: bool | None = None

    def __repr__(self) -> str:
        return f"StacApiClient({redact(self.url)!r})"

    def request(self, method: str, path: str, json: Any = None,
                ok: tuple[int, ...] = (200, 201, 204)) -> requests.Response:
        """Send a request; retry connection errors, 429 and 5xx; return any final answer.

        Raises:
            PublishError: When the retries are used up.
        """
        import requests

        url = f"{self.url}{path}"
        for attempt in range(self.max_retries + 1):
            wait = min(60.0, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            try:
                response = self.session.request(method, url, json=json, auth=self._auth,
                                                headers=self._headers, timeout=self.timeout)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code not in _RETRY_STATUS or response.status_code in ok:
                    return response
                problem = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
                if retry_after and retry_after.isdigit():
                    wait = min(60.0, float(retry_after))
            if attempt == self.max_retries:
                break
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
    job_db: str | os.PathLike[str] | JobDatabase | None = None,
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
        job_db: Job database whose jobs get ``output_published_at``.
        session: ``requests.Session`` to use (retries and auth are added per request).
        max_retries: Retries per request after connection errors, 429 or 5xx.

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
    failed_ids: list[str] = []
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        answer = client.bulk_items(cid, batch, upsert=upsert)
        if answer is not None:
            written, failed = answer
            result.n_written += len(written)
            result.published_items.extend(written)
            for item_id, message in failed.items():
                failed_ids.append(item_id)
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
                failed_ids.append(item["id"])
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
    if job_db is not None and result.published_items:
        result.jobs_marked = mark_jobs_published(
            job_db, result.published_items, output_dir_of(catalog_dir), failed_items=failed_ids)
    logger.info("published %s", result.summary())
    return result


# --------------------------------------------------------------------------- pgstac


def _psycopg_dsn(dsn: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres+psycopg://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix):]
    return dsn


def load_into_pgstac(
    catalog_dir: str | os.PathLike[str],
    dsn: str,
    *,
    method: str = "upsert",
    asset_base_url: str | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 10000,
    job_db: str | os.PathLike[str] | JobDatabase | None = None,
) -> PublishResult:
    """Load a catalogue into a pgstac database with pypgstac (collection first).

    Args:
        catalog_dir: The catalogue (root document, its folder or the output folder).
        dsn: ``postgresql://user:password@host:port/db`` (``postgresql+psycopg://`` too)
            of a database migrated with ``pypgstac migrate``.
        method: pypgstac load method: ``upsert`` (default), ``insert``, ``ignore``,
            ``insert_ignore`` or ``delsert``.
        asset_base_url: Public URL of the base folder for asset hrefs (see module doc).
        base_dir: Folder asset paths are relative to under ``asset_base_url``.
        chunk_size: Items per load chunk.
        job_db: Job database whose jobs get ``output_published_at``.

    Returns:
        What was loaded.

    Raises:
        ConfigurationError: For an unknown method or missing pypgstac.
        PublishError: If loading fails (nothing of the failing chunk is kept).
    """
    try:
        from pypgstac.db import PgstacDB
        from pypgstac.load import Loader, Methods
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ConfigurationError("load_into_pgstac needs pypgstac: pip install "
                                 "'eoextract[publish]'") from exc
    try:
        mode = Methods(method)
    except ValueError:
        raise ConfigurationError(f"unknown pypgstac method {method!r}: use one of "
                                 f"{', '.join(m.value for m in Methods)}") from None
    started = time.monotonic()
    result = PublishResult(target=redact(dsn))
    collection, items = api_documents(catalog_dir, asset_base_url=asset_base_url,
                                      base_dir=base_dir)

    def counted() -> Iterator[dict[str, Any]]:
        for item in items:
            result.n_items += 1
            result.published_items.append(item["id"])
            yield item

    try:
        with PgstacDB(dsn=_psycopg_dsn(dsn)) as db:
            loader = Loader(db=db)
            loader.load_collections(iter([collection]), insert_mode=mode)
            loader.load_items(counted(), insert_mode=mode, chunksize=chunk_size)
    except PublishError:
        raise
    except Exception as exc:
        raise PublishError(f"loading into pgstac at {redact(dsn)} failed: "
                           f"{redact(f'{type(exc).__name__}: {exc}')}", result=result) from exc
    result.n_written = result.n_items + 1
    result.elapsed_s = time.monotonic() - started
    if job_db is not None and result.published_items:
        result.jobs_marked = mark_jobs_published(job_db, result.published_items,
                                                 output_dir_of(catalog_dir))
    logger.info("published %s", result.summary())
    return result
