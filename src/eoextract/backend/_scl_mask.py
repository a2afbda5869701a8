"""``to_scl_dilation_mask``: a cloud mask from the Sen2Cor scene classification (SCL).

Production backends describe it as "Create a mask for clouds by dilating Sen2Cor
sceneclassification ... removes pixels in the neighbourhood of clouds in a fairly aggressive
manner" (the experimental process spec of openeo-python-driver,
``openeo_driver/specs/openeo-processes/experimental/to_scl_dilation_mask.json``). Here, per
date, with scipy.ndimage morphology:

1. ``mask1``: pixels whose SCL value is *not* in ``mask1_values`` (no data, saturated, cloud
   shadows, clouds, cirrus, snow with the usual values); ``mask2``: pixels whose SCL value *is*
   in ``mask2_values`` (shadows, clouds, cirrus, snow);
2. with ``erosion_kernel_size`` > 0 both are first eroded with a square of that size (removing
   isolated misclassified pixels; outside the cube counts as masked, so edges are not eroded);
3. ``mask1`` is dilated with a disk of diameter ``kernel1_size``, ``mask2`` with one of
   diameter ``kernel2_size`` (outside the cube counts as not masked);
4. the result is ``1`` (masked) where either is set, else ``0``: one ``uint8`` band named
   after the SCL band, ready for ``mask``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from eoextract.backend._api_errors import ProcessParameterInvalid

SPEC: dict = {
    "id": "to_scl_dilation_mask",
    "summary": "Create a mask for clouds by dilating Sen2Cor sceneclassification",
    "description": __doc__,
    "categories": ["cubes", "ard"],
    "experimental": True,
    "parameters": [
        {"name": "data", "description": "A data cube with the Sentinel-2 SCL band.",
         "schema": {"type": "object", "subtype": "datacube"}},
        {"name": "scl_band_name", "description": "Name of the SCL band (default: the only band, "
         "or the one named like SCL).", "optional": True, "default": None,
         "schema": [{"type": "string"}, {"type": "null"}]},
        {"name": "erosion_kernel_size", "description": "Size of the square erosion kernel (0: none).",
         "optional": True, "default": 0, "schema": {"type": "number"}},
        {"name": "mask1_values", "description": "SCL values kept by the first mask.",
         "optional": True, "default": [2, 4, 5, 6, 7],
         "schema": {"type": "array", "items": {"type": "number"}}},
        {"name": "mask2_values", "description": "SCL values masked by the second mask.",
         "optional": True, "default": [3, 8, 9, 10, 11],
         "schema": {"type": "array", "items": {"type": "number"}}},
        {"name": "kernel1_size", "description": "Diameter of the first dilation kernel.",
         "optional": True, "default": 17, "schema": {"type": "number"}},
        {"name": "kernel2_size", "description": "Diameter of the second dilation kernel.",
         "optional": True, "default": 201, "schema": {"type": "number"}},
    ],
    "returns": {"description": "The mask (1: masked, 0: clear).",
                "schema": {"type": "object", "subtype": "datacube"}},
}


def _size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise ProcessParameterInvalid(f"to_scl_dilation_mask: {name} must be a non-negative integer, "
                                      f"not {value!r}.")
    return int(value)


def _scl_band(data: xr.DataArray, name: str | None) -> str:
    labels = [str(b) for b in data["bands"].values]
    if name is not None:
        if name not in labels:
            raise ProcessParameterInvalid(f"to_scl_dilation_mask: band {name!r} not in the cube "
                                          f"(bands: {labels}).")
        return name
    if len(labels) == 1:
        return labels[0]
    candidates = [b for b in labels if b.upper().endswith("SCL")]
    if len(candidates) != 1:
        raise ProcessParameterInvalid("to_scl_dilation_mask: give scl_band_name, the cube has "
                                      f"several bands: {labels}.")
    return candidates[0]


def dilate_disk(mask: np.ndarray, diameter: int) -> np.ndarray:
    """``mask`` (2-D bool) dilated with a disk of ``diameter`` pixels (radius (d-1)/2)."""
    from scipy import ndimage

    radius = (diameter - 1) / 2
    if radius < 1 or not mask.any():
        return mask.copy()
    if mask.all():
        return mask.copy()
    # a pixel is within the dilation when its nearest masked pixel is within the radius
    return ndimage.distance_transform_edt(~mask) <= radius


def scl_dilation_mask_2d(scl: np.ndarray, mask1_values: list, mask2_values: list, kernel1_size: int,
                         kernel2_size: int, erosion_kernel_size: int) -> np.ndarray:
    """The mask of one SCL image (2-D), as bools."""
    from scipy import ndimage

    mask1 = ~np.isin(scl, mask1_values)
    mask2 = np.isin(scl, mask2_values)
    if erosion_kernel_size > 1:
        square = np.ones((erosion_kernel_size, erosion_kernel_size), dtype=bool)
        mask1 = ndimage.binary_erosion(mask1, structure=square, border_value=1)
        mask2 = ndimage.binary_erosion(mask2, structure=square, border_value=1)
    return dilate_disk(mask1, kernel1_size) | dilate_disk(mask2, kernel2_size)


def to_scl_dilation_mask(data: xr.DataArray, scl_band_name: str | None = None,
                         erosion_kernel_size: Any = 0, mask1_values: list | None = None,
                         mask2_values: list | None = None, kernel1_size: Any = 17,
                         kernel2_size: Any = 201) -> xr.DataArray:
    """The SCL dilation mask of a raster cube (see the module docstring)."""
    if not isinstance(data, xr.DataArray) or not {"bands", "y", "x"} <= set(data.dims):
        raise ProcessParameterInvalid("to_scl_dilation_mask needs a raster cube with bands, y and x.")
    band = _scl_band(data, scl_band_name)
    k1, k2 = _size("kernel1_size", kernel1_size), _size("kernel2_size", kernel2_size)
    erosion = _size("erosion_kernel_size", erosion_kernel_size)
    m1 = [2, 4, 5, 6, 7] if mask1_values is None else list(mask1_values)
    m2 = [3, 8, 9, 10, 11] if mask2_values is None else list(mask2_values)
    scl = data.sel(bands=[band])
    lead = [d for d in scl.dims if d not in ("y", "x")]
    ordered = scl.transpose(*lead, "y", "x")
    values = ordered.values
    flat = values.reshape(-1, values.shape[-2], values.shape[-1])
    out = np.empty(flat.shape, dtype=np.uint8)
    for i, image in enumerate(flat):
        image = np.where(np.isnan(image), 0, image) if image.dtype.kind == "f" else image
        out[i] = scl_dilation_mask_2d(image, m1, m2, k1, k2, erosion)
    result = ordered.copy(data=out.reshape(values.shape)).transpose(*scl.dims)
    result.attrs = {}
    return result
