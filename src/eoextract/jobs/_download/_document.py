"""The results document of an openEO batch job, read into :class:`RemoteAsset` records.

:func:`parse_job_results` understands both styles backends answer
``GET /jobs/{id}/results`` with: a STAC Item with checksums on its assets, or a STAC
Collection with ``item`` links (as CDSE does). Asset names are untrusted:
:func:`safe_relative_path` checks them, and every path built from them goes through
:func:`~eoextract._util.hrefs.ensure_inside`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

from eoextract._util.checksum import normalized_checksum
from eoextract._util.redact import redact_url
from eoextract._util.utc import parse_utc
from eoextract.errors import DownloadError, UnsafeAssetPath

logger = logging.getLogger(__name__)

_GEOMETRY_INDEX_RE = re.compile(r"openEO_(\d+)(?:\.[A-Za-z0-9]+)*")
_SUFFIX_RE = re.compile(r"\.[A-Za-z0-9]{1,10}")

# --------------------------------------------------------------------------- records


@dataclass(frozen=True, kw_only=True)
class AssetDescription:
    """Where, when and what a raster asset is: what a results document announces for an
    asset (:class:`RemoteAsset`) and what a file says about itself alike."""

    #: EPSG code of the asset's native CRS (``proj:code`` / ``proj:epsg``).
    epsg: int | None = None
    #: Raster shape ``(rows, cols)`` (``proj:shape``).
    shape: tuple[int, ...] | None = None
    #: Bounding box in the native CRS (``proj:bbox``), ``(minx, miny, maxx, maxy)``.
    bbox_native: tuple[float, ...] | None = None
    #: Bounding box in EPSG:4326, ``(west, south, east, north)``.
    bbox_4326: tuple[float, ...] | None = None
    #: Footprint in EPSG:4326 (a GeoJSON geometry).
    geometry_4326: dict[str, Any] | None = None
    #: Nominal time (of a single-time asset).
    datetime: dt.datetime | None = None
    #: Start of the time range covered (first time step of a time series).
    start_datetime: dt.datetime | None = None
    #: End of the time range covered (last time step).
    end_datetime: dt.datetime | None = None
    #: Bands, one dict each (``name``, ``data_type``, ``nodata``, ``unit``, eo fields, ...).
    bands: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class RemoteAsset(AssetDescription):
    """One result asset of an openEO batch job, as announced by the backend.

    Its place, time and bands (:class:`AssetDescription`) are keyword-only; ``bands``
    merge ``eo:bands`` and ``raster:bands`` (or ``bands``).
    """

    #: Asset key in the results document (e.g. ``openEO_3.nc``); untrusted.
    name: str
    #: Absolute URL of the asset.
    href: str
    #: Media type (``type``), e.g. ``application/x-netcdf``.
    media_type: str | None = None
    #: STAC roles, e.g. ``("data",)``.
    roles: tuple[str, ...] = ()
    #: Human-readable title.
    title: str | None = None
    #: Size in bytes (``file:size``) when announced.
    size: int | None = None
    #: Hex multihash of the content when announced (``file:checksum`` of a known hash
    #: function, e.g. ``"1220"`` + SHA-256; see :mod:`eoextract._util.checksum`).
    checksum: str | None = None
    #: ``n`` for assets named ``openEO_<n>`` (sampled feature index), else the
    #: asset's ``feature_index`` field, else None; derived from the name when not given.
    geometry_index: int | None = None
    #: Every other field of the asset as the backend wrote it.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.geometry_index is None:
            object.__setattr__(self, "geometry_index", geometry_index_of(self.name))

    @property
    def relative_path(self) -> PurePosixPath:
        """The asset name as a relative path, checked to stay inside a folder.

        Raises:
            UnsafeAssetPath: If the name is absolute, contains ``..``, NUL,
                backslashes or control characters.
        """
        return safe_relative_path(self.name)

    @property
    def suffix(self) -> str:
        """The file extension of the asset name (``.nc``), or ``""`` if it has none or a
        suspicious one."""
        match = re.search(r"\.[^./\\]*$", self.name)
        if match and _SUFFIX_RE.fullmatch(match.group(0)):
            return match.group(0)
        return ""


def geometry_index_of(name: str) -> int | None:
    """The feature index ``n`` of an asset named ``openEO_<n>`` (with any extension).

    Args:
        name: Asset name, e.g. ``openEO_10.nc``.

    Returns:
        ``10`` for ``openEO_10.nc``; None for names of another form.
    """
    match = _GEOMETRY_INDEX_RE.fullmatch(name) if isinstance(name, str) else None
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- safe paths


def safe_relative_path(name: str) -> PurePosixPath:
    """Check an untrusted name (e.g. a backend's asset key) and return it as a relative path.

    Forward slashes separate folders; every part must be a plain name.

    Args:
        name: The untrusted name.

    Returns:
        The name as a :class:`~pathlib.PurePosixPath`.

    Raises:
        UnsafeAssetPath: If the name is empty, absolute, contains ``.``/``..`` or empty
            parts, backslashes, NUL or other control characters, or a drive prefix.
    """
    if not isinstance(name, str) or not name:
        raise UnsafeAssetPath(f"Unsafe asset name {name!r}: empty or not a string", asset=str(name))
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UnsafeAssetPath(f"Unsafe asset name {name!r}: control character", asset=name)
    if "\\" in name:
        raise UnsafeAssetPath(f"Unsafe asset name {name!r}: backslash", asset=name)
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        raise UnsafeAssetPath(f"Unsafe asset name {name!r}: absolute path", asset=name)
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeAssetPath(f"Unsafe asset name {name!r}: '.', '..' or empty part", asset=name)
    return PurePosixPath(*parts)


# --------------------------------------------------------------------------- results document


def _epsg_of(fields: Mapping[str, Any]) -> int | None:
    code = fields.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        try:
            return int(code.split(":", 1)[1])
        except ValueError:
            return None
    epsg = fields.get("proj:epsg")
    if isinstance(epsg, int) and not isinstance(epsg, bool):
        return epsg
    if isinstance(epsg, str) and epsg.isdigit():
        return int(epsg)
    return None


def _checksum_of(fields: Mapping[str, Any]) -> str | None:
    value = fields.get("file:checksum")
    checksum = normalized_checksum(value)
    if checksum is None and value is not None:
        logger.debug("Ignoring checksum %r (not a multihash of a known hash function)", value)
    return checksum


def _numbers(value: Any) -> tuple[float, ...] | None:
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return tuple(value)
    return None


def _bands_of(fields: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    if isinstance(fields.get("bands"), list):
        merged = []
        for band in fields["bands"]:
            if isinstance(band, dict):
                merged.append({k.split(":", 1)[-1]: v for k, v in band.items()})
        return tuple(merged)
    eo = fields.get("eo:bands") if isinstance(fields.get("eo:bands"), list) else []
    raster = fields.get("raster:bands") if isinstance(fields.get("raster:bands"), list) else []
    merged = []
    for i in range(max(len(eo), len(raster))):
        band: dict[str, Any] = {}
        for source in (eo, raster):
            if i < len(source) and isinstance(source[i], dict):
                band.update(source[i])
        merged.append(band)
    return tuple(merged)


_KNOWN_FIELDS = frozenset(
    {
        "href", "type", "roles", "title", "file:size", "file:checksum", "proj:code",
        "proj:epsg", "proj:shape", "proj:bbox", "bbox", "geometry", "datetime",
        "start_datetime", "end_datetime", "eo:bands", "raster:bands", "bands",
    }
)


def _join(base_url: str, href: str) -> str | None:
    """``href`` resolved against ``base_url``; None when it is no valid URL."""
    try:
        joined = urljoin(base_url, href)
        urlsplit(joined).port  # noqa: B018 - raises ValueError for an invalid port
    except ValueError:
        return None
    return joined


def _shape_of(value: Any) -> tuple[int, ...] | None:
    numbers = _numbers(value)
    if numbers and all(math.isfinite(v) and v >= 0 and float(v).is_integer() for v in numbers):
        return tuple(int(v) for v in numbers)
    return None


def _asset_from_fields(
    name: str, fields: Mapping[str, Any], *, base_url: str, fallback: Mapping[str, Any]
) -> RemoteAsset:
    href = fields.get("href")
    if not isinstance(href, str) or not href:
        raise DownloadError(f"Asset {name!r} of the results document has no href", asset=name)
    url = _join(base_url, href)
    if url is None:
        raise DownloadError(f"Asset {name!r} of the results document has an invalid href", asset=name)

    def pick(key: str) -> Any:
        value = fields.get(key)
        return value if value is not None else fallback.get(key)

    roles = fields.get("roles")
    size = fields.get("file:size")
    shape = _shape_of(fields.get("proj:shape"))
    geometry = pick("geometry")
    feature_index = fields.get("feature_index", fallback.get("feature_index"))
    return RemoteAsset(
        name=name,
        href=url,
        media_type=fields.get("type") if isinstance(fields.get("type"), str) else None,
        roles=tuple(r for r in roles if isinstance(r, str)) if isinstance(roles, list) else (),
        title=fields.get("title") if isinstance(fields.get("title"), str) else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        checksum=_checksum_of(fields),
        epsg=_epsg_of(fields) or _epsg_of(fallback),
        shape=shape,
        bbox_native=_numbers(pick("proj:bbox")),
        bbox_4326=_numbers(pick("bbox")),
        geometry_4326=geometry if isinstance(geometry, dict) else None,
        datetime=parse_utc(pick("datetime")),
        start_datetime=parse_utc(pick("start_datetime")),
        end_datetime=parse_utc(pick("end_datetime")),
        bands=_bands_of(fields) or _bands_of(fallback),
        geometry_index=geometry_index_of(name) if geometry_index_of(name) is not None else (
            feature_index if isinstance(feature_index, int) and not isinstance(feature_index, bool)
            and feature_index >= 0 else None
        ),
        extra={k: v for k, v in fields.items() if k not in _KNOWN_FIELDS},
    )


def _item_fallback(item: Mapping[str, Any], *, single_asset: bool) -> dict[str, Any]:
    """Fields of an item that apply to its assets when they lack their own."""
    props = item.get("properties") if isinstance(item.get("properties"), dict) else {}
    fallback = {
        k: props[k] for k in ("datetime", "start_datetime", "end_datetime", "feature_index") if k in props
    }
    for key in ("proj:code", "proj:epsg"):
        if key in props:
            fallback[key] = props[key]
    if single_asset:
        if isinstance(item.get("geometry"), dict):
            fallback["geometry"] = item["geometry"]
        if _numbers(item.get("bbox")):
            fallback["bbox"] = item["bbox"]
        if "proj:bbox" in props:
            fallback["proj:bbox"] = props["proj:bbox"]
    return fallback


def _collection_fallback(collection: Mapping[str, Any]) -> dict[str, Any]:
    fallback: dict[str, Any] = {}
    try:
        interval = collection["extent"]["temporal"]["interval"][0]
        if interval[0]:
            fallback["start_datetime"] = interval[0]
        if interval[1]:
            fallback["end_datetime"] = interval[1]
    except (KeyError, IndexError, TypeError):
        pass
    return fallback


def _needs_item(fields: Mapping[str, Any]) -> bool:
    return not (
        isinstance(fields.get("geometry"), dict)
        and fields.get("bbox")
        and (fields.get("datetime") or fields.get("start_datetime"))
    )


def parse_job_results(
    results_doc: Mapping[str, Any],
    *,
    base_url: str,
    fetch: Callable[[str], Mapping[str, Any]] | None = None,
) -> list[RemoteAsset]:
    """Read an openEO batch job results document into :class:`RemoteAsset` records.

    Two styles are understood:

    * a STAC Item whose assets carry ``file:size``, ``file:checksum``, ``proj:*`` and
      their own ``bbox``/``geometry``;
    * a STAC Collection whose top-level assets carry ``proj:epsg``/``proj:bbox``/
      ``proj:shape``, ``eo:bands`` and ``raster:bands`` but no checksum, with one
      ``item`` link per asset; the linked items (read with ``fetch``) give each asset
      its geometry, bbox and time when the asset itself lacks them.

    Asset names are *not* checked here; :attr:`RemoteAsset.relative_path`,
    :func:`~eoextract.jobs._download.download_job_assets` and
    :func:`~eoextract.jobs._download.place_file` refuse hostile ones.

    Args:
        results_doc: The JSON answer of ``GET /jobs/{id}/results``.
        base_url: URL the document was read from; relative hrefs resolve against it.
        fetch: Reads the JSON document at a URL (e.g. an authenticated GET);
            without it, item links are not followed.

    Returns:
        The assets in document order.

    Raises:
        DownloadError: If the document is not a STAC Item or Collection, has no
            assets, or an asset has no href.
    """
    if not isinstance(results_doc, Mapping):
        raise DownloadError(
            f"Invalid job results document: expected a JSON object, got {type(results_doc).__name__}"
        )
    doc_type = results_doc.get("type")
    if doc_type not in ("Feature", "Collection", None):
        raise DownloadError(f"Invalid job results document: unexpected type {doc_type!r}")
    assets = results_doc.get("assets")
    if not isinstance(assets, Mapping) or not assets:
        raise DownloadError("Invalid job results document: no assets")
    for name, fields in assets.items():
        if not isinstance(fields, Mapping):
            raise DownloadError(f"Invalid job results document: asset {name!r} is not an object", asset=str(name))

    if doc_type == "Collection":
        common = _collection_fallback(results_doc)
        items_by_asset = {}
        if fetch is not None and any(_needs_item(f) for f in assets.values()):
            items_by_asset = _fetch_items(results_doc, assets, base_url=base_url, fetch=fetch)
        result = []
        for name, fields in assets.items():
            fallback = dict(common)
            item_info = items_by_asset.get(name)
            if item_info is not None:
                item, item_asset = item_info
                fallback.update(_item_fallback(item, single_asset=True))
                if item_asset:
                    for key in ("geometry", "bbox", "proj:bbox", "datetime", "start_datetime",
                                "end_datetime", "file:size", "file:checksum"):
                        if key in item_asset and key not in fields:
                            fallback[key] = item_asset[key]
            merged_fields = dict(fields)
            for key in ("file:size", "file:checksum"):
                if key not in merged_fields and key in fallback:
                    merged_fields[key] = fallback[key]
            result.append(_asset_from_fields(str(name), merged_fields, base_url=base_url, fallback=fallback))
        return result

    fallback = _item_fallback(results_doc, single_asset=len(assets) == 1)
    return [
        _asset_from_fields(str(name), fields, base_url=base_url, fallback=fallback)
        for name, fields in assets.items()
    ]


def _fetch_items(
    collection: Mapping[str, Any],
    assets: Mapping[str, Any],
    *,
    base_url: str,
    fetch: Callable[[str], Mapping[str, Any]],
) -> dict[str, tuple[Mapping[str, Any], Mapping[str, Any] | None]]:
    """Follow the ``item`` links of a results collection and match items to assets."""
    links = collection.get("links") if isinstance(collection.get("links"), list) else []
    item_urls = [
        url for link in links
        if isinstance(link, dict) and link.get("rel") == "item" and isinstance(link.get("href"), str)
        and (url := _join(base_url, link["href"])) is not None
    ]
    href_to_name = {url: n for n, f in assets.items()
                    if isinstance(f.get("href"), str) and (url := _join(base_url, f["href"])) is not None}
    found: dict[str, tuple[Mapping[str, Any], Mapping[str, Any] | None]] = {}
    for url in item_urls:
        try:
            item = fetch(url)
        except Exception as exc:  # noqa: BLE001 - item metadata is optional
            logger.warning("Could not read result item %s: %s", redact_url(url), exc)
            continue
        if not isinstance(item, Mapping):
            continue
        item_assets = item.get("assets") if isinstance(item.get("assets"), Mapping) else {}
        matched = False
        for key, fields in item_assets.items():
            if not isinstance(fields, Mapping):
                continue
            name = key if key in assets else None
            if name is None and isinstance(fields.get("href"), str):
                name = href_to_name.get(_join(url, fields["href"]) or "")
            if name is not None and name not in found:
                found[name] = (item, fields)
                matched = True
        if not matched and isinstance(item.get("id"), str):
            for candidate in (item["id"], item["id"].rsplit("/", 1)[-1]):
                if candidate in assets and candidate not in found:
                    found[candidate] = (item, None)
                    break
    return found

