"""The main example (seed 004's pipeline as written, offline) runs end to end at a small size:
the squares uploaded with ``openeo.extra.artifacts``, the SCL dilation mask and the
distance-to-cloud UDF merged into every file, on the OIDC-authenticated embedded backend."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from eoextract.backend._scl_mask import to_scl_dilation_mask
from eoextract.stac import validate_catalog

EXAMPLES = Path(__file__).parents[1] / "examples"
EXAMPLE = EXAMPLES / "extract_s2_croptype.py"
NOTEBOOK_MASK = {"scl_band_name": "S2-L2A-SCL", "kernel1_size": 17, "kernel2_size": 77,
                 "mask1_values": [2, 4, 5, 6, 7], "mask2_values": [3, 8, 9, 10, 11],
                 "erosion_kernel_size": 3}
OVERLAP = 16  # the example's apply_neighborhood overlap, in pixels


def _udf():
    spec = importlib.util.spec_from_file_location("udf_distance_to_cloud",
                                                  EXAMPLES / "udf_distance_to_cloud.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scl(ds: xr.Dataset) -> xr.DataArray:
    # the NetCDF writer stores integer no-data (SCL 0, mask 0) as NaN
    scl = ds["S2-L2A-SCL"].fillna(0).astype("uint16")
    return scl.expand_dims(bands=["S2-L2A-SCL"]).transpose("t", "bands", "y", "x")


@pytest.mark.slow
def test_extract_s2_croptype_example(tmp_path):
    out = tmp_path / "extraction"
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if "proxy" not in k.lower() and k != "OPENEO_CONFIG_HOME"}
    env["HOME"] = str(home)
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--samples", "6", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("6 samples, 5 to extract")
    summary = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
               for line in lines[1:] if ":" in line}
    assert set(summary) >= {"jobs", "items", "files", "catalogue", "elapsed"}
    assert summary["jobs"].startswith("finished") and summary["items"] == "5"
    assert summary["catalogue"].endswith("(valid)")
    report = validate_catalog(out / "stac" / "collection.json", check_assets=True)
    assert report.ok and report.n_items == 5
    assert (out / "job_tracker.csv").is_file()
    # the catalogue exports to stac-geoparquet (integer and float bands' nodata together)
    from eoextract.stac.publish import export_geoparquet

    assert export_geoparquet(out, tmp_path / "items.parquet").n_items == 5

    # the openeo client's OIDC state stays in the output folder, never in the home folder
    assert (out / ".openeo-config").is_dir()
    assert not [p for p in home.rglob("*") if "openeo" in p.name.lower()]

    # every patch has the notebook's bands: the 13 L2A bands, the SCL dilation mask computed
    # with the notebook's parameters, and the UDF's distance to cloud (run on the square
    # widened by the overlap, which the backend fills with no-data)
    udf = _udf()
    patches = sorted(out.rglob("S2_10m_*.nc"))
    assert len(patches) == 5
    mask_means, cloud_near = [], []
    for path in patches:
        with xr.open_dataset(path) as ds:
            ds = ds.load()
        assert {"S2-L2A-B04", "S2-L2A-SCL", "S2-L2A-SCL_DILATED_MASK",
                "S2-L2A-DISTANCE-TO-CLOUD"} <= set(ds)
        assert ds.sizes["x"] == ds.sizes["y"] == 64
        scl = _scl(ds)
        mask = np.nan_to_num(ds["S2-L2A-SCL_DILATED_MASK"].values, nan=0)
        np.testing.assert_array_equal(mask, to_scl_dilation_mask(scl, **NOTEBOOK_MASK).values[:, 0])
        mask_means.append(mask.mean())
        padded = scl.pad(x=(OVERLAP, OVERLAP), y=(OVERLAP, OVERLAP), constant_values=0)
        expected = udf.apply_datacube(padded, {}).values[:, 0, OVERLAP:-OVERLAP, OVERLAP:-OVERLAP]
        np.testing.assert_allclose(ds["S2-L2A-DISTANCE-TO-CLOUD"].values, expected, rtol=1e-5)
        cloud_near.append(bool((expected < 255).any()))
    assert 0 < np.mean(mask_means) < 1
    assert any(cloud_near)  # some dates have clouds near the squares: the UDF had work to do

    # the presigned URLs of the uploaded squares (credentials) are nowhere in the outputs
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in {".csv", ".json", ".db", ".txt", ".log"}:
            assert "X-Amz-Signature" not in path.read_text(errors="replace"), path
