"""Batch job results documents (``GET /jobs/{id}/results``) and their STAC items.

Two styles:

``current`` (default)
    A STAC 1.1.0 Collection whose assets carry ``href``, ``type``, ``roles``, ``title``,
    ``file:size``, ``file:checksum`` (sha2-256 multihash, hex), ``proj:code``,
    ``proj:shape``, ``proj:bbox``, ``proj:transform``, ``bands`` (with statistics) and the
    asset's own ``bbox``/``geometry`` (WGS84) and time range.

``cdse``
    What the Copernicus Data Space Ecosystem backend answers today: a STAC 1.0.0 Collection
    whose assets carry ``proj:epsg``, ``proj:bbox``, ``proj:shape``, ``eo:bands`` and
    ``raster:bands`` with statistics but no ``file:size``/``file:checksum``.

Both list one ``item`` link per asset; the items are served at
``/jobs/{id}/results/items/{signature}/{asset name}``. Asset and item hrefs are signed URLs
that need no token. With an expiry (the production profile's ``asset_url_ttl_s``), asset
hrefs end in ``?expires=<POSIX seconds>``, the signature covers that time, and the URL is
refused once it has passed (``ResultLinkExpired``, as openeo-driver's ``UrlSigner`` does):
each new ``GET /jobs/{id}/results`` hands out fresh ones. The signature sits in the path,
which eoextract's redaction masks (``/jobs/<id>/results/assets/***/<file>``).

Assets are stored in job records as plain dicts (see :func:`asset_to_dict`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from eoextract._util.checksum import file_checksum
from eoextract._util.utc import format_utc

RESULT_STYLES = ("current", "cdse")
"""Accepted result styles."""

_PROJ_V2 = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_PROJ_V1 = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
_FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
_EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
_RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
_PLAIN_BAND_KEYS = ("name", "description")
_RASTER_BAND_KEYS = ("data_type", "nodata", "statistics", "unit")
#: STAC asset fields copied from stored asset dicts: (STAC key, stored key), per style.
_CDSE_ASSET_FIELDS = (("proj:bbox", "bbox_native"), ("proj:shape", "shape"))
_CURRENT_ASSET_FIELDS = (
    ("proj:shape", "shape"),
    ("proj:bbox", "bbox_native"),
    ("proj:transform", "transform"),
    ("bbox", "bbox_4326"),
    ("geometry", "geometry_4326"),
)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def asset_to_dict(asset: Any, out_dir: Path) -> dict[str, Any]:
    """Turn an engine ``ResultAsset`` into the plain dict kept in job records.

    Adds ``file_size`` and ``file_checksum``; ``path`` becomes relative to ``out_dir``.
    """
    data = {f.name: getattr(asset, f.name) for f in fields(asset)} if is_dataclass(asset) else dict(asset)
    path = Path(data["path"])
    if not path.is_absolute():
        path = Path(out_dir) / path
    data = {k: _json_value(v) for k, v in data.items()}
    data["path"] = path.relative_to(out_dir).as_posix()
    data["file_checksum"], data["file_size"] = file_checksum(path, "sha2-256")
    return data


class UrlSigner:
    """Signs asset URLs so downloads need no bearer token (like real backends' signed URLs).

    Args:
        secret: Key of the HMAC.
        ttl_s: Asset URLs expire this many seconds (rounded up to whole seconds) after
            they were made; None: never.
        clock: POSIX time source (for tests).
    """

    def __init__(self, secret: bytes, ttl_s: float | None = None,
                 clock: Callable[[], float] = time.time):
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock

    def sign(self, job_id: str, name: str, expires: int | None = None) -> str:
        """Signature of one asset of one job (valid until ``expires``, when given)."""
        msg = f"{job_id}/{name}" + ("" if expires is None else f"/{expires}")
        return hmac.new(self._secret, msg.encode(), hashlib.sha256).hexdigest()[:32]

    def verify(self, job_id: str, name: str, signature: str, expires: int | None = None) -> bool:
        """Whether ``signature`` is valid for this asset (expiry not checked)."""
        return hmac.compare_digest(self.sign(job_id, name, expires), signature)

    def expires(self) -> int | None:
        """Expiry of URLs made now (POSIX seconds), or None without a ``ttl_s``."""
        if self.ttl_s is None:
            return None
        return math.ceil(self._clock() + self.ttl_s)

    def expired(self, expires: int | None) -> bool:
        """Whether an asset URL with this expiry can no longer be used."""
        return expires is not None and expires < self._clock()

    def item_url(self, base_url: str, job_id: str, name: str) -> str:
        """URL of the STAC item of an asset."""
        return (
            f"{base_url}jobs/{job_id}/results/items/{self.sign(job_id, 'item:' + name)}/"
            f"{quote(name, safe='')}"
        )

    def asset_url(self, base_url: str, job_id: str, name: str) -> str:
        """Download URL of an asset (with ``?expires=`` when URLs expire)."""
        expires = self.expires()
        url = (
            f"{base_url}jobs/{job_id}/results/assets/{self.sign(job_id, name, expires)}/"
            f"{quote(name, safe='/')}"
        )
        return url if expires is None else f"{url}?expires={expires}"


def _title(asset: dict[str, Any]) -> str:
    index = asset.get("feature_index")
    return asset["name"] if index is None else f"{asset['name']} (feature {index})"


def _known(band: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: band[k] for k in keys if band.get(k) is not None}


def _renamed(asset: dict[str, Any], fields_: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """``{stac key: asset[stored key]}`` for the stored keys that have a value."""
    return {key: asset[stored] for key, stored in fields_ if asset.get(stored) is not None}


def _eo_fields(band: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Common name and centre wavelength of a band, keys prefixed (``"eo:"`` or ``""``)."""
    out = {prefix + "common_name": band["common_name"]} if band.get("common_name") else {}
    if band.get("center_wavelength") is not None:
        out[prefix + "center_wavelength"] = band["center_wavelength"]
    return out


def _current_bands(bands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**_known(b, _PLAIN_BAND_KEYS), **_eo_fields(b, "eo:"), **_known(b, _RASTER_BAND_KEYS)}
        for b in bands
    ]


