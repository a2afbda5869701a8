"""Per-job point files as point extractions give them (GeoParquet written by geopandas)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

pytest.importorskip("duckdb")


def point_frame(job: int, *, samples: int = 4, dates: int = 3, ref_id: str | None = None,
                crs: int = 4326, seed: int = 0) -> gpd.GeoDataFrame:
    """One job's point time series: ``samples`` samples x ``dates`` dates."""
    rng = np.random.default_rng(seed + job)
    sid = np.repeat([f"j{job}-s{i}" for i in range(samples)], dates)
    times = np.tile(pd.date_range("2021-03-01", periods=dates, freq="10D", tz="UTC"), samples)
    n = samples * dates
    return gpd.GeoDataFrame(
        {"sample_id": sid, "ref_id": ref_id or f"ref{job % 2}", "timestamp": times,
         "B02": rng.uniform(100, 3000, n).astype("float32"),
         "B03": rng.uniform(100, 3000, n),
         "label": np.where(np.arange(n) % 5 == 0, None, "wheat")},
        geometry=shapely.points(np.repeat(rng.uniform(4, 5, samples), dates),
                                np.repeat(rng.uniform(50, 51, samples), dates)),
        crs=crs)


@pytest.fixture
def job_files(tmp_path: Path) -> list[Path]:
    """Four jobs' GeoParquet files in an output folder, one folder per job."""
    paths = []
    for job in range(4):
        path = tmp_path / "outputs" / f"job{job}" / f"points_{job}.parquet"
        path.parent.mkdir(parents=True)
        point_frame(job).to_parquet(path)
        paths.append(path)
    return paths
