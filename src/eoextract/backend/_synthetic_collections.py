"""Synthetic, deterministic collections served by the embedded openEO backend.

Two collections are offered:

* ``SENTINEL2_L2A``: 13 bands (B01-B09, B8A, B11, B12 as uint16 surface reflectance x 10000,
  and the scene classification ``SCL``), a date every 5 days, on the 10 m UTM grid of the
  requested location.
* ``SENTINEL1_GRD``: ``VV`` and ``VH`` backscatter (linear sigma0, float32), every 6 days.

Pixels are computed with numpy directly from the UTM coordinates of their centres, so the
same request always yields the same values, wherever on Earth it is. A smooth "land cover"
field (water, bare soil, vegetation of varying density) is derived from hashed value noise
of the coordinates; vegetated parcels follow a seasonal cycle; some dates carry clouds
whose extent matches the date's ``eo:cloud_cover``, flagged 8/9/10 in ``SCL``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any

import numpy as np

from eoextract.backend._api_errors import CollectionNotFound, ProcessParameterInvalid


logger = logging.getLogger(__name__)

_U64 = np.uint64


@dataclass(frozen=True)
class BandSpec:
    """One band of a synthetic collection.

    Attributes:
        name: Band name as used in process graphs (``B04``).
        common_name: STAC ``eo`` common name (``red``), or ``None``.
        center_wavelength: Centre wavelength in micrometres, or ``None``.
        gsd: Native ground sample distance in metres (pixels are block-constant at it).
        data_type: numpy dtype name of the values.
        nodata: No-data value.
        description: Human-readable description.
    """

    name: str
    common_name: str | None
    center_wavelength: float | None
    gsd: float
    data_type: str = "uint16"
    nodata: float | int | None = 0
    description: str = ""


@dataclass(frozen=True)
class CollectionSpec:
    """A synthetic collection.

    Attributes:
        id: Collection id.
        title: Short title.
        description: Description for ``/collections``.
        bands: Bands in their default order.
        revisit_days: Days between two acquisitions.
        epoch: First acquisition (UTC midnight); dates are ``epoch + k * revisit_days``.
        platform: STAC ``platform``.
        instruments: STAC ``instruments``.
        kind: ``"optical"`` or ``"sar"`` (selects the pixel generator).
    """

    id: str
    title: str
    description: str
    bands: tuple[BandSpec, ...]
    revisit_days: int
    epoch: datetime
    platform: str
    instruments: tuple[str, ...]
    kind: str
    keywords: tuple[str, ...] = field(default_factory=tuple)

    @property
    def band_names(self) -> list[str]:
        """Names of all bands, in order."""
        return [b.name for b in self.bands]

    def band(self, name: str) -> BandSpec:
        """Return the band called ``name`` (raises ``ProcessParameterInvalid``)."""
        for b in self.bands:
            if b.name == name:
                return b
        raise ProcessParameterInvalid(
            f"Band {name!r} does not exist in collection {self.id}; "
            f"available bands: {', '.join(self.band_names)}."
        )


_S2_BANDS = (
    BandSpec("B01", "coastal", 0.443, 60, description="Coastal aerosol"),
    BandSpec("B02", "blue", 0.490, 10, description="Blue"),
    BandSpec("B03", "green", 0.560, 10, description="Green"),
    BandSpec("B04", "red", 0.665, 10, description="Red"),
    BandSpec("B05", "rededge071", 0.704, 20, description="Vegetation red edge 1"),
    BandSpec("B06", "rededge075", 0.740, 20, description="Vegetation red edge 2"),
    BandSpec("B07", "rededge078", 0.783, 20, description="Vegetation red edge 3"),
    BandSpec("B08", "nir", 0.842, 10, description="Near infrared"),
    BandSpec("B8A", "nir08", 0.865, 20, description="Narrow near infrared"),
    BandSpec("B09", "nir09", 0.945, 60, description="Water vapour"),
    BandSpec("B11", "swir16", 1.610, 20, description="Short-wave infrared 1.6 um"),
    BandSpec("B12", "swir22", 2.190, 20, description="Short-wave infrared 2.2 um"),
    BandSpec("SCL", None, None, 20, "uint8", 0, "Scene classification map"),
)
# SCL is stored with the other bands as uint16 in the cube (one dtype per cube).

_S1_BANDS = (
    BandSpec("VV", None, None, 10, "float32", None, "Backscatter sigma0, VV polarisation"),
    BandSpec("VH", None, None, 10, "float32", None, "Backscatter sigma0, VH polarisation"),
)

COLLECTIONS: dict[str, CollectionSpec] = {
    "SENTINEL2_L2A": CollectionSpec(
        id="SENTINEL2_L2A",
        title="Sentinel-2 L2A (synthetic)",
        description=(
            "Synthetic, deterministic Sentinel-2 Level-2A surface reflectance on the 10 m UTM "
            "grid of any location: bands B01-B12, B8A and the scene classification SCL, one "
            "acquisition every 5 days, clouds on some dates (eo:cloud_cover per date)."
        ),
        bands=_S2_BANDS,
        revisit_days=5,
        epoch=datetime(2015, 7, 4, tzinfo=timezone.utc),
        platform="sentinel-2a",
        instruments=("msi",),
        kind="optical",
        keywords=("sentinel-2", "l2a", "synthetic"),
    ),
    "SENTINEL1_GRD": CollectionSpec(
        id="SENTINEL1_GRD",
        title="Sentinel-1 GRD backscatter (synthetic)",
        description=(
            "Synthetic, deterministic Sentinel-1 GRD backscatter (linear sigma0, VV and VH) "
            "on the 10 m UTM grid of any location, one acquisition every 6 days."
        ),
        bands=_S1_BANDS,
        revisit_days=6,
        epoch=datetime(2014, 10, 3, tzinfo=timezone.utc),
        platform="sentinel-1a",
        instruments=("c-sar",),
        kind="sar",
        keywords=("sentinel-1", "grd", "sar", "synthetic"),
    ),
}


def get_collection(collection_id: str) -> CollectionSpec:
    """Return the collection ``collection_id``.

    Raises:
        CollectionNotFound: For an unknown id.
    """
    try:
        return COLLECTIONS[collection_id]
    except (KeyError, TypeError):
        raise CollectionNotFound(
            f"Collection {collection_id!r} does not exist; available: {', '.join(COLLECTIONS)}."
        ) from None


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone holding ``(lon, lat)`` (326xx north, 327xx south)."""
    zone = int(np.floor((((lon + 180.0) % 360.0)) / 6.0)) + 1
    zone = min(max(zone, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


# --------------------------------------------------------------------------------------------
# Dates


def collection_dates(spec: CollectionSpec, start: datetime, end: datetime) -> list[datetime]:
    """Acquisition dates in the half-open interval ``[start, end)`` (all UTC midnights)."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    step = timedelta(days=spec.revisit_days)
    k0 = max(0, int(np.ceil((start - spec.epoch) / step)))
    out = []
    d = spec.epoch + k0 * step
    while d < end:
        if d >= start:
            out.append(d)
        d += step
    return out


def _date_index(spec: CollectionSpec, dates: Sequence[datetime]) -> np.ndarray:
    return np.array([(d - spec.epoch).days for d in dates], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Hashing and smooth noise (all vectorised, platform-independent integer arithmetic)


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> _U64(33))
    h = h * _U64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> _U64(33))


def _hash01(*keys: np.ndarray | int, seed: int) -> np.ndarray:
    """Uniform floats in [0, 1) from integer keys (broadcast together)."""
    arrays = [np.asarray(k, dtype=np.int64).view(np.uint64) for k in keys]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    h = np.full(shape, _U64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    primes = (0xA24BAED4963EE407, 0x9FB21C651E98DF25, 0xD6E8FEB86659FD93, 0xC2B2AE3D27D4EB4F)
    with np.errstate(over="ignore"):
        for i, a in enumerate(arrays):
            h = _mix(h ^ (a * _U64(primes[i % len(primes)])))
    return (h >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _value_noise(xs: np.ndarray, ys: np.ndarray, scale: float, seed: int) -> np.ndarray:
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
    lattice = _hash01(lat_x[None, :], lat_y[:, None], seed=seed)
    cx = ix - x0
    cy = iy - y0
    v00 = lattice[cy[:, None], cx[None, :]]
    v01 = lattice[cy[:, None], cx[None, :] + 1]
    v10 = lattice[cy[:, None] + 1, cx[None, :]]
    v11 = lattice[cy[:, None] + 1, cx[None, :] + 1]
    top = v00 + (v01 - v00) * fx[None, :]
    bottom = v10 + (v11 - v10) * fx[None, :]
    return top + (bottom - top) * fy[:, None]


def _fbm(xs: np.ndarray, ys: np.ndarray, scales: Sequence[float], seed: int) -> np.ndarray:
    total = np.zeros((ys.size, xs.size))
    weight = 0.0
    for i, s in enumerate(scales):
        w = 0.5**i
        total += w * _value_noise(xs, ys, s, seed * 31 + i)
        weight += w
    return total / weight


_CLOUD_SCALES = (4000.0, 1500.0, 500.0, 150.0)


@cache
def _cloud_quantiles() -> np.ndarray:
    """Empirical quantiles of the cloud noise, so a threshold yields a chosen cover fraction."""
    coords = np.arange(0, 120_000, 150.0) + 75.0
    sample = _fbm(coords, coords, _CLOUD_SCALES, seed=12345)
    return np.quantile(sample, np.linspace(0.0, 1.0, 1001))


def _to_uniform(values: np.ndarray) -> np.ndarray:
    q = _cloud_quantiles()
    return np.interp(values, q, np.linspace(0.0, 1.0, q.size))


# --------------------------------------------------------------------------------------------
# Cloud cover per date and tile


def tile_key(epsg: int, x: float, y: float) -> tuple[int, int, int]:
    """A 100 km UTM square standing for a Sentinel-2 tile: ``(epsg, col, row)``."""
    return (epsg, int(np.floor(x / 100_000.0)), int(np.floor(y / 100_000.0)))


def cloud_cover(spec: CollectionSpec, tile: tuple[int, int, int], dates: Sequence[datetime]) -> np.ndarray:
    """``eo:cloud_cover`` (percent) of each date over ``tile``; zero for radar collections."""
    if spec.kind != "optical" or not dates:
        return np.zeros(len(dates))
    days = _date_index(spec, dates)
    u = _hash01(days, tile[0], tile[1], tile[2], seed=7)
    cover = np.where(
        u < 0.45,
        u / 0.45 * 4.0,
        np.where(u < 0.75, 4.0 + (u - 0.45) / 0.30 * 46.0, 50.0 + (u - 0.75) / 0.25 * 50.0),
    )
    return np.round(cover, 2)


# --------------------------------------------------------------------------------------------
# Pixel generation

# Surface reflectance spectra (B01..B12 without SCL).
_WATER = np.array([0.070, 0.060, 0.050, 0.030, 0.025, 0.020, 0.018, 0.015, 0.014, 0.010, 0.005, 0.003])
_SOIL = np.array([0.080, 0.100, 0.140, 0.180, 0.200, 0.220, 0.230, 0.250, 0.260, 0.270, 0.330, 0.280])
_VEG = np.array([0.030, 0.040, 0.070, 0.035, 0.090, 0.280, 0.360, 0.400, 0.410, 0.400, 0.200, 0.100])
_CLOUD = np.array([0.600, 0.620, 0.640, 0.650, 0.650, 0.660, 0.660, 0.670, 0.670, 0.500, 0.450, 0.350])
_OPTICAL_INDEX = {n: i for i, n in enumerate(b.name for b in _S2_BANDS[:12])}


def _block_coords(coords: np.ndarray, gsd: float) -> np.ndarray:
    """Centre of the native ``gsd`` block holding each 10 m pixel centre."""
    if gsd <= 10:
        return coords
    return np.floor(coords / gsd) * gsd + gsd / 2.0


def _surface(xs: np.ndarray, ys: np.ndarray, doys: np.ndarray, southern: bool):
    """Land-cover fields: water mask (y, x) and vegetation fraction (t, y, x)."""
    lc = _fbm(xs, ys, (3000.0, 900.0, 300.0), seed=1)
    water = lc < 0.33
    # Parcels of 200 m carry their own crop calendar and peak greenness.
    px = np.floor(xs / 200.0).astype(np.int64)
    py = np.floor(ys / 200.0).astype(np.int64)
    phase = _hash01(px[None, :], py[:, None], seed=2) * 365.0
    peak = 0.55 + 0.45 * _hash01(px[None, :], py[:, None], seed=3)
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
    days = _date_index(spec, dates)
    doys = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)
    southern = epsg // 100 == 327
    cover = (cloud_cover(spec, tile, dates) / 100.0).astype(np.float32)[:, None, None]
    cirrus = (_hash01(days, seed=11) < 0.25)[:, None, None]
    # Clouds live on the 20 m grid of SCL, so every band agrees with SCL about them.
    cx, _ = _blocks(xs, 20.0)
    cy, _ = _blocks(ys, 20.0)
    clouds20 = np.stack([_to_uniform(_fbm(cx, cy, _CLOUD_SCALES, seed=1000 + int(d))) for d in days]
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
                u = np.stack([_to_uniform(_fbm(qx, qy, _CLOUD_SCALES, seed=1000 + int(d))) for d in days]
                             ).astype(np.float32) if len(days) else np.zeros((0, by.size, bx.size), np.float32)
            grain = _hash01(np.floor(bx / gsd).astype(np.int64)[None, :],
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
    days = _date_index(spec, dates)
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
        u = _hash01(days[:, None, None], iy[None, :, None], ix[None, None, :], bi, seed=21)
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


# --------------------------------------------------------------------------------------------
# Property filters (load_collection ``properties``)

_COMPARE = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
}


def _eval_property(node_graph: dict, value: Any) -> bool:
    """Evaluate a small property-filter process graph (comparisons, and/or/not, between)."""
    graph = node_graph.get("process_graph", node_graph)
    results: dict[str, Any] = {}

    def arg(v: Any) -> Any:
        if hasattr(v, "from_parameter"):
            return value
        if hasattr(v, "from_node"):
            return run(v.from_node)
        if isinstance(v, dict) and "from_parameter" in v:
            return value
        if isinstance(v, dict) and "from_node" in v:
            return run(v["from_node"])
        return v

    def run(node_id: str) -> Any:
        if node_id not in results:
            node = graph[node_id]
            pid = node["process_id"] if isinstance(node, dict) else node.process_id
            args = {k: arg(v) for k, v in (node["arguments"] if isinstance(node, dict) else node.arguments).items()}
            if pid in _COMPARE:
                results[node_id] = _COMPARE[pid](args["x"], args["y"])
            elif pid == "between":
                ok = args["min"] <= args["x"] and (args["x"] < args["max"] if args.get("exclude_max") else args["x"] <= args["max"])
                results[node_id] = ok
            elif pid in ("and", "or"):
                results[node_id] = (args["x"] and args["y"]) if pid == "and" else (args["x"] or args["y"])
            elif pid == "not":
                results[node_id] = not args["x"]
            elif pid == "array_contains":
                results[node_id] = args["value"] in args["data"]
            else:
                raise ProcessParameterInvalid(f"Process {pid!r} is not supported in property filters.")
        return results[node_id]

    result_ids = [k for k, n in graph.items() if (n.get("result") if isinstance(n, dict) else n.result)]
    if not result_ids:
        raise ProcessParameterInvalid("Property filter has no result node.")
    return bool(run(result_ids[0]))


def filter_dates(spec: CollectionSpec, tile: tuple[int, int, int], dates: Sequence[datetime],
                 properties: dict) -> list[datetime]:
    """Dates whose item properties (``eo:cloud_cover``, ``platform``) pass all filters.

    Args:
        spec: The collection.
        tile: Tile key (for the cloud cover).
        dates: Candidate dates.
        properties: ``{property: {"process_graph": ...}}`` as in ``load_collection``.

    Raises:
        ProcessParameterInvalid: For an unknown property or unsupported filter process.
    """
    covers = cloud_cover(spec, tile, dates)
    keep = []
    for d, cc in zip(dates, covers):
        values = {"eo:cloud_cover": float(cc), "platform": spec.platform}
        ok = True
        for prop, cond in properties.items():
            if prop not in values:
                raise ProcessParameterInvalid(f"Unknown property {prop!r} in load_collection.")
            ok = ok and _eval_property(cond, values[prop])
        if ok:
            keep.append(d)
    return keep


# --------------------------------------------------------------------------------------------
# STAC metadata


def band_metadata(spec: CollectionSpec, name: str) -> dict:
    """``eo:bands``-style description of band ``name`` (unknown names get a bare entry)."""
    base = name.rsplit("-", 1)[-1]  # "S2-L2A-B02" -> "B02"
    for b in spec.bands:
        if b.name in (name, base):
            out: dict = {"name": name}
            if b.common_name:
                out["common_name"] = b.common_name
            if b.center_wavelength is not None:
                out["center_wavelength"] = b.center_wavelength
            out["gsd"] = b.gsd
            out["description"] = b.description
            return out
    return {"name": name}


def _extent(spec: CollectionSpec) -> dict:
    return {
        "spatial": {"bbox": [[-180.0, -84.0, 180.0, 84.0]]},
        "temporal": {"interval": [[spec.epoch.strftime("%Y-%m-%dT%H:%M:%SZ"), None]]},
    }


def collection_summary(spec: CollectionSpec) -> dict:
    """Short STAC Collection for ``GET /collections``."""
    return {
        "stac_version": "1.0.0",
        "type": "Collection",
        "id": spec.id,
        "title": spec.title,
        "description": spec.description,
        "license": "proprietary",
        "keywords": list(spec.keywords),
        "extent": _extent(spec),
        "links": [],
    }


# Data come in the UTM zone of each location ("auto UTM", as real Sentinel backends declare it).
_AUTO_UTM = {
    "$schema": "https://proj.org/schemas/v0.2/projjson.schema.json",
    "area": "World",
    "bbox": {"east_longitude": 180, "north_latitude": 84, "south_latitude": -80, "west_longitude": -180},
    "id": {"authority": "OGC", "code": "Auto42001", "version": "1.3"},
    "name": "AUTO 42001 (Universal Transverse Mercator)",
}


def collection_metadata(spec: CollectionSpec) -> dict:
    """Full STAC Collection for ``GET /collections/{id}`` with ``cube:dimensions``."""
    bands = [band_metadata(spec, b.name) for b in spec.bands]
    out = collection_summary(spec)
    out["stac_extensions"] = [
        "https://stac-extensions.github.io/datacube/v2.2.0/schema.json",
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    ]
    out["cube:dimensions"] = {
        "x": {"type": "spatial", "axis": "x", "extent": [166021.44, 833978.56],
              "step": 10, "reference_system": _AUTO_UTM},
        "y": {"type": "spatial", "axis": "y", "extent": [0.0, 10000000.0], "step": 10,
              "reference_system": _AUTO_UTM},
        "t": {"type": "temporal", "extent": _extent(spec)["temporal"]["interval"][0],
              "step": f"P{spec.revisit_days}D"},
        "bands": {"type": "bands", "values": spec.band_names},
    }
    summaries: dict = {
        "eo:bands": bands,
        "bands": bands,
        "platform": [spec.platform],
        "instruments": list(spec.instruments),
        "gsd": sorted({b.gsd for b in spec.bands}),
    }
    if spec.kind == "optical":
        summaries["eo:cloud_cover"] = {"minimum": 0, "maximum": 100}
    out["summaries"] = summaries
    out["providers"] = [{"name": "eoextract", "roles": ["producer", "host"],
                         "description": "Synthetic data generated on request."}]
    return out
