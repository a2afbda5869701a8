"""Distance to the nearest cloud, from the Sentinel-2 scene classification (SCL).

The UDF notebook 004 passes to ``apply_neighborhood`` (``openeo.UDF.from_file``): it gets one
chunk of the SCL band (dimensions ``t, bands, y, x``) and returns, per date and pixel, the
distance in pixels (10 m) to the nearest cloud or cloud shadow, capped at ``max_distance``
(context, default 255). Pixels closer than ``min_distance`` (context, default 0) count as cloud.

Clouds are SCL classes 3 (cloud shadow), 8, 9 (cloud, medium and high probability) and 10
(thin cirrus); isolated cloud pixels are removed with a binary erosion first, as the
production UDF does. A date without clouds gets ``max_distance`` everywhere.
"""

import numpy as np
import xarray
from scipy import ndimage

CLOUD_CLASSES = [3, 8, 9, 10]


def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    context = context or {}
    max_distance = float(context.get("max_distance", 255))
    min_distance = float(context.get("min_distance", 0))
    erosion = int(context.get("erosion_iterations", 1))

    scl = cube.transpose("t", "bands", "y", "x")
    values = np.nan_to_num(scl.values.astype("float64"), nan=0.0)
    clouds = np.isin(values, CLOUD_CLASSES)
    distance = np.full(values.shape, max_distance, dtype="float32")
    for t in range(values.shape[0]):
        for b in range(values.shape[1]):
            mask = clouds[t, b]
            if erosion > 0:
                mask = ndimage.binary_erosion(mask, iterations=erosion, border_value=1)
            if not mask.any():
                continue
            # distance of every pixel to the nearest cloud pixel
            d = ndimage.distance_transform_edt(~mask)
            d[d < min_distance] = 0
            distance[t, b] = np.minimum(d, max_distance)
    return scl.copy(data=distance)
