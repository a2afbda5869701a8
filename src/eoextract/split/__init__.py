"""Job splitters, offline: samples by H3 hexagon or Sentinel-2 tile; areas into tile grids
(openeo's ``split_area``, pixel-aligned tiles, a Sentinel-2 production grid)."""

from __future__ import annotations

from eoextract.split._area import TileGrid, split_area
from eoextract.split._s2grid import Sentinel2Grid
from eoextract.split._splitters import (
    centroids_lonlat,
    s2_tile,
    split_job_hex,
    split_job_s2grid,
)

__all__ = [
    "Sentinel2Grid",
    "TileGrid",
    "centroids_lonlat",
    "s2_tile",
    "split_area",
    "split_job_hex",
    "split_job_s2grid",
]
