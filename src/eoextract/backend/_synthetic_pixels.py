"""Pixel values of the synthetic collections, computed from the coordinates of their centres.

A smooth "land cover" field (water, bare soil, vegetation of varying density) is derived
from hashed value noise of the coordinates; vegetated parcels follow a seasonal cycle; some
dates carry clouds whose extent matches the date's ``eo:cloud_cover``, flagged 8/9/10 in
``SCL``. Optical bands are block-constant at their native resolution; radar bands carry
speckle.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cache

import numpy as np

from eoextract.backend._noise import fbm, hash01
from eoextract.backend._synthetic_collections import (
    COLLECTIONS,
    CollectionSpec,
    cloud_cover,
    date_index,
    tile_key,
)

_CLOUD_SCALES = (4000.0, 1500.0, 500.0, 150.0)


@cache
def _cloud_quantiles() -> np.ndarray:
    """Empirical quantiles of the cloud noise, so a threshold yields a chosen cover fraction."""
    coords = np.arange(0, 120_000, 150.0) + 75.0
    sample = fbm(coords, coords, _CLOUD_SCALES, seed=12345)
    return np.quantile(sample, np.linspace(0.0, 1.0, 1001))


def _to_uniform(values: np.ndarray) -> np.ndarray:
    q = _cloud_quantiles()
    return np.interp(values, q, np.linspace(0.0, 1.0, q.size))


# --------------------------------------------------------------------------------------------
# Pixel generation

# Surface reflectance spectra (B01..B12 without SCL).
_WATER = np.array([0.070, 0.060, 0.050, 0.030, 0.025, 0.020, 0.018, 0.015, 0.014, 0.010, 0.005, 0.003])
_SOIL = np.array([0.080, 0.100, 0.140, 0.180, 0.200, 0.220, 0.230, 0.250, 0.260, 0.270, 0.330, 0.280])
_VEG = np.array([0.030, 0.040, 0.070, 0.035, 0.090, 0.280, 0.360, 0.400, 0.410, 0.400, 0.200, 0.100])
_CLOUD = np.array([0.600, 0.620, 0.640, 0.650, 0.650, 0.660, 0.660, 0.670, 0.670, 0.500, 0.450, 0.350])
_OPTICAL_INDEX = {b.name: i for i, b in enumerate(COLLECTIONS["SENTINEL2_L2A"].bands[:12])}


def _block_coords(coords: np.ndarray, gsd: float) -> np.ndarray:
    """Centre of the native ``gsd`` block holding each 10 m pixel centre."""
    if gsd <= 10:
        return coords
    return np.floor(coords / gsd) * gsd + gsd / 2.0


def _surface(xs: np.ndarray, ys: np.ndarray, doys: np.ndarray, southern: bool):
    """Land-cover fields: water mask (y, x) and vegetation fraction (t, y, x)."""
    lc = fbm(xs, ys, (3000.0, 900.0, 300.0), seed=1)
    water = lc < 0.33
    # Parcels of 200 m carry their own crop calendar and peak greenness.
    px = np.floor(xs / 200.0).astype(np.int64)
    py = np.floor(ys / 200.0).astype(np.int64)
    phase = hash01(px[None, :], py[:, None], seed=2) * 365.0
    peak = 0.55 + 0.45 * hash01(px[None, :], py[:, None], seed=3)
    density = np.clip((lc - 0.36) / 0.25, 0.0, 1.0) * peak
    doy = doys + (182 if southern else 0)
    season = 0.5 - 0.5 * np.cos(2 * np.pi * (doy[:, None, None] - phase[None]) / 365.0)
    fveg = density[None] * (0.15 + 0.85 * season)
    return water, fveg


def _blocks(coords: np.ndarray, gsd: float) -> tuple[np.ndarray, np.ndarray]:
    """Unique ``gsd`` block centres (ascending) and, per 10 m pixel, the index of its block."""
    centres, inverse = np.unique(_block_coords(coords, gsd), return_inverse=True)
    return centres, inverse.reshape(-1)


def _optical(spec: CollectionSpec, epsg: int, xs: np.ndarray, ys: np.ndarray,
             dates: Sequence[datetime], bands: Sequence[str], tile: tuple[int, int, int],
             checkpoint: Callable[[], None]) -> np.ndarray:
    """Optical bands, each computed on its native block grid, then expanded to 10 m."""
    days = date_index(spec, dates)
    doys = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)
    southern = epsg // 100 == 327
    cover = (cloud_cover(spec, tile, dates) / 100.0).astype(np.float32)[:, None, None]
    cirrus = (hash01(days, seed=11) < 0.25)[:, None, None]
    # Clouds live on the 20 m grid of SCL, so every band agrees with SCL about them.
    cx, _ = _blocks(xs, 20.0)
    cy, _ = _blocks(ys, 20.0)
    clouds20 = np.stack([_to_uniform(fbm(cx, cy, _CLOUD_SCALES, seed=1000 + int(d))) for d in days]
                        ).astype(np.float32) if len(days) else np.zeros((0, cy.size, cx.size), np.float32)
    out = np.zeros((len(dates), len(bands), ys.size, xs.size), dtype=np.uint16)
    grids: dict[float, tuple] = {}

    def grid(gsd: float) -> tuple:
        if gsd not in grids:
            bx, ix = _blocks(xs, gsd)
            by, iy = _blocks(ys, gsd)
            water, fveg = _surface(bx, by, doys, southern)
            if gsd <= 20:
                gx = np.searchsorted(cx, _block_coords(bx, 20.0))
                gy = np.searchsorted(cy, _block_coords(by, 20.0))
                u = clouds20[:, gy[:, None], gx[None, :]]
            else:  # coarse blocks may reach past the extent: evaluate at their 20 m block
                qx, qy = _block_coords(bx, 20.0), _block_coords(by, 20.0)
                u = np.stack([_to_uniform(fbm(qx, qy, _CLOUD_SCALES, seed=1000 + int(d))) for d in days]
                             ).astype(np.float32) if len(days) else np.zeros((0, by.size, bx.size), np.float32)
            grain = hash01(np.floor(bx / gsd).astype(np.int64)[None, :],
                            np.floor(by / gsd).astype(np.int64)[:, None], seed=5)
            grids[gsd] = dict(
                ix=ix, iy=iy, water=water, fveg=fveg.astype(np.float32),
                grain=(0.96 + 0.08 * grain).astype(np.float32), cloudy=u < cover, core=u < cover * 0.6,
                thick=(0.9 + 0.2 * u / np.maximum(cover, 1e-6)).astype(np.float32))
        return grids[gsd]

    for bi, name in enumerate(bands):
        checkpoint()
        g = grid(spec.band(name).gsd)
        if name == "SCL":
            # Without clouds: 4 vegetation, 5 not vegetated, 6 water; clouds 8/9, cirrus 10.
            values = np.where(g["water"][None], 6, np.where(g["fveg"] > 0.35, 4, 5))
            values = np.where(g["cloudy"], np.where(g["core"], 9, np.where(cirrus, 10, 8)), values)
            values = values.astype(np.uint16)
        else:
            k = _OPTICAL_INDEX[name]
            refl = np.float32(_SOIL[k]) + g["fveg"] * np.float32(_VEG[k] - _SOIL[k])
            refl = np.where(g["water"][None], np.float32(_WATER[k]), refl) * g["grain"][None]
            # Thin clouds: cirrus adds haze; elsewhere the rim blends surface and cloud.
            gain = np.where(cirrus, 1.0, 0.5).astype(np.float32)
            offset = np.where(cirrus, 0.08, 0.5 * _CLOUD[k]).astype(np.float32)
            cloud = np.where(g["core"], np.float32(_CLOUD[k]) * g["thick"], refl * gain + offset)
            refl = np.where(g["cloudy"], cloud, refl)
            values = np.clip(np.rint(refl * np.float32(10000.0)), 1, 65535).astype(np.uint16)
        out[:, bi] = values[:, g["iy"][:, None], g["ix"][None, :]]
    return out


def _sar(spec: CollectionSpec, epsg: int, xs: np.ndarray, ys: np.ndarray,
         dates: Sequence[datetime], bands: Sequence[str]) -> np.ndarray:
    doys = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)
    days = date_index(spec, dates)
    water, fveg = _surface(xs, ys, doys, epsg // 100 == 327)
    ix = np.rint(xs / 10.0).astype(np.int64)
    iy = np.rint(ys / 10.0).astype(np.int64)
    out = np.zeros((len(dates), len(bands), ys.size, xs.size), dtype=np.float32)
    for bi, name in enumerate(bands):
        spec.band(name)
        if name == "VV":
            base = np.where(water[None], 0.004, 0.06 + 0.10 * fveg)
        else:
            base = np.where(water[None], 0.0008, 0.008 + 0.04 * fveg)
        # Multiplicative speckle (roughly exponential, 4-look average), per date and pixel.
        u = hash01(days[:, None, None], iy[None, :, None], ix[None, None, :], bi, seed=21)
        speckle = -np.log(np.clip(u, 1e-9, 1.0)) * 0.5 + 0.5
        out[:, bi] = (base * speckle).astype(np.float32)
    return out


def generate(spec: CollectionSpec, epsg: int, xs: np.ndarray, ys: np.ndarray,
             dates: Sequence[datetime], bands: Sequence[str],
             tile: tuple[int, int, int] | None = None,
             checkpoint: Callable[[], None] | None = None) -> np.ndarray:
    """Compute pixel values.

    Args:
        spec: The collection.
        epsg: UTM EPSG code of the grid.
        xs: Pixel-centre eastings (metres), increasing.
        ys: Pixel-centre northings (metres), usually decreasing.
        dates: Acquisition dates.
        bands: Band names (validated against ``spec``).
        tile: Tile key for cloud cover (default: the tile of the grid's centre).
        checkpoint: Called between bands (e.g. to raise when the job is canceled).

    Returns:
        Array ``(t, bands, y, x)``: uint16 for optical, float32 for radar collections.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    if tile is None:
        tile = tile_key(epsg, float(np.mean(xs)), float(np.mean(ys)))
    if spec.kind == "optical":
        return _optical(spec, epsg, xs, ys, dates, bands, tile, checkpoint or (lambda: None))
    return _sar(spec, epsg, xs, ys, dates, bands)
