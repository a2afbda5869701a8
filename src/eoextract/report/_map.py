"""The status map of a run: job and sample footprints coloured by their job's status.

:func:`map_layers` gathers what is drawn, in EPSG:4326: the jobs' footprints (the job row's
geometry, or the hull of its samples when the row holds a GeoJSON FeatureCollection as
openeo-gfmap's job dataframes do), the samples of each job, the extracted items and, for
context, the outlines of the H3 cells or Sentinel-2 tiles the jobs belong to (from an
``h3index`` or ``tile`` column or sample property, else the S2 tile of each job's centre,
computed offline with ``mgrs``). :func:`map_figure` draws them so that every footprint stays
visible whatever the extent: a footprint smaller than :data:`MIN_MARKER_PX` pixels on the
map is also drawn as a marker at its centre.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from eoextract.report._plots import STATUS_COLORS

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

#: A footprint narrower and lower than this many pixels also gets a marker at its centre.
MIN_MARKER_PX = 8.0
#: Margin around the footprints, as a share of their extent on each side.
MARGIN = 0.08
#: Smallest extent shown, in degrees (about 2 km), so one tiny job is not blown up.
MIN_SPAN_DEG = 0.02
#: Most context outlines drawn (H3 cells or S2 tiles); above it, none are drawn.
MAX_CONTEXT = 400
_OTHER = "#999999"
#: Draw order of statuses (later on top): failures stay visible among many finished jobs.
_DRAW_ORDER = {"finished": 0, "skipped": 1, "not_started": 2, "error": 9, "start_failed": 9, "canceled": 8}


@dataclass(frozen=True)
class MapLayers:
    """What the status map shows, each layer a GeoDataFrame in EPSG:4326.

    Attributes:
        jobs: ``job_key``, ``status``, ``geometry``: one footprint per job.
        samples: ``job_key``, ``status``, ``geometry``: the samples of each job.
        items: ``id``, ``job_key``, ``status``, ``geometry``: extracted item footprints.
        context: ``kind`` (``H3 cell`` or ``S2 tile``), ``name``, ``geometry``.
        extent: ``(west, south, east, north)`` of jobs, samples and items with a margin.
    """

    jobs: gpd.GeoDataFrame
    samples: gpd.GeoDataFrame
    items: gpd.GeoDataFrame
    context: gpd.GeoDataFrame
    extent: tuple[float, float, float, float]

    @property
    def statuses(self) -> list[str]:
        """Statuses present on the map, in status-model order."""
        from eoextract.report._summary import status_order

        values = pd.concat([self.jobs["status"], self.samples["status"], self.items["status"]])
        return status_order(values.dropna().unique())


def _gdf(rows: list[dict[str, Any]], columns: list[str]) -> gpd.GeoDataFrame:
    import geopandas as gpd

    return gpd.GeoDataFrame(rows, columns=[*columns, "geometry"], geometry="geometry", crs="EPSG:4326")


def _parse(value: Any) -> Any:
    """A GeoJSON text as a dict, a WKT text as a geometry; anything else unchanged."""
    if isinstance(value, str):
        text = value.lstrip()
        try:
            if text.startswith("{"):
                return json.loads(text)
            import shapely

            return shapely.from_wkt(text) if text else None
        except Exception:  # noqa: BLE001 - text that is no geometry: no footprint
            return None
    return value


def _crs_of(collection: Mapping[str, Any]) -> Any:
    crs = collection.get("crs")
    if isinstance(crs, Mapping):
        return (crs.get("properties") or {}).get("name")
    return None


def _to_4326(geoms: list[Any], crs: Any) -> list[Any]:
    if crs is None or not geoms:
        return geoms
    import geopandas as gpd

    try:
        return list(gpd.GeoSeries(geoms, crs=crs).to_crs(4326))
    except Exception as exc:  # noqa: BLE001 - an unknown CRS leaves the map without these
        logger.debug("cannot reproject footprints from %s: %s", crs, exc)
        return []


def _job_shapes(value: Any, crs: Any) -> tuple[Any, list[Any], dict[str, Any]]:
    """The job's footprint, its samples' geometries and the first sample's properties."""
    import shapely
    from shapely.geometry import shape

    value = _parse(value)
    if isinstance(value, Mapping):
        if value.get("type") == "FeatureCollection":
            feats = [f for f in value.get("features") or [] if isinstance(f, Mapping) and f.get("geometry")]
            samples = []
            for f in feats:
                try:
                    samples.append(shape(f["geometry"]))
                except (ValueError, TypeError, AttributeError, KeyError):
                    continue
            samples = _to_4326(samples, _crs_of(value))
            hull = shapely.convex_hull(shapely.GeometryCollection(samples)) if samples else None
            return hull, samples, dict(feats[0].get("properties") or {}) if feats else {}
        try:
            value = shape(value)
        except (ValueError, TypeError, AttributeError, KeyError):
            return None, [], {}
    if isinstance(value, shapely.Geometry) and not value.is_empty:
        found = _to_4326([value], crs)
        return (found[0] if found else None), [], {}
    return None, [], {}


