"""Cheap extraction jobs for tests: instant jobs of the embedded backend (one tiny NetCDF each)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd

from eoextract.extract import ExtractionManager


def create_instant_job(row: pd.Series, connection, provider=None, connection_provider=None):
    cube = connection.load_collection(
        "SENTINEL2_L2A",
        spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
        temporal_extent=["2021-06-01", "2021-06-10"],
        bands=["B04"],
    )
    return cube.create_job(title=row["title"], out_format="NetCDF",
                           job_options={"eoextract_mode": "instant"})


def instant_jobs(n: int, **columns) -> pd.DataFrame:
    """``n`` jobs with titles unique to the test."""
    prefix = f"t{uuid.uuid4().hex[:8]}"
    df = pd.DataFrame({"title": [f"{prefix}-{i}" for i in range(n)], "tile": [f"31UF{i}" for i in range(n)]})
    for name, value in columns.items():
        df[name] = value
    return df


def per_job_path(root_dir: Path, idx: int, row: pd.Series, asset_id: str) -> Path:
    """A WorldCereal-style generator: one folder per job."""
    return root_dir / row["tile"] / f"{row['title']}_{asset_id}"


def instant_manager(output_dir: Path, backend, generator=per_job_path, **kwargs) -> ExtractionManager:
    manager = ExtractionManager(output_dir, generator, "TEST-INSTANT", "instant jobs",
                                poll_sleep=0.05, retry_backoff=0.05, **kwargs)
    manager.add_backend("local", backend.connect, parallel_jobs=2)
    return manager
