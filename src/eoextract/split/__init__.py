"""Job splitters: group samples by H3 hexagon or Sentinel-2 tile, offline."""

from __future__ import annotations

from eoextract.split._splitters import (
    centroids_lonlat,
    s2_tile,
    split_job_hex,
    split_job_s2grid,
)

__all__ = ["centroids_lonlat", "s2_tile", "split_job_hex", "split_job_s2grid"]
