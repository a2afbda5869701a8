"""Deterministic hashing and smooth value noise for the synthetic collections.

All vectorised, platform-independent integer arithmetic: the same coordinates give the
same numbers on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_U64 = np.uint64


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def hash01(*keys: np.ndarray | int, seed: int) -> np.ndarray:
    """Uniform floats in [0, 1) from integer keys (broadcast together)."""
    arrays = [np.asarray(k, dtype=np.int64).view(np.uint64) for k in keys]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    h = np.full(shape, _U64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    primes = (0xA24BAED4963EE407, 0x9FB21C651E98DF25, 0xD6E8FEB86659FD93, 0xC2B2AE3D27D4EB4F)
    with np.errstate(over="ignore"):
        for i, a in enumerate(arrays):
            h = _mix(h ^ (a * _U64(primes[i % len(primes)])))
    return (h >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def value_noise(xs: np.ndarray, ys: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Smooth value noise in [0, 1] on the grid ``ys x xs`` (metres), feature size ``scale``."""
    gx = xs / scale
    gy = ys / scale
    ix = np.floor(gx).astype(np.int64)
    iy = np.floor(gy).astype(np.int64)
    fx = gx - ix
    fy = gy - iy
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    x0, y0 = ix.min(), iy.min()
    lat_x = np.arange(x0, ix.max() + 2)
    lat_y = np.arange(y0, iy.max() + 2)
    lattice = hash01(lat_x[None, :], lat_y[:, None], seed=seed)
    cx = ix - x0
    cy = iy - y0
    v00 = lattice[cy[:, None], cx[None, :]]
    v01 = lattice[cy[:, None], cx[None, :] + 1]
    v10 = lattice[cy[:, None] + 1, cx[None, :]]
    v11 = lattice[cy[:, None] + 1, cx[None, :] + 1]
    top = v00 + (v01 - v00) * fx[None, :]
    bottom = v10 + (v11 - v10) * fx[None, :]
    return top + (bottom - top) * fy[:, None]


def fbm(xs: np.ndarray, ys: np.ndarray, scales: Sequence[float], seed: int) -> np.ndarray:
    """Octaves of :func:`value_noise` at ``scales``, each half the weight of the previous one."""
    total = np.zeros((ys.size, xs.size))
    weight = 0.0
    for i, s in enumerate(scales):
        w = 0.5**i
        total += w * value_noise(xs, ys, s, seed * 31 + i)
        weight += w
    return total / weight
