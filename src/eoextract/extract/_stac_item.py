"""STAC items for extracted files.

:func:`build_item` turns a file's metadata (:func:`read_file_metadata`, read from the
file itself) and what the backend announced (a
:class:`~eoextract.jobs._download.RemoteAsset`) into a :class:`pystac.Item` with the
projection, eo, raster and file extensions. What the file says wins; the backend's
metadata fills the gaps. The function does no I/O.

:func:`refresh_file_metadata` brings an item up to date after user code rewrote its
files or added local assets, and :func:`make_item_id` gives stable, unique item ids.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension, Statistics

from eoextract._util.checksum import DEFAULT_ALGORITHM, file_checksum, parse_checksum
from eoextract._util.hrefs import local_path
from eoextract._util.utc import to_utc
from eoextract.errors import StacError
from eoextract.extract._filemeta import FileIndex, FileMetadata, item_crs, read_file_metadata
from eoextract.jobs._download import RemoteAsset

logger = logging.getLogger(__name__)

_DATA_TYPES = {d.value for d in DataType}


# --------------------------------------------------------------------------- building


def make_item_id(job_key: str, asset_name: str, path: Path | str | None = None) -> str:
    """A stable, unique item id for one asset of one job.

    The id is readable (the file name without extension when ``path`` is given,
    else job key and asset name) and ends with a short hash of ``(job_key,
    asset_name)``, so two assets never share an id even if their readable parts
    look alike after cleaning. The same arguments always give the same id.

    Args:
        job_key: The job's stable key in the job database.
        asset_name: The asset's name in the job results.
        path: Final path of the file, for a readable prefix.

    Returns:
        An id of at most ~100 characters from ``[A-Za-z0-9._-]``.
    """
    digest = hashlib.sha256(f"{job_key}\x00{asset_name}".encode()).hexdigest()[:10]
    if path is not None:
        readable = Path(path).stem
    else:
        readable = f"{job_key}_{PurePosixPath(str(asset_name)).stem}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", readable).strip("-._")[:88]
    return f"{slug}_{digest}" if slug else digest


def _merge_bands(file_bands: Sequence[Mapping[str, Any]], remote_bands: Sequence[Mapping[str, Any]]) -> list[dict]:
    """File bands (names, types, nodata) completed with the backend's (eo, statistics)."""
    if not file_bands:
        return [dict(b) for b in remote_bands]
    by_name = {b.get("name"): b for b in remote_bands if b.get("name")}
    same_order = len(remote_bands) == len(file_bands)
    merged = []
    for i, band in enumerate(file_bands):
        remote = by_name.get(band.get("name")) or (remote_bands[i] if same_order and not by_name else {})
        merged.append({**remote, **{k: v for k, v in band.items() if v is not None}})
    return merged


def _nodata(value: Any) -> float | NoDataStrings | None:
    if isinstance(value, str):
        try:
            return NoDataStrings(value.lower())
        except ValueError:
            return None
    if isinstance(value, float):
        if math.isnan(value):
            return NoDataStrings.NAN
        if math.isinf(value):
            return NoDataStrings.INF if value > 0 else NoDataStrings.NINF
    return value


def _set_bands(asset: pystac.Asset, bands: Sequence[Mapping[str, Any]]) -> None:
    if not bands:
        return
    eo_bands = []
    for i, band in enumerate(bands):
        eo_bands.append(
            Band.create(
                name=str(band.get("name") or f"band_{i + 1}"),
                common_name=band.get("common_name"),
                description=band.get("description"),
                center_wavelength=band.get("center_wavelength"),
                full_width_half_max=band.get("full_width_half_max"),
                solar_illumination=band.get("solar_illumination"),
            )
        )
    EOExtension.ext(asset, add_if_missing=True).bands = eo_bands
    raster_bands = []
    for band in bands:
        stats = band.get("statistics") if isinstance(band.get("statistics"), Mapping) else None
        data_type = band.get("data_type")
        raster_bands.append(
            RasterBand.create(
                nodata=_nodata(band.get("nodata")),
                data_type=DataType(data_type) if data_type in _DATA_TYPES else None,
                unit=band.get("unit"),
                scale=band.get("scale"),
                offset=band.get("offset"),
                statistics=Statistics.create(
                    **{k: stats[k] for k in ("minimum", "maximum", "mean", "stddev", "valid_percent")
                       if isinstance(stats.get(k), (int, float))}
                ) if stats else None,
            )
        )
    RasterExtension.ext(asset, add_if_missing=True).bands = raster_bands


