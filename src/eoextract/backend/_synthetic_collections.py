"""Synthetic, deterministic collections served by the embedded openEO backend.

Two collections are offered:

* ``SENTINEL2_L2A``: 13 bands (B01-B09, B8A, B11, B12 as uint16 surface reflectance x 10000,
  and the scene classification ``SCL``), a date every 5 days, on the 10 m UTM grid of the
  requested location.
* ``SENTINEL1_GRD``: ``VV`` and ``VH`` backscatter (linear sigma0, float32), every 6 days.

Pixels are computed by :mod:`eoextract.backend._synthetic_pixels`, so the same request
always yields the same values, wherever on Earth it is; STAC metadata comes from
:mod:`eoextract.backend._collection_metadata`. This module holds what a collection is:
bands, acquisition dates, the cloud cover of each date and filters on item properties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from eoextract._util.utc import as_utc
from eoextract.backend._api_errors import CollectionNotFound, ProcessParameterInvalid
from eoextract.backend._noise import hash01


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
    start, end = as_utc(start), as_utc(end)
    step = timedelta(days=spec.revisit_days)
    k0 = max(0, int(np.ceil((start - spec.epoch) / step)))
    out = []
    d = spec.epoch + k0 * step
    while d < end:
        if d >= start:
            out.append(d)
        d += step
    return out


def date_index(spec: CollectionSpec, dates: Sequence[datetime]) -> np.ndarray:
    """Days since the collection's epoch of each date."""
    return np.array([(d - spec.epoch).days for d in dates], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Cloud cover per date and tile


def tile_key(epsg: int, x: float, y: float) -> tuple[int, int, int]:
    """A 100 km UTM square standing for a Sentinel-2 tile: ``(epsg, col, row)``."""
    return (epsg, int(np.floor(x / 100_000.0)), int(np.floor(y / 100_000.0)))


def cloud_cover(spec: CollectionSpec, tile: tuple[int, int, int], dates: Sequence[datetime]) -> np.ndarray:
    """``eo:cloud_cover`` (percent) of each date over ``tile``; zero for radar collections."""
    if spec.kind != "optical" or not dates:
        return np.zeros(len(dates))
    days = date_index(spec, dates)
    u = hash01(days, tile[0], tile[1], tile[2], seed=7)
    cover = np.where(
        u < 0.45,
        u / 0.45 * 4.0,
        np.where(u < 0.75, 4.0 + (u - 0.45) / 0.30 * 46.0, 50.0 + (u - 0.75) / 0.25 * 50.0),
    )
    return np.round(cover, 2)


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
