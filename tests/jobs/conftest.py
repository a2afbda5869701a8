"""Helpers for job-manager tests: instant jobs on the embedded backend."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest


def make_start_job(job_options_by_row=None, *, instant=True):
    """A start_job creating a cheap job per row; job options may depend on the row."""

    def start_job(row, connection, **kwargs):
        options = {"eoextract_mode": "instant"} if instant else {}
        if job_options_by_row is not None:
            options.update(job_options_by_row(row) or {})
        cube = connection.load_collection(
            "SENTINEL2_L2A",
            spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
            temporal_extent=["2021-06-01", "2021-06-10"],
            bands=["B04"],
        )
        return cube.create_job(title=row["title"], job_options=options, out_format="NetCDF")

    return start_job


@pytest.fixture()
def job_df():
    """Jobs with titles unique to each test (fault counters are per title on the backend)."""

    def make(n, prefix=None):
        prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
        return pd.DataFrame({"title": [f"{prefix}-{i}" for i in range(n)], "value": range(n)})

    return make


@pytest.fixture()
def start_jobs():
    """Factory of start_job callables (see make_start_job)."""
    return make_start_job


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Managers default to root_dir='.': keep their job folders out of the source tree."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture()
def session():
    """An HTTP session that ignores proxies from the environment (tests talk to loopback)."""
    import requests

    with requests.Session() as s:
        s.trust_env = False
        yield s