def map_layers(table: pd.DataFrame, items: Any = None, *,
               item_jobs: Mapping[str, str] | None = None) -> MapLayers | None:
    """The layers of the status map, or ``None`` when nothing has a footprint.

    Args:
        table: The job table as :meth:`~eoextract.jobs.db.JobDatabase.read` returns it
            (``status``, ``geometry`` and the user's columns, indexed by job key).
        items: GeoDataFrame of item footprints (:func:`~eoextract.report.footprints`).
        item_jobs: Item id → job key, to colour items by their job's status.
    """
    crs = getattr(table, "crs", None) if hasattr(table, "geometry") else None
    status = table["status"].astype(str) if "status" in table.columns else pd.Series("?", index=table.index)
    jobs, samples, cells, tiles = [], [], [], []
    cell_col = table["h3index"] if "h3index" in table.columns else None
    tile_col = table["tile"] if "tile" in table.columns else None
    if "geometry" in table.columns:
        values = table["geometry"]
        if crs is not None:  # a GeoDataFrame: reprojected at once
            values = table.geometry.to_crs(4326) if table.geometry.crs is not None else table.geometry
            crs = None
        for key, value in values.items():
            job, parts, props = _job_shapes(value, crs)
            if job is None:
                continue
            st = status.get(key, "?")
            jobs.append({"job_key": str(key), "status": st, "geometry": job})
            samples.extend({"job_key": str(key), "status": st, "geometry": g} for g in parts)
            cell = cell_col.get(key) if cell_col is not None else props.get("h3index")
            tile = tile_col.get(key) if tile_col is not None else props.get("tile")
            if isinstance(cell, str) and cell:
                cells.append(cell)
            elif isinstance(tile, str) and tile:
                tiles.append(tile)
    jobs_gdf = _gdf(jobs, ["job_key", "status"])
    samples_gdf = _gdf(samples, ["job_key", "status"])
    items_gdf = _items_layer(items, item_jobs or {}, status)
    if not (len(jobs_gdf) or len(items_gdf)):
        return None
    if not cells and not tiles:
        tiles = _centre_tiles(pd.concat([jobs_gdf.geometry, items_gdf.geometry]))
    context = _context(cells, tiles)
    extent = _extent([jobs_gdf, samples_gdf, items_gdf])
    return MapLayers(jobs_gdf, samples_gdf, items_gdf, context, extent)


def _items_layer(items: Any, item_jobs: Mapping[str, str], status: pd.Series) -> gpd.GeoDataFrame:
    if items is None or not len(items):
        return _gdf([], ["id", "job_key", "status"])
    keys = [item_jobs.get(str(i)) for i in items["id"]]
    rows = [{"id": i, "job_key": k, "status": status.get(k, "finished") if k is not None else "finished",
             "geometry": g} for i, k, g in zip(items["id"], keys, items.geometry)]
    return _gdf(rows, ["id", "job_key", "status"])


