"""User-defined processes: the ``/process_graphs`` store and the resolver used when executing.

A process graph node may call a process that is not predefined:

* ``{"process_id": "my_udp"}`` (no namespace, or namespace ``"user"``): a process the
  user stored with ``PUT /process_graphs/my_udp``;
* ``{"process_id": "my_udp", "namespace": "http://127.0.0.1:PORT/processes/eoextract/my_udp"}``:
  a remote process definition, fetched over HTTP. Only loopback URLs are allowed, redirects
  included (the embedded backend never reaches out to the internet; see
  :mod:`eoextract.backend._loopback`).

Stored processes are also readable without authentication at
``GET /processes/{user}/{process_id}``, which makes them usable as remote definitions.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import orjson
import requests

from eoextract._util.files import atomic_write
from eoextract.backend._api_errors import BadRequest, OpenEOApiError, ProcessGraphNotFound
from eoextract.backend._loopback import UrlNotAllowed, get_loopback


logger = logging.getLogger(__name__)

_ID_RE = re.compile(r"^\w+$")


def check_process_id(process_id: str) -> str:
    """Check a user-defined process id (openEO: ``^\\w+$``).

    Raises:
        BadRequest: When the id is not a word.
    """
    if not _ID_RE.match(process_id or ""):
        raise BadRequest(f"Invalid process id {process_id!r}: letters, digits and _ only.")
    return process_id


class UdpStore:
    """User-defined processes kept as one JSON file each under ``root/<user>/<id>.json``.

    Args:
        root: Directory of the store (created when missing).
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, user: str, process_id: str) -> Path:
        return self.root / check_process_id(user) / f"{check_process_id(process_id)}.json"

    def put(self, user: str, process_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Store (create or replace) a process.

        Args:
            user: Owner.
            process_id: Id from the URL (wins over an ``id`` in ``spec``).
            spec: Process description with at least ``process_graph``.

        Returns:
            The stored description.

        Raises:
            BadRequest: When ``process_graph`` is missing or not an object.
        """
        if not isinstance(spec, dict) or not isinstance(spec.get("process_graph"), dict):
            raise BadRequest("A user-defined process needs a 'process_graph' object.")
        stored = dict(spec, id=process_id)
        path = self._path(user, process_id)
        with self._lock:
            atomic_write(path, orjson.dumps(stored), fsync=False)
        return stored

    def get(self, user: str, process_id: str) -> dict[str, Any]:
        """Read a stored process.

        Raises:
            ProcessGraphNotFound: When there is none with this id.
        """
        try:
            return orjson.loads(self._path(user, process_id).read_bytes())
        except (FileNotFoundError, BadRequest):
            raise ProcessGraphNotFound(
                f"User-defined process {process_id!r} does not exist."
            ) from None

    def find(self, user: str, process_id: str) -> dict[str, Any] | None:
        """Like :meth:`get` but returns None when missing."""
        try:
            return self.get(user, process_id)
        except ProcessGraphNotFound:
            return None

    def delete(self, user: str, process_id: str) -> None:
        """Delete a stored process.

        Raises:
            ProcessGraphNotFound: When there is none with this id.
        """
        try:
            self._path(user, process_id).unlink()
        except (FileNotFoundError, BadRequest):
            raise ProcessGraphNotFound(
                f"User-defined process {process_id!r} does not exist."
            ) from None

    def list(self, user: str) -> list[dict[str, Any]]:
        """All processes of a user, sorted by id."""
        folder = self.root / check_process_id(user)
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.json")):
            try:
                out.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):  # pragma: no cover - damaged file
                logger.warning("skipping unreadable user-defined process %s", path)
        return out


class UdpResolver:
    """Finds the definition of a process that is not predefined.

    Plain data only (a directory, a user name), so a worker process can build its own.
    Call it as ``resolver(process_id, namespace)``.

    Args:
        store_dir: Root of the :class:`UdpStore`.
        user: Whose stored processes are visible.
        timeout_s: Timeout for fetching remote definitions.
    """

    def __init__(self, store_dir: Path | str, user: str, timeout_s: float = 30.0):
        self.store_dir = Path(store_dir)
        self.user = user
        self.timeout_s = timeout_s
        self._cache: dict[tuple[str, str | None], dict[str, Any] | None] = {}

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (see :meth:`from_dict`)."""
        return {"store_dir": str(self.store_dir), "user": self.user, "timeout_s": self.timeout_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UdpResolver:
        """Rebuild a resolver from :meth:`to_dict` output."""
        return cls(data["store_dir"], data["user"], data.get("timeout_s", 30.0))

    def __call__(self, process_id: str, namespace: str | None = None) -> dict[str, Any] | None:
        """Resolve a process.

        Args:
            process_id: The node's ``process_id``.
            namespace: The node's ``namespace`` (None, ``"user"``, ``"backend"`` or a URL).

        Returns:
            The process description (with ``process_graph``), or None when it is not a
            user-defined or remote process (a predefined one, or unknown).

        Raises:
            OpenEOApiError: ``ProcessNamespaceInvalid`` for a non-loopback or unreadable URL.
        """
        key = (process_id, namespace)
        if key not in self._cache:
            self._cache[key] = self._resolve(process_id, namespace)
        return self._cache[key]

    def _resolve(self, process_id: str, namespace: str | None) -> dict[str, Any] | None:
        if namespace in (None, "", "user", self.user):
            try:
                return UdpStore(self.store_dir).find(self.user, process_id)
            except BadRequest:
                return None
        if namespace == "backend":
            return None
        if not re.match(r"^https?://", namespace or ""):
            raise OpenEOApiError(
                f"Unknown process namespace {namespace!r}.", code="ProcessNamespaceInvalid", status=400
            )
        return fetch_remote_process(namespace, process_id, timeout_s=self.timeout_s)


def fetch_remote_process(url: str, process_id: str | None, *, timeout_s: float = 30.0) -> dict:
    """Fetch a remote process definition from a loopback URL.

    The document may be one process or a listing ``{"processes": [...]}``.

    Raises:
        OpenEOApiError: ``ProcessNamespaceInvalid`` when the URL is not loopback, cannot be
            read, or does not define ``process_id``.
    """
    try:
        resp = get_loopback(url, timeout_s=timeout_s)
    except UrlNotAllowed as exc:
        raise OpenEOApiError(
            f"Remote process definitions are only fetched from loopback hosts: {exc}.",
            code="ProcessNamespaceInvalid",
            status=400,
        ) from None
    except requests.RequestException as exc:
        raise OpenEOApiError(
            f"Cannot read the process definition at {url}: {exc}",
            code="ProcessNamespaceInvalid",
            status=400,
        ) from exc
    try:
        resp.raise_for_status()
        data = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise OpenEOApiError(
            f"Cannot read the process definition at {url}: {exc}",
            code="ProcessNamespaceInvalid",
            status=400,
        ) from exc
    if isinstance(data, dict) and "id" not in data and isinstance(data.get("processes"), list):
        found = [p for p in data["processes"] if isinstance(p, dict) and p.get("id") == process_id]
        data = found[0] if found else None
    if not isinstance(data, dict) or not isinstance(data.get("process_graph"), dict):
        raise OpenEOApiError(
            f"No process definition for {process_id!r} at {url}.",
            code="ProcessNamespaceInvalid",
            status=400,
        )
    if process_id is not None and data.get("id") not in (None, process_id):
        raise OpenEOApiError(
            f"The definition at {url} is for {data.get('id')!r}, not {process_id!r}.",
            code="ProcessNamespaceInvalid",
            status=400,
        )
    return data
