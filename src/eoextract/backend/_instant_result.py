"""The instant result: a tiny valid NetCDF that instant jobs deliver without computing anything."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import numpy as np
import xarray as xr

from eoextract.backend._file_writers import band_entry, cf_crs_attrs, grid_metadata
from eoextract.backend._output_formats import MEDIA_TYPES, ResultAsset

#: Grid of the instant result: UTM 31N, upper-left corner of its 2x2 pixels of 10 m.
_INSTANT_EPSG = 32631
_INSTANT_ORIGIN = (600000.0, 5700000.0)


def write_instant_result(out_dir: Path) -> list[ResultAsset]:
    """Write a tiny valid NetCDF (1 band, 2x2 px, 1 date, ``crs`` variable) computing nothing.

    Uses the raw netCDF4 API so it stays in the millisecond range.
    """
    import netCDF4

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "openEO.nc"
    x0, y0 = _INSTANT_ORIGIN
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.Conventions = "CF-1.9"
        for dim, size in (("t", 1), ("y", 2), ("x", 2)):
            nc.createDimension(dim, size)
        t = nc.createVariable("t", "i4", ("t",))
        t.units, t.calendar, t.standard_name = "days since 1990-01-01", "standard", "time"
        t[:] = [12053]  # 2023-01-01
        x = nc.createVariable("x", "f8", ("x",))
        x.standard_name, x.units = "projection_x_coordinate", "m"
        x[:] = [x0 + 5, x0 + 15]
        y = nc.createVariable("y", "f8", ("y",))
        y.standard_name, y.units = "projection_y_coordinate", "m"
        y[:] = [y0 - 5, y0 - 15]
        crs = nc.createVariable("crs", "i4")
        for k, v in cf_crs_attrs(_INSTANT_EPSG).items():
            crs.setncattr(k, v)
        b = nc.createVariable("B04", "u2", ("t", "y", "x"), fill_value=0)
        b.grid_mapping = "crs"
        b[:] = np.array([[[100, 200], [300, 400]]], dtype=np.uint16)
    geo = copy.deepcopy(_instant_geo())
    day = datetime(2023, 1, 1, tzinfo=timezone.utc)
    stats = {"minimum": 100.0, "maximum": 400.0, "mean": 250.0, "stddev": 111.80339887498948,
             "valid_percent": 100.0}
    return [ResultAsset(name=path.name, path=path, media_type=MEDIA_TYPES["netcdf"],
                        start_datetime=day, end_datetime=day,
                        bands=[band_entry("B04", "uint16", 0, stats)], **geo)]


@cache
def _instant_geo() -> dict:
    x0, y0 = _INSTANT_ORIGIN
    cube = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"),
                        coords={"x": [x0 + 5, x0 + 15], "y": [y0 - 5, y0 - 15]})
    return grid_metadata(cube, epsg=_INSTANT_EPSG)

