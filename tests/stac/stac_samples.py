"""Synthetic, realistic STAC items for the catalogue tests (imported by them)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pystac
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

BANDS = ["B02", "B03", "B04", "B08"]


def make_item(
    i: int,
    data_dir: Path | None = None,
    *,
    epsg: int = 32631,
    when: dt.datetime | None = None,
    write_files: bool = False,
) -> pystac.Item:
    """An S2-like extraction item with a data and an auxiliary asset."""
    lon, lat = 3.0 + (i % 50) * 0.1, 50.0 + (i // 50 % 40) * 0.1
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[lon, lat], [lon + 0.01, lat], [lon + 0.01, lat + 0.01], [lon, lat + 0.01], [lon, lat]]
        ],
    }
    when = when or dt.datetime(2021, 1 + i % 12, 1 + i % 28, tzinfo=dt.UTC)
    item = pystac.Item(f"S2-L2A_{i:06d}", geometry, [lon, lat, lon + 0.01, lat + 0.01], when, {})
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{epsg}"
    proj.shape = [64, 64]
    proj.transform = [10.0, 0.0, 500000.0, 0.0, -10.0, 5600000.0]
    base = data_dir or Path("/nonexistent/data")
    data_href = base / f"{i:06d}" / "S2.nc"
    aux_href = base / f"{i:06d}" / "aux.nc"
    if write_files:
        data_href.parent.mkdir(parents=True, exist_ok=True)
        data_href.write_bytes(b"data")
        aux_href.write_bytes(b"aux")
    data = pystac.Asset(
        str(data_href), title="Sentinel-2 L2A", media_type="application/x-netcdf", roles=["data"]
    )
    item.add_asset("S2-L2A", data)
    eo = EOExtension.ext(data, add_if_missing=True)
    eo.bands = [Band.create(name=b) for b in BANDS]
    raster = RasterExtension.ext(data, add_if_missing=True)
    raster.bands = [RasterBand.create(data_type=DataType.UINT16, nodata=0) for _ in BANDS]
    file_ext = FileExtension.ext(data, add_if_missing=True)
    file_ext.size = 4
    file_ext.checksum = "1220" + "ab" * 32
    aux = pystac.Asset(
        str(aux_href), title="Crop type", media_type="application/x-netcdf", roles=["auxiliary"]
    )
    item.add_asset("auxiliary", aux)
    FileExtension.ext(aux).size = 3
    return item