def _cdse_eo_bands(bands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": b.get("name"), **_eo_fields(b, "")} for b in bands]


def _cdse_raster_bands(bands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": b.get("name"), **_known(b, _RASTER_BAND_KEYS)} for b in bands]


def _asset_entry(asset: dict[str, Any], href: str, style: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "href": href,
        "type": asset.get("media_type") or "application/octet-stream",
        "roles": asset.get("roles") or ["data"],
        "title": _title(asset),
    }
    epsg = asset.get("epsg")
    bands = asset.get("bands") or []
    if style == "cdse":
        if epsg is not None:
            entry["proj:epsg"] = epsg
        entry.update(_renamed(asset, _CDSE_ASSET_FIELDS))
        if bands:
            entry["eo:bands"] = _cdse_eo_bands(bands)
            entry["raster:bands"] = _cdse_raster_bands(bands)
        return entry
    entry["file:size"] = asset["file_size"]
    entry["file:checksum"] = asset["file_checksum"]
    if epsg is not None:
        entry["proj:code"] = f"EPSG:{epsg}"
    entry.update(_renamed(asset, _CURRENT_ASSET_FIELDS))
    entry.update({k: asset[k] for k in ("start_datetime", "end_datetime") if asset.get(k)})
    entry.update(_renamed(asset, (("feature_index", "feature_index"),)))
    if bands:
        entry["bands"] = _current_bands(bands)
    return entry


def _extent(assets: list[dict[str, Any]]) -> dict[str, Any]:
    boxes = [a["bbox_4326"] for a in assets if a.get("bbox_4326")]
    if boxes:
        bbox = [
            min(b[0] for b in boxes),
            min(b[1] for b in boxes),
            max(b[2] for b in boxes),
            max(b[3] for b in boxes),
        ]
    else:
        bbox = [-180.0, -90.0, 180.0, 90.0]
    starts = sorted(a["start_datetime"] for a in assets if a.get("start_datetime"))
    ends = sorted(a["end_datetime"] for a in assets if a.get("end_datetime"))
    interval = [starts[0] if starts else None, ends[-1] if ends else None]
    return {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [interval]}}


def results_document(
    job: Any, base_url: str, signer: UrlSigner, style: str = "current"
) -> dict[str, Any]:
    """The results document of a finished job.

    Args:
        job: A :class:`~eoextract.backend._job_store.JobRecord`.
        base_url: Root URL of the API, ending in ``/``.
        signer: Signs asset hrefs.
        style: ``"current"`` or ``"cdse"``.

    Returns:
        A STAC Collection as a dict.
    """
    cdse = style == "cdse"
    assets = job.assets
    doc: dict[str, Any] = {
        "type": "Collection",
        "stac_version": "1.0.0" if cdse else "1.1.0",
        "stac_extensions": [_EO, _PROJ_V1, _RASTER] if cdse else [_PROJ_V2, _FILE],
        "id": job.id,
        "title": job.title or f"Results of {job.id}",
        "description": job.description or f"Results of batch job {job.id}.",
        "license": "proprietary",
        "extent": _extent(assets),
        "openeo:status": job.status,
        "assets": {
            a["name"]: _asset_entry(a, signer.asset_url(base_url, job.id, a["name"]), style)
            for a in assets
        },
        "links": [
            {"rel": "self", "href": f"{base_url}jobs/{job.id}/results", "type": "application/json"},
            *(
                {"rel": "item", "href": signer.item_url(base_url, job.id, a["name"]),
                 "type": "application/geo+json"}
                for a in assets
            ),
        ],
    }
    if not cdse:
        doc["created"] = job.created
        doc["updated"] = job.updated
    return doc


def item_document(
    job: Any, asset: dict[str, Any], base_url: str, signer: UrlSigner, style: str = "current"
) -> dict[str, Any]:
    """The STAC Item of one asset of a job (what the ``item`` links point to)."""
    cdse = style == "cdse"
    entry = _asset_entry(asset, signer.asset_url(base_url, job.id, asset["name"]), style)
    geometry = asset.get("geometry_4326")
    bbox = asset.get("bbox_4326")
    for key in ("bbox", "geometry", "start_datetime", "end_datetime", "feature_index"):
        entry.pop(key, None)
    start, end = asset.get("start_datetime"), asset.get("end_datetime")
    properties: dict[str, Any] = {"datetime": None if (start and end) else (start or job.created)}
    if start and end:
        properties["start_datetime"] = start
        properties["end_datetime"] = end
    if cdse and asset.get("epsg") is not None:
        properties["proj:epsg"] = asset["epsg"]
    elif asset.get("epsg") is not None:
        properties["proj:code"] = f"EPSG:{asset['epsg']}"
    if asset.get("feature_index") is not None:
        properties["feature_index"] = asset["feature_index"]
    return {
        "type": "Feature",
        "stac_version": "1.0.0" if cdse else "1.1.0",
        "stac_extensions": [_EO, _PROJ_V1, _RASTER] if cdse else [_PROJ_V2, _FILE],
        "id": asset["name"],
        "collection": job.id,
        "geometry": geometry,
        **({"bbox": bbox} if bbox else {}),
        "properties": properties,
        "assets": {asset["name"]: entry},
        "links": [
            {"rel": "self", "href": signer.item_url(base_url, job.id, asset["name"]),
             "type": "application/geo+json"},
            {"rel": "collection", "href": f"{base_url}jobs/{job.id}/results",
             "type": "application/json"},
        ],
    }
