"""Patch files as patch to point reads them: NetCDF (variables on ``(t,) y, x``) and
GeoTIFF (one variable per band, named by the band's description; one date, the item's),
behind one header and one windowed read."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from eoextract.dataset._loader import _Header, _netcdf_lock, _read_header
from eoextract.errors import DatasetError

#: File name endings read as GeoTIFF.
GEOTIFF_SUFFIXES = (".tif", ".tiff")

#: Reads the pixels of rows ``r0:r1``, columns ``c0:c1``: variable -> ``(t, y, x)`` or ``(y, x)``.
WindowReader = Callable[[int, int, int, int], dict[str, np.ndarray]]


def is_geotiff(path: str) -> bool:
    """Whether ``path`` names a GeoTIFF (by its ending)."""
    return path.lower().endswith(GEOTIFF_SUFFIXES)


def _band_names(descriptions: tuple[str | None, ...]) -> list[str]:
    names: list[str] = []
    for i, text in enumerate(descriptions):
        name = text or f"band_{i + 1}"
        names.append(name if name not in names else f"{name}_{i + 1}")
    return names


def read_header(path: str, *, item_id: str, kind: str, time: Any = None) -> _Header:
    """The header of a NetCDF or GeoTIFF patch; a GeoTIFF's date is ``time`` (the item's)."""
    if not is_geotiff(path):
        return _read_header(path, item_id=item_id, kind=kind)
    import rasterio

    try:
        with rasterio.open(path) as src:
            t = src.transform
            if t.b != 0 or t.d != 0:
                raise DatasetError(f"{path} ({kind} of item {item_id!r}) has a rotated grid; "
                                   "only north-up patches are sampled", item_id=item_id, path=path)
            epsg = src.crs.to_epsg() if src.crs else None
            times = np.array([np.datetime64(_naive(time), "ns")]) if time else np.array([])
            return _Header(
                path=path, variables=_band_names(src.descriptions), times=times,
                y=t.f + t.e * (np.arange(src.height) + 0.5),
                x=t.c + t.a * (np.arange(src.width) + 0.5),
                dtype=np.result_type(*src.dtypes), nodata=src.nodata, epsg=epsg,
                attrs=dict(src.tags()))
    except rasterio.errors.RasterioError as exc:
        raise DatasetError(f"cannot read {path} ({kind} of item {item_id!r}): {exc}",
                           item_id=item_id, path=path) from exc


def _naive(time: Any) -> Any:
    """An ISO time without its zone (UTC assumed), as numpy wants it."""
    if isinstance(time, str):
        return time.replace("Z", "").split("+")[0]
    return time


@contextlib.contextmanager
def window_reader(head: _Header) -> Iterator[WindowReader]:
    """A reader of pixel windows of the patch ``head`` describes, open for the block."""
    if is_geotiff(head.path):
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(head.path) as src:
            def read_tiff(r0: int, r1: int, c0: int, c1: int) -> dict[str, np.ndarray]:
                block = src.read(window=Window(c0, r0, c1 - c0, r1 - r0))
                return dict(zip(head.variables, block))

            yield read_tiff
        return
    import netCDF4

    with _netcdf_lock(), netCDF4.Dataset(head.path) as nc:
        nc.set_auto_maskandscale(False)

        def read_netcdf(r0: int, r1: int, c0: int, c1: int) -> dict[str, np.ndarray]:
            return {v: np.asarray(nc.variables[v][..., r0:r1, c0:c1]) for v in head.variables}

        yield read_netcdf


def aux_raster(path: str | None, name: str) -> np.ndarray | None:
    """The ``y, x`` raster ``name`` of an auxiliary file (a NetCDF variable, or the GeoTIFF
    band of that description), ``None`` when it has none."""
    if path is None:
        return None
    if is_geotiff(path):
        import rasterio

        with rasterio.open(path) as src:
            names = _band_names(src.descriptions)
            return src.read(names.index(name) + 1) if name in names else None
    import netCDF4

    with _netcdf_lock(), netCDF4.Dataset(path) as nc:
        if name in nc.variables and nc.variables[name].dimensions[-2:] == ("y", "x"):
            nc.set_auto_maskandscale(False)
            return np.asarray(nc.variables[name][...])
    return None


def aux_attributes(path: str | None) -> dict[str, Any]:
    """The global attributes (NetCDF) or tags (GeoTIFF) of an auxiliary file."""
    if path is None:
        return {}
    if is_geotiff(path):
        import rasterio

        with rasterio.open(path) as src:
            return dict(src.tags())
    import netCDF4

    with _netcdf_lock(), netCDF4.Dataset(path) as nc:
        return {k: nc.getncattr(k) for k in nc.ncattrs()}