def _centre_tiles(geoms: pd.Series) -> list[str]:
    from eoextract.split import s2_tile

    tiles = []
    for g in geoms:
        if g is None or g.is_empty:
            continue
        c = g.centroid
        try:
            tiles.append(s2_tile(c.y, c.x)[0])
        except Exception:  # noqa: BLE001 - no tile for this point
            continue
    return tiles


def _context(cells: list[str], tiles: list[str]) -> gpd.GeoDataFrame:
    """Outlines of the H3 cells and S2 tiles (MGRS 100 km squares) named; none when there are
    more than :data:`MAX_CONTEXT`."""
    from shapely.geometry import Polygon

    rows: list[dict[str, Any]] = []
    cells, tiles = list(dict.fromkeys(cells)), list(dict.fromkeys(tiles))
    if len(cells) + len(tiles) > MAX_CONTEXT:  # a grid of outlines would hide the footprints
        return _gdf(rows, ["kind", "name"])
    for cell in cells:
        try:
            import h3

            ring = [(lng, lat) for lat, lng in h3.cell_to_boundary(cell)]
        except Exception:  # noqa: BLE001 - not an H3 cell id
            continue
        rows.append({"kind": "H3 cell", "name": cell, "geometry": Polygon(ring)})
    for tile in tiles:
        ring = _mgrs_square(tile)
        if ring:
            rows.append({"kind": "S2 tile", "name": tile, "geometry": Polygon(ring)})
    return _gdf(rows, ["kind", "name"])


def _mgrs_square(tile: str) -> list[tuple[float, float]] | None:
    """Corners (lon, lat) of an MGRS 100 km square, along its edges every 20 km."""
    import mgrs

    m = mgrs.MGRS()
    steps = [f"{v:05d}" for v in (0, 20000, 40000, 60000, 80000, 99999)]
    edge = ([(e, steps[0]) for e in steps] + [(steps[-1], n) for n in steps[1:]]
            + [(e, steps[-1]) for e in steps[-2::-1]] + [(steps[0], n) for n in steps[-2:0:-1]])
    try:
        with warnings.catch_warnings():  # corners past the latitude band's edge: still drawn
            warnings.simplefilter("ignore", RuntimeWarning)
            return [tuple(reversed(m.toLatLon(f"{tile}{e}{n}"))) for e, n in edge]  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - not an MGRS square id
        return None


def _extent(layers: list[gpd.GeoDataFrame]) -> tuple[float, float, float, float]:
    bounds = np.array([layer.total_bounds for layer in layers if len(layer)])
    west, south = np.nanmin(bounds[:, 0]), np.nanmin(bounds[:, 1])
    east, north = np.nanmax(bounds[:, 2]), np.nanmax(bounds[:, 3])
    cx, cy = (west + east) / 2, (south + north) / 2
    half_w = max(east - west, MIN_SPAN_DEG) * (0.5 + MARGIN)
    half_h = max(north - south, MIN_SPAN_DEG) * (0.5 + MARGIN)
    return (float(cx - half_w), float(max(-90.0, cy - half_h)), float(cx + half_w), float(min(90.0, cy + half_h)))


def _fit(extent: tuple[float, float, float, float], box_ratio: float) -> tuple[float, float, float, float]:
    """``extent`` widened in one direction so that a degree of latitude is drawn 1/cos(lat)
    times as long as a degree of longitude in an axes box ``box_ratio`` (width/height) wide."""
    west, south, east, north = extent
    stretch = 1.0 / max(0.05, math.cos(math.radians((south + north) / 2)))
    dx, dy = east - west, (north - south) * stretch
    if dx / dy < box_ratio:
        grow = (dy * box_ratio - dx) / 2
        west, east = west - grow, east + grow
    else:
        grow = (dx / box_ratio - dy) / stretch / 2
        south, north = max(-90.0, south - grow), min(90.0, north + grow)
    return west, south, east, north


