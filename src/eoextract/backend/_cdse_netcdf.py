"""NetCDF results as CDSE writes them: a bound-CRS WKT for EPSG:3035 outputs.

CDSE's NetCDFs in EPSG:3035 (LAEA Europe) carry, in the ``crs`` grid-mapping variable, a
``BOUNDCRS[SOURCECRS[... ID["EPSG",3035]], TARGETCRS[WGS 84], ABRIDGEDTRANSFORMATION[...]]``
WKT rather than the plain projected CRS: ``pyproj.CRS.to_epsg()`` is None for it and
``crs.source_crs.to_epsg()`` is 3035, which readers must cope with. The results document
still announces ``proj:epsg: 3035``. :func:`apply_cdse_crs` rewrites a finished job's NetCDF
assets that way (attributes only, in place) and refreshes their size and checksum.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from eoextract._util.checksum import file_checksum

BOUND_CRS_EPSG = frozenset({3035})
"""EPSG codes whose NetCDFs get a bound-CRS WKT in the CDSE style."""


@functools.lru_cache(maxsize=8)
def bound_crs_wkt(epsg: int) -> str:
    """WKT2 of ``EPSG:<epsg>`` bound to WGS 84 by a null (ETRS89 ≈ WGS 84) transformation."""
    import pyproj
    from pyproj.crs import BoundCRS
    from pyproj.crs.coordinate_operation import ToWGS84Transformation

    source = pyproj.CRS.from_epsg(epsg)
    bound = BoundCRS(
        source_crs=source,
        target_crs=pyproj.CRS.from_epsg(4326),
        transformation=ToWGS84Transformation(source.geodetic_crs, 0, 0, 0, 0, 0, 0, 0),
    )
    return bound.to_wkt()


def apply_cdse_crs(assets: list[dict[str, Any]], results_dir: Path) -> list[dict[str, Any]]:
    """Give the EPSG:3035 NetCDF assets of a job a bound-CRS WKT (see the module docstring).

    Args:
        assets: The job's asset dicts (``path`` relative to ``results_dir``, ``epsg``).
        results_dir: The job's results folder.

    Returns:
        The asset dicts, with ``file_size``/``file_checksum`` of rewritten files updated.
    """
    out = []
    for asset in assets:
        path = Path(results_dir) / asset["path"]
        if asset.get("epsg") in BOUND_CRS_EPSG and path.suffix == ".nc" and path.exists():
            import netCDF4

            from eoextract.backend._file_writers import _NETCDF_LOCK

            wkt = bound_crs_wkt(int(asset["epsg"]))
            with _NETCDF_LOCK, netCDF4.Dataset(path, "a") as ds:
                if "crs" in ds.variables:
                    ds.variables["crs"].setncattr("crs_wkt", wkt)
                    ds.variables["crs"].setncattr("spatial_ref", wkt)
            asset = dict(asset)
            asset["file_checksum"], asset["file_size"] = file_checksum(path, "sha2-256")
        out.append(asset)
    return out
