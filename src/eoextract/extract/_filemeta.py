"""Metadata of local files, read from the files themselves.

:func:`read_file_metadata` opens a NetCDF file (CF conventions as openEO backends
write them: dims ``t, y, x``, one variable per band, a ``crs`` grid-mapping variable
with ``crs_wkt``/``spatial_ref``) with xarray or a GeoTIFF with rasterio, and returns
a :class:`FileMetadata`: CRS, grid, footprint in EPSG:4326 (pyproj), time range,
bands, size and checksum. Other files get size, checksum and a media type.

A bound CRS (``BOUNDCRS[...]``, a CRS with a ``towgs84`` transformation attached, as CDSE's
NetCDFs in EPSG:3035 carry) is reduced to its source CRS; :func:`item_crs` then decides
between the file's CRS and the EPSG code the backend announced: the backend's code where
both describe the same projection, else the file's CRS (logged).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import mimetypes
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pystac import MediaType
from pystac.extensions.raster import DataType

from eoextract._util.checksum import file_checksum
from eoextract._util.utc import to_utc
from eoextract.errors import StacError
from eoextract.jobs._download import AssetDescription

logger = logging.getLogger(__name__)

#: Media type written for NetCDF files (the one openEO backends use).
NETCDF_MEDIA_TYPE = "application/x-netcdf"
#: Media type written for GeoTIFF files.
GEOTIFF_MEDIA_TYPE = str(MediaType.GEOTIFF)

_X_NAMES = ("x", "lon", "longitude", "X")
_Y_NAMES = ("y", "lat", "latitude", "Y")
_TIME_NAMES = ("t", "time", "T", "date")
_EDGE_POINTS = 8
_STRAIGHT_TOLERANCE = 1e-7  # degrees, about 1 cm
_COORD_DIGITS = 7
_DATA_TYPES = {d.value for d in DataType}


@dataclass(frozen=True)
class FileMetadata(AssetDescription):
    """What a local file says about itself.

    Its place, time and bands (:class:`~eoextract.jobs._download.AssetDescription`:
    ``epsg``, ``shape``, ``bbox_native``, ``bbox_4326``, ``geometry_4326``, ``datetime``,
    ``start_datetime``, ``end_datetime``, ``bands``) are keyword-only; a time series has
    ``start_datetime``/``end_datetime``, a single-time file ``datetime``.
    """

    #: The file.
    path: Path
    #: Size in bytes.
    size: int
    #: Hex multihash of the content (``file:checksum``; see :mod:`eoextract._util.checksum`).
    checksum: str
    #: Media type guessed from the content (``None`` if unknown).
    media_type: str | None = None
    #: WKT2 of the CRS when it has no EPSG code (of the source CRS, for a bound CRS).
    crs_wkt: str | None = None
    #: Affine transform ``(a, b, c, d, e, f)`` from pixel to CRS coordinates.
    transform: tuple[float, ...] | None = None
    #: Number of time steps (``None`` without a time axis).
    time_steps: int | None = None


class FileIndex:
    """Files already hashed, by resolved path: size, modification time and checksum.

    Built once per job from its download records (anything with ``path``, ``size``,
    ``mtime_ns`` and ``checksum``, such as
    :class:`~eoextract.jobs._download.DownloadedAsset`), it answers for one file in
    constant time, so refreshing the file metadata of a job's items costs one lookup per
    file instead of a pass over all of the job's files per item.
    """

    def __init__(self, known: Iterable[Any] = ()) -> None:
        self._entries: dict[Path, tuple[int, int, str]] = {
            Path(k.path).resolve(): (int(k.size), int(k.mtime_ns), str(k.checksum))
            for k in known
            if getattr(k, "mtime_ns", None) is not None
        }

    def __len__(self) -> int:
        return len(self._entries)

    def checksum(self, path: Path, size: int, mtime_ns: int) -> str | None:
        """The recorded checksum of ``path`` (resolved) if its size and modification time
        are still those recorded, else None (the file must be hashed again)."""
        entry = self._entries.get(path)
        if entry is not None and entry[:2] == (size, mtime_ns):
            return entry[2]
        return None

    @classmethod
    def of(cls, known: FileIndex | Iterable[Any]) -> FileIndex:
        """``known`` itself when it is an index, else an index built from it."""
        return known if isinstance(known, FileIndex) else cls(known)


# --------------------------------------------------------------------------- reading


def _sniff(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:3] == b"CDF" or head == b"\x89HDF\r\n\x1a\n":
        return "netcdf"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    suffix = path.suffix.lower()
    if suffix in (".nc", ".nc4", ".cdf"):
        return "netcdf"
    if suffix in (".tif", ".tiff"):
        return "tiff"
    return "other"


def _data_type(dtype: Any) -> str | None:
    name = np.dtype(dtype).name
    if name in _DATA_TYPES:
        return name
    return {"complex64": "cfloat32", "complex128": "cfloat64", "bool": "uint8"}.get(name, "other")


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return None
        value = value.reshape(-1)[0]
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    return None


def _crs_from_attrs(attrs: Mapping[str, Any]) -> Any:
    from pyproj import CRS

    for key in ("crs_wkt", "spatial_ref", "proj4", "proj4_params"):
        text = attrs.get(key)
        if isinstance(text, str) and text.strip():
            try:
                return CRS.from_user_input(text)
            except Exception:  # noqa: BLE001 - try the next attribute
                continue
    code = attrs.get("epsg_code") or attrs.get("EPSG")
    if code:
        try:
            return CRS.from_user_input(code if not str(code).isdigit() else int(code))
        except Exception:  # noqa: BLE001
            return None
    return None


def _without_bound(crs: Any) -> Any:
    """The source CRS of a bound CRS (the ``towgs84`` transformation is not part of the
    data's coordinates), else ``crs`` itself."""
    if crs is not None and crs.is_bound and crs.source_crs is not None:
        return crs.source_crs
    return crs


@functools.lru_cache(maxsize=64)
def _same_projection(wkt: str, epsg: int) -> bool:
    """Whether a CRS (WKT) and an EPSG code give the same coordinates: equal CRSs, or the
    same projection, parameters, ellipsoid and units (an unnamed datum on the EPSG
    code's ellipsoid, as a PROJ string with ``towgs84=0,...`` gives, counts as the same)."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        file_crs, announced = _without_bound(CRS.from_wkt(wkt)), CRS.from_epsg(epsg)
    except CRSError:
        return False
    if file_crs.equals(announced, ignore_axis_order=True):
        return True
    with warnings.catch_warnings():  # "you will likely lose important projection information"
        warnings.simplefilter("ignore")
        try:
            return set(file_crs.to_proj4().split()) == set(announced.to_proj4().split())
        except CRSError:
            return False


def item_crs(file_epsg: int | None, file_wkt: str | None, announced_epsg: int | None, *,
             what: str = "file", announced_by: str = "the backend announced") -> tuple[int | None, str | None]:
    """The CRS to describe a file with: ``(EPSG code, None)`` or ``(None, WKT2)``.

    The file's CRS wins; the EPSG code the backend announced (``proj:epsg``/``proj:code``)
    is used where the file's CRS has no EPSG code but describes the same projection (a
    bound CRS reduced to its source, or a CRS without authority). When the two disagree
    the file's CRS is kept and a warning logged.

    Args:
        file_epsg: EPSG code of the file's CRS (:attr:`FileMetadata.epsg`).
        file_wkt: WKT2 of the file's CRS when it has no EPSG code (:attr:`FileMetadata.crs_wkt`).
        announced_epsg: What the backend announced, if anything.
        what: The file, for the log.
        announced_by: Who gave ``announced_epsg``, for the log.
    """
    if announced_epsg is None or (file_epsg is None and file_wkt is None):
        return (file_epsg, None) if file_epsg is not None else (None, file_wkt)
    if file_epsg is not None:
        if file_epsg != announced_epsg:
            logger.warning("%s is in EPSG:%d, %s EPSG:%d; describing it as the file says",
                           what, file_epsg, announced_by, announced_epsg)
        return file_epsg, None
    assert file_wkt is not None
    if _same_projection(file_wkt, int(announced_epsg)):
        return int(announced_epsg), None
    logger.warning("%s has a CRS without EPSG code that is not the EPSG:%d %s; "
                   "describing it with the file's WKT2", what, announced_epsg, announced_by)
    return None, file_wkt


def _footprint(crs: Any, bbox: tuple[float, float, float, float]) -> tuple[dict[str, Any], tuple]:
    """Polygon and bbox in EPSG:4326 of a native bbox.

    Edges are densified only where the projection bends them by more than about
    a centimetre, so small chips keep a five-point polygon.
    """
    from pyproj import Transformer

    transformer = Transformer.from_crs(crs, 4326, always_xy=True)
    minx, miny, maxx, maxy = bbox
    corners = [(minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy)]
    ring: list[list[float]] = []
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        steps = [i / _EDGE_POINTS for i in range(_EDGE_POINTS + 1)]
        lons, lats = transformer.transform([x0 + (x1 - x0) * t for t in steps], [y0 + (y1 - y0) * t for t in steps])
        bent = any(
            abs(lons[i] - (lons[0] + (lons[-1] - lons[0]) * t)) > _STRAIGHT_TOLERANCE
            or abs(lats[i] - (lats[0] + (lats[-1] - lats[0]) * t)) > _STRAIGHT_TOLERANCE
            for i, t in enumerate(steps)
        )
        keep = range(_EDGE_POINTS) if bent else (0,)
        ring.extend([round(float(lons[i]), _COORD_DIGITS), round(float(lats[i]), _COORD_DIGITS)] for i in keep)
    if not all(math.isfinite(c) for point in ring for c in point):
        raise StacError(f"The footprint {bbox} cannot be expressed in EPSG:4326")
    ring.append(list(ring[0]))
    lon_values = [p[0] for p in ring]
    lat_values = [p[1] for p in ring]
    bbox_4326 = (min(lon_values), min(lat_values), max(lon_values), max(lat_values))
    return {"type": "Polygon", "coordinates": [ring]}, bbox_4326


def _grid_from_coords(x: np.ndarray, y: np.ndarray, attrs: Mapping[str, Any]) -> tuple[float, ...] | None:
    """Affine transform of a regular grid given pixel-centre coordinates."""
    if len(x) >= 2 and len(y) >= 2:
        res_x = float(x[-1] - x[0]) / (len(x) - 1)
        res_y = float(y[-1] - y[0]) / (len(y) - 1)
        return (res_x, 0.0, float(x[0]) - res_x / 2, 0.0, res_y, float(y[0]) - res_y / 2)
    geo = attrs.get("GeoTransform")
    if isinstance(geo, str):
        try:
            c, a, b, f, d, e = (float(v) for v in geo.split())
            return (a, b, c, d, e, f)
        except ValueError:
            return None
    return None


def _bbox_of(transform: Sequence[float], shape: tuple[int, int]) -> tuple[float, float, float, float]:
    a, b, c, d, e, f = transform[:6]
    rows, cols = shape
    xs = [c + a * col + b * row for col, row in ((0, 0), (cols, 0), (0, rows), (cols, rows))]
    ys = [f + d * col + e * row for col, row in ((0, 0), (cols, 0), (0, rows), (cols, rows))]
    return (min(xs), min(ys), max(xs), max(ys))


def _read_netcdf(path: Path) -> dict[str, Any]:
    import xarray as xr

    out: dict[str, Any] = {}
    with xr.open_dataset(path, mask_and_scale=False, decode_times=True, cache=False) as ds:
        dims = set(ds.dims)
        xdim = next((n for n in _X_NAMES if n in dims), None)
        ydim = next((n for n in _Y_NAMES if n in dims), None)
        tdim = next((n for n in _TIME_NAMES if n in dims), None)
        if tdim is None:
            tdim = next((n for n in dims if n in ds.coords and np.issubdtype(ds[n].dtype, np.datetime64)), None)
        grid_names = {v.attrs.get("grid_mapping") for v in ds.data_vars.values()} - {None}
        crs, grid_attrs = None, {}
        for name in [*sorted(grid_names), "crs", "spatial_ref"]:
            candidate = _crs_from_attrs(ds[name].attrs) if name in ds.variables else None
            if candidate is not None:
                crs, grid_attrs = candidate, ds[name].attrs
                break
        if crs is None and xdim in ("lon", "longitude") and ydim in ("lat", "latitude"):
            from pyproj import CRS

            crs = CRS.from_epsg(4326)
        if xdim and ydim:
            x, y = ds[xdim].values, ds[ydim].values
            out["shape"] = (len(y), len(x))
            out["transform"] = _grid_from_coords(x, y, grid_attrs)
        out["crs"] = crs
        if tdim is not None and tdim in ds.coords:
            times = [t for t in (to_utc(v) for v in np.atleast_1d(ds[tdim].values)) if t is not None]
            out["times"] = times
        bands = []
        for name, var in ds.data_vars.items():
            if name in grid_names or name in ("crs", "spatial_ref"):
                continue
            if xdim is None or ydim is None or xdim not in var.dims or ydim not in var.dims:
                continue
            attrs = var.attrs
            band: dict[str, Any] = {"name": str(name), "data_type": _data_type(var.dtype)}
            nodata = _number(attrs.get("_FillValue", attrs.get("missing_value", attrs.get("nodata"))))
            if nodata is None:
                nodata = _number(var.encoding.get("_FillValue"))
            if nodata is not None:
                band["nodata"] = nodata
            for key, attr in (("scale", "scale_factor"), ("offset", "add_offset")):
                value = _number(attrs.get(attr))
                if value is not None:
                    band[key] = value
            if isinstance(attrs.get("units"), str):
                band["unit"] = attrs["units"]
            if isinstance(attrs.get("long_name"), str):
                band["description"] = attrs["long_name"]
            bands.append(band)
        out["bands"] = bands
    if out.get("crs") is None:
        out.update({k: v for k, v in _read_tiff(path, bands=False).items() if k in ("crs",)})
    return out


_TIFF_TIME_RE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def _read_tiff(path: Path, *, bands: bool = True) -> dict[str, Any]:
    import rasterio
    from pyproj import CRS

    out: dict[str, Any] = {}
    try:
        with rasterio.open(path) as src:
            if src.crs is not None:
                out["crs"] = CRS.from_wkt(src.crs.to_wkt())
            if not bands:
                return out
            out["shape"] = (src.height, src.width)
            out["transform"] = tuple(src.transform)[:6]
            result = []
            for i in range(src.count):
                band: dict[str, Any] = {
                    "name": src.descriptions[i] or f"band_{i + 1}",
                    "data_type": _data_type(src.dtypes[i]),
                }
                if src.nodatavals[i] is not None:
                    band["nodata"] = _number(src.nodatavals[i])
                if src.scales[i] not in (None, 1.0):
                    band["scale"] = float(src.scales[i])
                if src.offsets[i] not in (None, 0.0):
                    band["offset"] = float(src.offsets[i])
                if src.units and src.units[i]:
                    band["unit"] = src.units[i]
                result.append(band)
            out["bands"] = result
            match = _TIFF_TIME_RE.fullmatch(str(src.tags().get("TIFFTAG_DATETIME", "")).strip())
            if match:
                out["times"] = [dt.datetime(*map(int, match.groups()), tzinfo=dt.timezone.utc)]
    except rasterio.errors.RasterioIOError as exc:
        if bands:
            raise StacError(f"Cannot read {path} as a raster: {exc}") from exc
    return out


def read_file_metadata(path: Path | str, *, checksum: str | None = None) -> FileMetadata:
    """Read the metadata of a local file: grid, CRS, footprint, time, bands, checksum.

    NetCDF files (CF conventions, e.g. openEO's: dims ``t, y, x``, one variable per
    band, a ``crs`` grid-mapping variable with ``crs_wkt``/``spatial_ref``) are read
    with xarray; GeoTIFFs with rasterio; other files get size, checksum and a media
    type guessed from their name.

    Args:
        path: The file.
        checksum: Its multihash when the caller has just computed it (e.g. while
            downloading); otherwise the file is hashed with SHA-256.

    Returns:
        The file's metadata.

    Raises:
        StacError: If the file cannot be read in the format its content announces.
    """
    path = Path(path)
    if checksum is None:
        checksum, size = file_checksum(path)
    else:
        size = path.stat().st_size
    kind = _sniff(path)
    try:
        if kind == "netcdf":
            info, media_type = _read_netcdf(path), NETCDF_MEDIA_TYPE
        elif kind == "tiff":
            info, media_type = _read_tiff(path), GEOTIFF_MEDIA_TYPE
        else:
            info, media_type = {}, mimetypes.guess_type(path.name)[0]
    except StacError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file
        raise StacError(f"Cannot read metadata of {path}: {type(exc).__name__}: {exc}") from exc

    crs = _without_bound(info.get("crs"))
    shape = info.get("shape")
    transform = info.get("transform")
    epsg = crs.to_epsg() if crs is not None else None
    bbox_native = _bbox_of(transform, shape) if transform and shape else None
    geometry = bbox_4326 = None
    if crs is not None and bbox_native is not None:
        geometry, bbox_4326 = _footprint(crs, bbox_native)
    times = sorted(info.get("times") or [])
    single = len(times) == 1
    return FileMetadata(
        path=path,
        size=size,
        checksum=checksum,
        media_type=media_type,
        epsg=epsg,
        crs_wkt=crs.to_wkt() if crs is not None and epsg is None else None,
        shape=tuple(int(v) for v in shape) if shape else None,
        transform=tuple(float(v) for v in transform) if transform else None,
        bbox_native=bbox_native,
        bbox_4326=bbox_4326,
        geometry_4326=geometry,
        datetime=times[0] if single else None,
        start_datetime=times[0] if len(times) > 1 else None,
        end_datetime=times[-1] if len(times) > 1 else None,
        bands=tuple(info.get("bands") or ()),
        time_steps=len(times) if "times" in info else None,
    )
