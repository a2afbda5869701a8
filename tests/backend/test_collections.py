"""Synthetic collections: dates, clouds, plausible values, metadata."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest

from eoextract.backend import _collection_metadata as metadata
from eoextract.backend import _synthetic_collections as colls
from eoextract.backend import _synthetic_pixels as pixels
from eoextract.backend._api_errors import CollectionNotFound, ProcessParameterInvalid

S2 = colls.get_collection("SENTINEL2_L2A")
S1 = colls.get_collection("SENTINEL1_GRD")


def grid(x0: float, y0: float, n: int, step: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n) * step + x0 + step / 2, y0 - np.arange(n) * step - step / 2


def test_unknown_collection_and_band():
    with pytest.raises(CollectionNotFound):
        colls.get_collection("LANDSAT9")
    with pytest.raises(ProcessParameterInvalid, match="B13"):
        S2.band("B13")


def test_dates_every_5_and_6_days_half_open():
    d = colls.collection_dates(S2, datetime(2023, 3, 4), datetime(2023, 3, 14))
    assert d == [datetime(2023, 3, 4, tzinfo=timezone.utc), datetime(2023, 3, 9, tzinfo=timezone.utc)]
    d1 = colls.collection_dates(S1, datetime(2023, 1, 1), datetime(2023, 3, 1))
    assert all((b - a).days == 6 for a, b in zip(d1, d1[1:])) and len(d1) == 10
    assert colls.collection_dates(S2, datetime(2023, 3, 5), datetime(2023, 3, 9)) == []


@pytest.mark.parametrize("lon, lat, epsg", [(5.0, 51.2, 32631), (-58.4, -34.6, 32721), (179.9, 10, 32660),
                                            (-180.0, 0.0, 32601), (24.9, 60.2, 32635)])
def test_utm_zone(lon, lat, epsg):
    assert colls.utm_epsg(lon, lat) == epsg


def test_deterministic_and_location_dependent():
    xs, ys = grid(600000, 5700000, 16)
    dates = colls.collection_dates(S2, datetime(2023, 5, 1), datetime(2023, 6, 1))
    a = pixels.generate(S2, 32631, xs, ys, dates, S2.band_names)
    b = pixels.generate(S2, 32631, xs, ys, dates, S2.band_names)
    c = pixels.generate(S2, 32631, xs + 5000, ys, dates, S2.band_names)
    assert a.dtype == np.uint16 and a.shape == (len(dates), 13, 16, 16)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_values_plausible_per_class():
    """NDVI of clear pixels follows SCL: vegetation > bare soil > water; clouds are bright."""
    xs, ys = grid(400000, 6000000, 200, step=40.0)
    dates = colls.collection_dates(S2, datetime(2022, 1, 1), datetime(2023, 1, 1))
    v = pixels.generate(S2, 32632, xs, ys, dates, ["B02", "B04", "B08", "SCL"]).astype(np.float64)
    blue, red, nir, scl = v[:, 0], v[:, 1], v[:, 2], v[:, 3]
    ndvi = (nir - red) / (nir + red)
    assert set(np.unique(scl)) <= {4, 5, 6, 8, 9, 10}
    veg, soil, water = (np.median(ndvi[scl == k]) for k in (4, 5, 6))
    assert veg > 0.5 and 0.1 < soil < 0.4 and water < 0
    assert np.median(blue[scl == 9]) > 5000 > np.median(blue[(scl >= 4) & (scl <= 6)])
    assert 1 <= v[:, :3].min() and v[:, :3].max() <= 10000


def test_cloud_cover_matches_scl_over_a_tile():
    xs, ys = grid(500000, 5800000, 200, step=500.0)
    tile = colls.tile_key(32631, 550000, 5750000)
    dates = colls.collection_dates(S2, datetime(2023, 3, 1), datetime(2023, 5, 1))
    scl = pixels.generate(S2, 32631, xs, ys, dates, ["SCL"], tile=tile)[:, 0]
    cover = colls.cloud_cover(S2, tile, dates)
    frac = np.isin(scl, [8, 9, 10]).mean(axis=(1, 2)) * 100
    assert np.all(np.abs(frac - cover) < 6)
    assert cover.min() < 5 and cover.max() > 50


def test_sentinel1_backscatter():
    xs, ys = grid(600000, 5700000, 32)
    dates = colls.collection_dates(S1, datetime(2023, 5, 1), datetime(2023, 6, 1))
    v = pixels.generate(S1, 32631, xs, ys, dates, ["VV", "VH"])
    assert v.dtype == np.float32 and np.all(v > 0)
    assert np.median(v[:, 0]) > np.median(v[:, 1])  # VV above VH


def test_metadata():
    meta = metadata.collection_metadata(S2)
    assert meta["id"] == "SENTINEL2_L2A"
    dims = meta["cube:dimensions"]
    assert set(dims) == {"x", "y", "t", "bands"} and dims["bands"]["values"][-1] == "SCL"
    eo = {b["name"]: b for b in meta["summaries"]["eo:bands"]}
    assert len(eo) == 13 and eo["B08"]["common_name"] == "nir" and eo["B08"]["center_wavelength"] == 0.842
    assert meta["summaries"]["bands"] == meta["summaries"]["eo:bands"]
    summary = metadata.collection_summary(S1)
    assert summary["id"] == "SENTINEL1_GRD" and "extent" in summary
    assert metadata.band_metadata(S2, "S2-L2A-B04")["common_name"] == "red"


def test_pixel_values_do_not_depend_on_the_requested_extent():
    xs, ys = grid(600000, 5700640, 64)
    dates = colls.collection_dates(S2, datetime(2023, 3, 1), datetime(2023, 6, 1))
    tile = (32631, 6, 57)
    full = pixels.generate(S2, 32631, xs, ys, dates, S2.band_names, tile=tile)
    part = pixels.generate(S2, 32631, xs[13:41], ys[7:50], dates, S2.band_names, tile=tile)
    assert np.array_equal(full[:, :, 7:50, 13:41], part)


def test_clouds_agree_with_scl_in_every_band():
    xs, ys = grid(500000, 5800000, 100, step=10.0)
    dates = colls.collection_dates(S2, datetime(2023, 3, 1), datetime(2023, 6, 1))
    v = pixels.generate(S2, 32631, xs, ys, dates, ["B02", "SCL"])
    clear = (v[:, 1] >= 4) & (v[:, 1] <= 6)
    thick = v[:, 1] == 9
    assert thick.any() and clear.any()
    assert v[:, 0][thick].min() > 2 * v[:, 0][clear].max()  # thick clouds (SCL 9) are bright in B02