def _apply_projection(target: pystac.Item | pystac.Asset, meta: Mapping[str, Any]) -> None:
    if meta.get("epsg") is None and meta.get("wkt2") is None:
        return
    proj = ProjectionExtension.ext(target, add_if_missing=True)
    if meta.get("epsg") is not None:
        proj.code = f"EPSG:{meta['epsg']}"
    else:
        proj.code = None
        proj.wkt2 = meta["wkt2"]
    if meta.get("shape"):
        proj.shape = [int(v) for v in meta["shape"]]
    if meta.get("transform"):
        proj.transform = [float(v) for v in meta["transform"]]
    if meta.get("bbox"):
        proj.bbox = [float(v) for v in meta["bbox"]]


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def build_item(
    asset: RemoteAsset | None,
    file_meta: FileMetadata,
    *,
    item_id: str,
    collection_id: str,
    properties: Mapping[str, Any] | None = None,
    asset_key: str | None = None,
    href: str | None = None,
) -> pystac.Item:
    """Build the STAC item of one extracted file.

    Geometry and bbox (EPSG:4326), projection (``proj:code`` — or ``proj:wkt2`` for a
    CRS without EPSG code — ``proj:shape``, ``proj:transform``, ``proj:bbox``) and time
    come from the file when it has them, else from the backend's asset metadata; the
    backend's EPSG code is used where it describes the file's CRS (:func:`item_crs`).
    Bands are the file's variables completed with the backend's band metadata
    (``eo:bands`` and ``raster:bands``). ``file:size``/``file:checksum`` describe the
    file. Projection fields are written on the item and on its asset.

    Args:
        asset: What the backend announced for this file (``None`` for local files).
        file_meta: What the file says (:func:`read_file_metadata`).
        item_id: The item's id (see :func:`make_item_id`).
        collection_id: Id of the collection the item belongs to.
        properties: Extra item properties; they override computed ones (a
            ``datetime`` etc. given here as ISO string or datetime is used as is).
        asset_key: Key of the asset in the item (default: the backend's asset name,
            else the file name).
        href: Asset href (default: the file's absolute path; the catalogue builder
            makes it relative).

    Returns:
        The item; it has no links (the catalogue builder adds them).

    Raises:
        StacError: If no time at all is known for the item.
    """
    remote = asset
    props = dict(properties or {})

    def prop_time(key: str) -> dt.datetime | None:
        value = props.pop(key, None)
        if isinstance(value, dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        return to_utc(value) if value is not None else None

    user_times = {k: prop_time(k) for k in ("datetime", "start_datetime", "end_datetime")}
    if any(user_times.values()):
        when, start, end = user_times["datetime"], user_times["start_datetime"], user_times["end_datetime"]
    elif file_meta.datetime or file_meta.start_datetime:
        when, start, end = file_meta.datetime, file_meta.start_datetime, file_meta.end_datetime
    elif remote is not None and (remote.datetime or remote.start_datetime):
        when, start, end = remote.datetime, remote.start_datetime, remote.end_datetime
    else:
        raise StacError(
            f"No time known for item {item_id!r}: {file_meta.path} has no time axis and the "
            "backend gave no datetime; pass properties={'datetime': ...}"
        )
    if when is None and (start is None or end is None):
        when = start or end
        start = end = None

    geometry = file_meta.geometry_4326
    bbox = file_meta.bbox_4326
    if geometry is None and remote is not None:
        geometry = remote.geometry_4326
        bbox = remote.bbox_4326
        if geometry is None and remote.bbox_4326 and len(remote.bbox_4326) == 4:
            w, s, e, n = remote.bbox_4326
            geometry = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
        if geometry is not None and not bbox:
            bbox = _bbox_of_geometry(geometry)

    item = pystac.Item(
        id=item_id,
        geometry=geometry,
        bbox=[float(v) for v in bbox] if geometry is not None and bbox else None,
        datetime=when,
        properties={},
        start_datetime=start,
        end_datetime=end,
        collection=collection_id,
    )

    if file_meta.epsg is not None or file_meta.crs_wkt is not None:
        epsg, wkt2 = item_crs(file_meta.epsg, file_meta.crs_wkt, remote.epsg if remote is not None else None,
                              what=f"{file_meta.path.name} (item {item_id!r})")
        proj = {"epsg": epsg, "wkt2": wkt2, "shape": file_meta.shape,
                "transform": file_meta.transform, "bbox": file_meta.bbox_native}
    elif remote is not None:
        proj = {"epsg": remote.epsg, "shape": remote.shape, "bbox": remote.bbox_native,
                "transform": remote.extra.get("proj:transform")}
    else:
        proj = {}
    if remote is not None and proj.get("epsg") == remote.epsg:
        proj["shape"] = proj.get("shape") or remote.shape
        proj["bbox"] = proj.get("bbox") or remote.bbox_native

    key = asset_key or (remote.name if remote is not None else file_meta.path.name)
    roles = list(remote.roles) if remote is not None and remote.roles else ["data"]
    media_type = _first(remote.media_type if remote is not None else None, file_meta.media_type)
    stac_asset = pystac.Asset(
        href=href or str(file_meta.path.resolve()),
        title=remote.title if remote is not None else None,
        media_type=media_type,
        roles=roles,
    )
    item.add_asset(key, stac_asset)
    _apply_projection(item, proj)
    _apply_projection(stac_asset, proj)
    _set_bands(stac_asset, _merge_bands(file_meta.bands, remote.bands if remote is not None else ()))
    file_ext = FileExtension.ext(stac_asset, add_if_missing=True)
    file_ext.size = file_meta.size
    file_ext.checksum = file_meta.checksum
    item.properties.update(props)
    return item


def _bbox_of_geometry(geometry: Mapping[str, Any]) -> list[float] | None:
    coords: list[Sequence[float]] = []

    def walk(value: Any) -> None:
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
            coords.append(value)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(geometry.get("coordinates"))
    if not coords:
        return None
    return [min(c[0] for c in coords), min(c[1] for c in coords),
            max(c[0] for c in coords), max(c[1] for c in coords)]


# --------------------------------------------------------------------------- refreshing


def _epsg_of(item: pystac.Item) -> int | None:
    """The EPSG code of an item's ``proj:code`` (``"EPSG:3035"``), if it has one."""
    code = item.properties.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:") and code[5:].isdigit():
        return int(code[5:])
    return None


def _local_file(href: str, base: Path) -> Path | None:
    local = local_path(href)
    if local is None:
        return None
    path = Path(local)
    return path if path.is_absolute() else base / path


def refresh_file_metadata(
    item: pystac.Item,
    root: Path | str,
    *,
    known: FileIndex | Iterable[Any] = (),
    algorithm: str = DEFAULT_ALGORITHM,
) -> pystac.Item:
    """Bring ``file:size``/``file:checksum`` and missing metadata of local assets up to date.

    Meant for after a post-job action that rewrote files in place or added local
    assets: every asset whose href is a local path (absolute, ``file://``, or
    relative to the item's own location, else to ``root``) is hashed again; an asset
    lacking projection or band metadata gets it from the file; a missing media
    type is filled in. Remote assets (URLs) are left alone.

    Args:
        item: The item, changed in place.
        root: Folder that relative hrefs refer to when the item has no self href.
        known: Files already hashed, e.g. the
            :class:`~eoextract.jobs._download.DownloadedAsset` records of the job
            (anything with ``path``, ``size``, ``mtime_ns`` and ``checksum``): a file
            whose size and modification time are unchanged is not hashed again. For
            the items of one job, pass a :class:`FileIndex` built once: an iterable is
            indexed anew on every call.
        algorithm: Hash function (multihash name) of files whose asset has no checksum
            yet; an asset's existing checksum keeps its own.

    Returns:
        The same item.

    Raises:
        StacError: If a local asset's file does not exist.
    """
    hashes = FileIndex.of(known)
    self_href = item.get_self_href()
    base = Path(self_href).parent if self_href and not urlsplit(self_href).scheme else Path(root)
    for key, stac_asset in item.assets.items():
        path = _local_file(stac_asset.href, base)
        if path is None:
            continue
        if not path.is_file():
            raise StacError(f"Asset {key!r} of item {item.id!r} points to {path}, which is not a file")
        has_proj = "proj:code" in stac_asset.extra_fields or "proj:wkt2" in stac_asset.extra_fields
        has_bands = "raster:bands" in stac_asset.extra_fields
        stat = path.stat()
        checksum, size = hashes.checksum(path.resolve(), stat.st_size, stat.st_mtime_ns), stat.st_size
        if checksum is None:  # rehash with the hash function the item used so far
            parsed = parse_checksum(stac_asset.extra_fields.get("file:checksum"))
            checksum, size = file_checksum(path, parsed[0] if parsed else algorithm)
        if not (has_proj and has_bands and stac_asset.media_type):
            meta = read_file_metadata(path, checksum=checksum)
            if not has_proj:  # a file without EPSG code takes its item's where that is its CRS
                epsg, wkt2 = item_crs(meta.epsg, meta.crs_wkt, _epsg_of(item) if meta.epsg is None else None,
                                      what=f"{path.name} (asset {key!r} of item {item.id!r})",
                                      announced_by="its item has")
                _apply_projection(stac_asset, {
                    "epsg": epsg, "wkt2": wkt2, "shape": meta.shape,
                    "transform": meta.transform, "bbox": meta.bbox_native,
                })
            if not has_bands:
                _set_bands(stac_asset, meta.bands)
            if not stac_asset.media_type and meta.media_type:
                stac_asset.media_type = meta.media_type
        file_ext = FileExtension.ext(stac_asset, add_if_missing=True)
        file_ext.size = size
        file_ext.checksum = checksum
    return item
