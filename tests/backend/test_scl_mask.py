"""``to_scl_dilation_mask`` against a reference computed here with plain scipy morphology."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import xarray as xr
from api_helpers import BBOX
from openeo.rest import OpenEoApiError
from scipy import ndimage

from eoextract.backend._api_errors import ProcessParameterInvalid
from eoextract.backend._scl_mask import to_scl_dilation_mask

NOTEBOOK = {"kernel1_size": 17, "kernel2_size": 77, "mask1_values": [2, 4, 5, 6, 7],
            "mask2_values": [3, 8, 9, 10, 11], "erosion_kernel_size": 3}


def _disk(diameter: int) -> np.ndarray:
    r = (diameter - 1) / 2
    n = math.floor(r)
    yy, xx = np.mgrid[-n:n + 1, -n:n + 1]
    return xx ** 2 + yy ** 2 <= r * r


def reference(scl: np.ndarray, kernel1_size, kernel2_size, mask1_values, mask2_values,
              erosion_kernel_size) -> np.ndarray:
    """One 2-D SCL image: erode (edges kept), dilate with disks (edges clear), or."""
    bad1, bad2 = ~np.isin(scl, mask1_values), np.isin(scl, mask2_values)
    if erosion_kernel_size > 1:
        square = np.ones((erosion_kernel_size, erosion_kernel_size), dtype=bool)
        bad1 = ndimage.binary_erosion(bad1, structure=square, border_value=1)
        bad2 = ndimage.binary_erosion(bad2, structure=square, border_value=1)
    out1 = ndimage.binary_dilation(bad1, structure=_disk(kernel1_size)) if bad1.any() else bad1
    out2 = ndimage.binary_dilation(bad2, structure=_disk(kernel2_size)) if bad2.any() else bad2
    return (out1 | out2).astype(np.uint8)


def _scl_array(seed: int = 1, size: int = 48) -> np.ndarray:
    """Clear land (4) with a few clouds (9), shadows (3), a single noisy pixel and water (6)."""
    rng = np.random.default_rng(seed)
    scl = np.full((2, size, size), 4, dtype=np.uint16)
    scl[:, 30:, :10] = 6
    for t in range(2):
        for _ in range(3):
            y, x = rng.integers(0, size - 6, size=2)
            scl[t, y:y + 5, x:x + 4] = rng.choice([3, 9])
    scl[0, 2, 40] = 8  # isolated: removed by a 3 px erosion
    scl[1, 20, 20] = 0  # no data
    return scl


@pytest.mark.parametrize("params", [
    {"kernel1_size": 5, "kernel2_size": 9, "mask1_values": [2, 4, 5, 6, 7],
     "mask2_values": [3, 8, 9, 10, 11], "erosion_kernel_size": 3},
    {"kernel1_size": 3, "kernel2_size": 12, "mask1_values": [4, 5], "mask2_values": [9],
     "erosion_kernel_size": 0},
    NOTEBOOK,
])
def test_mask_equals_scipy_reference(params):
    scl = _scl_array()
    cube = xr.DataArray(scl[:, None], dims=("t", "bands", "y", "x"),
                        coords={"bands": ["S2-L2A-SCL"], "y": np.arange(48)[::-1] * 10.0,
                                "x": np.arange(48) * 10.0})
    out = to_scl_dilation_mask(cube, scl_band_name="S2-L2A-SCL", **params)
    assert out.dims == cube.dims and out.dtype == np.uint8
    assert list(out["bands"].values) == ["S2-L2A-SCL"]
    for t in range(2):
        expected = reference(scl[t], **params)
        np.testing.assert_array_equal(out.values[t, 0], expected)
    if params["erosion_kernel_size"] == 3 and params["kernel1_size"] == 5:
        assert out.values[0, 0, 2, 40] == 0  # the isolated pixel was eroded away
        assert 0 < out.values.mean() < 1


def test_band_choice_and_bad_parameters():
    cube = xr.DataArray(np.zeros((1, 2, 4, 4), dtype=np.uint16), dims=("t", "bands", "y", "x"),
                        coords={"bands": ["B04", "SCL"]})
    assert list(to_scl_dilation_mask(cube)["bands"].values) == ["SCL"]  # found by name
    with pytest.raises(ProcessParameterInvalid, match="not in the cube"):
        to_scl_dilation_mask(cube, scl_band_name="NOPE")
    with pytest.raises(ProcessParameterInvalid, match="kernel1_size"):
        to_scl_dilation_mask(cube, kernel1_size=-3)


def test_notebook_call_through_the_client(connection):
    scl = connection.load_collection("SENTINEL2_L2A", spatial_extent=BBOX,
                                     temporal_extent=["2021-06-01", "2021-06-11"], bands=["SCL"])
    params = {"kernel1_size": 5, "kernel2_size": 9, "mask1_values": [2, 4, 5, 6, 7],
              "mask2_values": [3, 8, 9, 10, 11], "erosion_kernel_size": 3}
    mask = scl.process("to_scl_dilation_mask", data=scl, scl_band_name="SCL", **params)
    mask = mask.rename_labels("bands", ["S2-L2A-SCL_DILATED_MASK"])
    merged = scl.merge_cubes(mask)
    ds = xr.open_dataset(io.BytesIO(merged.download(format="NetCDF"))).load()
    # the NetCDF writer stores integer no-data (0) as NaN: SCL 0 is "no data", mask 0 "clear"
    values = np.nan_to_num(ds["SCL"].values, nan=0).astype(np.uint16)
    got = np.nan_to_num(ds["S2-L2A-SCL_DILATED_MASK"].values, nan=0)
    assert 0 < got.mean() < 1
    for t in range(values.shape[0]):
        np.testing.assert_array_equal(got[t], reference(values[t], **params))
    spec = connection.describe_process("to_scl_dilation_mask")
    names = {p["name"] for p in spec["parameters"]}
    assert set(NOTEBOOK) | {"data", "scl_band_name"} <= names
    with pytest.raises(OpenEoApiError) as info:
        scl.process("to_scl_dilation_mask", data=scl, kernel1_size=1.5).download(format="NetCDF")
    assert info.value.code == "ProcessParameterInvalid"