def small_footprints(ax: Any, geoms: gpd.GeoSeries, min_px: float = MIN_MARKER_PX) -> np.ndarray:
    """Which footprints are smaller than ``min_px`` pixels both ways on ``ax`` as drawn."""
    if not len(geoms):
        return np.zeros(0, dtype=bool)
    b = geoms.bounds.to_numpy()
    lo = ax.transData.transform(b[:, [0, 1]])
    hi = ax.transData.transform(b[:, [2, 3]])
    size = np.abs(hi - lo)
    return (size[:, 0] < min_px) & (size[:, 1] < min_px)


def map_figure(layers: MapLayers, *, min_px: float = MIN_MARKER_PX) -> Figure:
    """The status map: context outlines, job footprints, samples and items coloured by their
    job's status, with markers for footprints too small to see, and a legend."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 7.5), dpi=100)  # fixed axes box: pixel sizes known before drawing
    rect = (0.08, 0.08, 0.66, 0.85)
    ax = fig.add_axes(rect)
    west, south, east, north = _fit(layers.extent, rect[2] * 10 / (rect[3] * 7.5))
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_autoscale_on(False)
    handles: list[Any] = []
    ctx = layers.context
    if len(ctx):
        ctx.boundary.plot(ax=ax, color="#8c8c8c", linewidth=0.7, linestyle="--", zorder=1, aspect=None)
        x0, x1 = ax.get_xlim()
        y0, y1 = ax.get_ylim()
        shown = ctx[ctx.intersects(_box(x0, y0, x1, y1))]
        if len(shown) <= 40:
            for name, g in zip(shown["name"], shown.geometry):
                p = g.representative_point()
                ax.annotate(name, (p.x, p.y), xytext=(0, 9), textcoords="offset points", fontsize=7,
                            color="#666666", ha="center", zorder=1, annotation_clip=True)
        for kind in ctx["kind"].unique():
            handles.append(Line2D([], [], color="#8c8c8c", linestyle="--", linewidth=0.7, label=kind))
    styles = [  # layer, face alpha, edge width, marker, marker size, zorder, legend label
        (layers.jobs, 0.18, 1.2, "o", 70, 2, "job footprint"),
        (layers.samples, 0.65, 0.6, "o", 16, 3, "sample"),
        (layers.items, 0.0, 0.5, "s", 24, 4, "extracted item"),
    ]
    for layer, alpha, width, marker, size, z, label in styles:
        if not len(layer):
            continue
        hollow = layer is layers.items  # items: outlines only, over their job and samples
        layer = layer.iloc[np.argsort([_DRAW_ORDER.get(s, 0) for s in layer["status"]], kind="stable")]
        colors = [STATUS_COLORS.get(s, _OTHER) for s in layer["status"]]
        edge = "#222222" if hollow else colors
        layer.plot(ax=ax, facecolor=[_rgba(c, alpha) for c in colors], edgecolor=edge, linewidth=width,
                   zorder=z, aspect=None)
        small = small_footprints(ax, layer.geometry, min_px)
        if small.any():
            pts = layer.geometry[small].representative_point()
            face = "none" if hollow else np.array(colors)[small]
            crowd = min(1.0, 300.0 / int(small.sum()))  # many markers: smaller, not overlapping
            ax.scatter(pts.x, pts.y, s=max(8.0, size * crowd), marker=marker, c=face, edgecolors="#222222",
                       linewidths=0.6 if crowd > 0.3 else 0.0, zorder=z + 2)
        handles.append(Line2D([], [], marker=marker, linestyle="none", markerfacecolor="#ffffff",
                              markeredgecolor="#222222", label=f"{label} ({len(layer)})"))
    handles += [Patch(facecolor=STATUS_COLORS.get(s, _OTHER), label=s) for s in layers.statuses]
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"Status map: {len(layers.jobs)} jobs, {len(layers.samples)} samples, "
                 f"{len(layers.items)} items", loc="left", fontsize=12)
    return fig


def _box(x0: float, y0: float, x1: float, y1: float) -> Any:
    from shapely.geometry import box

    return box(x0, y0, x1, y1)


def _rgba(color: str, alpha: float) -> tuple[float, float, float, float]:
    from matplotlib.colors import to_rgba

    return to_rgba(color, alpha)
