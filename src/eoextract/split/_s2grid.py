"""A production tile grid on Sentinel-2 tiles: sub-tiles of each MGRS 100 km square in its
UTM zone, computed offline with ``mgrs``, persisted so a resumed run reuses it.

How the grid is made, per UTM zone and hemisphere (one EPSG code, 326xx/327xx):

* the zone's region is where ``mgrs`` places points in that zone (so Norway's and
  Svalbard's exceptions come with it), built from 3° x one latitude band cells;
* the zone's UTM plane is cut into the MGRS 100 km squares and each square into sub-tiles
  of ``tile_size`` metres from its south-west corner (the last row and column of a square
  are narrower when ``tile_size`` does not divide 100 km);
* each sub-tile is cut to the zone's region, so the tiles of all zones form a partition
  (up to the reprojection of zone borders);
* a sub-tile left smaller than ``min_fraction`` of a full tile (at a zone border or a
  square's edge) is merged into the neighbour it shares the longest edge with.

Each tile keeps its zone's EPSG code and its UTM bounds snapped outward to ``resolution``
(``west``, ``south``, ``east``, ``north``), which is what a job's ``spatial_extent`` needs;
its geometry is in the AOI's CRS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pyproj
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from eoextract._util.files import atomic_path
from eoextract.errors import ConfigurationError
from eoextract.split._aoi import parse_aoi, reproject, reproject_many, require_crs
from eoextract.split._splitters import s2_tile

logger = logging.getLogger(__name__)

_LL = pyproj.CRS.from_epsg(4326)
_SQUARE = 100_000.0
_SOUTH, _NORTH = -80.0, 84.0
_META_KEY = b"eoextract:grid"
_COLUMNS = ["tile_id", "mgrs_tile", "epsg", "west", "south", "east", "north"]


def _band_edges() -> list[float]:
    return [*np.arange(_SOUTH, 72.0 + 1, 8.0).tolist(), _NORTH]


def _zone_regions(bounds: tuple[float, float, float, float]) -> dict[int, BaseGeometry]:
    """Lon/lat region of each UTM EPSG meeting ``bounds`` (within [-180, 180])."""
    minx, miny, maxx, maxy = bounds
    bands = _band_edges()
    cells: dict[int, list[BaseGeometry]] = defaultdict(list)
    lon0 = math.floor(minx / 3.0) * 3.0
    lon1 = math.ceil(maxx / 3.0) * 3.0
    for lo in np.arange(lon0, lon1, 3.0):
        for s, n in zip(bands[:-1], bands[1:]):
            if n <= miny or s >= maxy:
                continue
            _, epsg = s2_tile((s + n) / 2.0, lo + 1.5)
            cells[epsg].append(box(lo, s, lo + 3.0, n))
    return {epsg: shapely.union_all(c) for epsg, c in cells.items()}


def _square_edges(lo: float, hi: float, step: float) -> np.ndarray:
    """Sub-tile edges between ``lo`` and ``hi``: every square edge and every ``step`` from it."""
    first = math.floor(lo / _SQUARE) * _SQUARE
    last = math.ceil(hi / _SQUARE) * _SQUARE
    edges = set()
    for sq in np.arange(first, last, _SQUARE):
        edges.update((sq + np.arange(0.0, _SQUARE, step)).tolist())
    edges.add(last)
    return np.array(sorted(edges))


def _merge_small(cells: dict[tuple[int, int], BaseGeometry], full: float, min_fraction: float,
                 square: dict[tuple[int, int], tuple[float, float]]
                 ) -> dict[tuple[int, int], tuple[int, int]]:
    """Cell -> the cell whose tile it joins.

    A small cell joins the big enough neighbour it shares the longest edge with (one in its
    own 100 km square first); a small cell with only small neighbours then joins the
    biggest tile one of them joined.
    """
    area = {k: g.area for k, g in cells.items()}
    limit = min_fraction * full
    small = sorted((k for k, a in area.items() if a < limit), key=lambda c: (area[c], c))
    target = {k: k for k in cells}

    def neighbours(k: tuple[int, int]) -> list[tuple[int, int]]:
        return [n for n in ((k[0] - 1, k[1]), (k[0] + 1, k[1]), (k[0], k[1] - 1), (k[0], k[1] + 1))
                if n in cells and cells[k].intersection(cells[n]).length > 0]

    for k in small:
        big = [n for n in neighbours(k) if area[n] >= limit]
        if big:
            target[k] = max(big, key=lambda n: (square[n] == square[k],
                                                cells[k].intersection(cells[n]).length, n))
    for _ in range(4):
        group_area: dict[tuple[int, int], float] = defaultdict(float)
        receivers = set()
        for k, t in target.items():
            group_area[t] += area[k]
            if t != k:
                receivers.add(t)
        changed = False
        for k in small:
            if target[k] != k or group_area[k] >= limit or k in receivers:
                continue
            groups = {target[n] for n in neighbours(k) if target[n] != k}
            if groups:
                target[k] = max(groups, key=lambda t: (group_area[t], t))
                changed = True
        if not changed:
            break
    return target


class Sentinel2Grid:
    """Sub-tiles of Sentinel-2 (MGRS) tiles in their UTM EPSG, small edge tiles merged.

    Use it as ``split_area(aoi, tile_grid=Sentinel2Grid(20_000, path=...))``. With a
    ``path`` the tiles are written there (GeoParquet) on the first call and read back on
    the next ones, as long as the AOI and the settings are the same.

    Args:
        tile_size: Sub-tile edge in metres (at most 100 km, a multiple of ``resolution``).
        min_fraction: Sub-tiles smaller than this fraction of a full one are merged.
        resolution: Pixel size the UTM bounds are snapped outward to (10 m: Sentinel-2's grid).
        path: Where the grid is kept (see :meth:`beside`); None keeps nothing.
    """

    accepts_crs = True

    def __init__(self, tile_size: float = 20_000.0, *, min_fraction: float = 0.25,
                 resolution: float = 10.0, path: str | Path | None = None) -> None:
        if not (isinstance(tile_size, (int, float, np.number)) and 0 < tile_size <= _SQUARE):
            raise ConfigurationError(f"tile_size must be within (0, 100000] metres, got {tile_size!r}")
        if not resolution > 0 or abs(tile_size / resolution - round(tile_size / resolution)) > 1e-9:
            raise ConfigurationError(
                f"tile_size {tile_size} must be a whole number of pixels of {resolution} m")
        if not 0.0 <= min_fraction < 1.0:
            raise ConfigurationError(f"min_fraction must be within [0, 1), got {min_fraction!r}")
        self.tile_size = float(tile_size)
        self.min_fraction = float(min_fraction)
        self.resolution = float(resolution)
        self.path = Path(path) if path is not None else None

    @classmethod
    def beside(cls, job_db: str | Path, tile_size: float = 20_000.0, **options: Any) -> Sentinel2Grid:
        """A grid kept next to a job database file: ``jobs.csv`` -> ``jobs.grid.parquet``.

        ``sqlite:///path`` URLs count as their file; other URLs need an explicit ``path``.
        """
        text = str(job_db)
        if text.startswith("sqlite:///"):
            text = text[len("sqlite:///"):]
        elif "://" in text:
            raise ConfigurationError(
                f"{job_db!r} is not a file; give Sentinel2Grid(path=...) for the grid")
        db = Path(text)
        return cls(tile_size, path=db.with_name(f"{db.stem}.grid.parquet"), **options)

    @property
    def crs(self) -> None:
        """None: the tiles are in several UTM zones (each tile's ``epsg`` column says which)."""
        return None

    def _settings(self) -> dict[str, float]:
        return {"tile_size": self.tile_size, "min_fraction": self.min_fraction,
                "resolution": self.resolution}

    def get_tiles(self, geometry: Any, crs: Any = None) -> gpd.GeoDataFrame:
        """The tiles meeting the AOI, in the AOI's CRS, sorted by ``tile_id``.

        Columns: ``tile_id`` (MGRS tile, sub-tile column and row, e.g. ``31UFS_0203``),
        ``mgrs_tile``, ``epsg``, and the UTM bounds ``west``, ``south``, ``east``, ``north``.

        Raises:
            ConfigurationError: Without an AOI CRS, outside 80°S..84°N, or when ``path``
                holds a grid made for another AOI or other settings.
        """
        geom, aoi_crs = parse_aoi(geometry, crs)
        aoi_crs = require_crs(aoi_crs, "the Sentinel-2 grid must know where on Earth it lies")
        fingerprint = hashlib.sha256(shapely.to_wkb(shapely.normalize(geom)) +
                                     aoi_crs.to_wkt().encode()).hexdigest()
        if self.path is not None and self.path.exists():
            return self._load(fingerprint)
        tiles = self._compute(geom, aoi_crs)
        if self.path is not None:
            self._save(tiles, fingerprint)
        return tiles

    # ----------------------------------------------------------------- persistence

    def _load(self, fingerprint: str) -> gpd.GeoDataFrame:
        assert self.path is not None
        meta = (pq.read_schema(self.path).metadata or {}).get(_META_KEY)
        stored = json.loads(meta) if meta else {}
        if stored.get("settings") != self._settings() or stored.get("aoi") != fingerprint:
            raise ConfigurationError(
                f"{self.path} holds a grid made for another area of interest or other settings "
                f"({stored.get('settings')}); remove it, or give another path")
        logger.info("reusing the tile grid in %s", self.path)
        return gpd.read_parquet(self.path)

    def _save(self, tiles: gpd.GeoDataFrame, fingerprint: str) -> None:
        assert self.path is not None
        meta = json.dumps({"settings": self._settings(), "aoi": fingerprint}).encode()
        with atomic_path(self.path) as tmp:
            tiles.to_parquet(tmp, index=False)
            table = pq.read_table(tmp)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: meta})
            pq.write_table(table, tmp)
        logger.info("wrote %d tile(s) to %s", len(tiles), self.path)

    # ----------------------------------------------------------------- computing

    def _compute(self, geom: BaseGeometry, aoi_crs: pyproj.CRS) -> gpd.GeoDataFrame:
        ll = reproject(geom, aoi_crs, _LL)
        minx, miny, maxx, maxy = ll.bounds
        if miny < _SOUTH or maxy > _NORTH:
            raise ConfigurationError(
                "the Sentinel-2 grid covers 80°S to 84°N (UTM zones); the area reaches "
                f"{miny:.2f}..{maxy:.2f}° latitude")
        margin_lat = 3.0 * self.tile_size / 110_000.0 + 0.1
        coslat = max(math.cos(math.radians(max(abs(miny), abs(maxy)) + margin_lat)), 0.05)
        margin_lon = min(margin_lat / coslat, 180.0)
        frames = []
        for part in getattr(ll, "geoms", [ll]):
            frames.append(self._part_regions(part, margin_lat, margin_lon))
        regions: dict[int, list[BaseGeometry]] = defaultdict(list)
        for found in frames:
            for epsg, region in found.items():
                regions[epsg].append(region)
        rows: list[dict[str, Any]] = []
        for epsg in sorted(regions):
            region_ll = shapely.union_all(regions[epsg])
            aoi_zone = ll.intersection(region_ll)
            if aoi_zone.is_empty or aoi_zone.area <= 1e-12 * ll.area:
                continue
            rows.extend(self._zone_tiles(epsg, region_ll, aoi_zone, aoi_crs))
        if not rows:
            return gpd.GeoDataFrame({c: [] for c in _COLUMNS}, geometry=[], crs=aoi_crs)
        out = gpd.GeoDataFrame(rows, geometry="geometry", crs=aoi_crs)
        out = out[[*_COLUMNS, "geometry"]].sort_values("tile_id").reset_index(drop=True)
        out["epsg"] = out["epsg"].astype("int64")
        logger.info("the area meets %d Sentinel-2 grid tile(s) in %d UTM zone(s)",
                    len(out), out["epsg"].nunique())
        return out

    @staticmethod
    def _part_regions(part: BaseGeometry, margin_lat: float, margin_lon: float) -> dict[int, BaseGeometry]:
        minx, miny, maxx, maxy = part.bounds
        south, north = max(miny - margin_lat, _SOUTH), min(maxy + margin_lat, _NORTH)
        west, east = minx - margin_lon, maxx + margin_lon
        windows = [(max(west, -180.0), min(east, 180.0))]
        if west < -180.0:
            windows.append((max(west + 360.0, -180.0), 180.0))
        if east > 180.0:
            windows.append((-180.0, min(east - 360.0, 180.0)))
        found: dict[int, list[BaseGeometry]] = defaultdict(list)
        for w, e in windows:
            for epsg, region in _zone_regions((w, south, e, north)).items():
                found[epsg].append(region)
        return {epsg: shapely.union_all(r) for epsg, r in found.items()}

    def _zone_tiles(self, epsg: int, region_ll: BaseGeometry, aoi_ll: BaseGeometry,
                    aoi_crs: pyproj.CRS) -> list[dict[str, Any]]:
        utm = pyproj.CRS.from_epsg(epsg)
        region = reproject(shapely.segmentize(region_ll, 0.01), _LL, utm)
        aoi = reproject(aoi_ll, _LL, utm)
        if aoi.is_empty:
            return []
        n = self.tile_size
        minx, miny, maxx, maxy = aoi.bounds
        xs = _square_edges(minx - 2 * n, maxx + 2 * n, n)
        ys = _square_edges(miny - 2 * n, maxy + 2 * n, n)
        x0, y0 = np.meshgrid(xs[:-1], ys[:-1], indexing="ij")
        x1, y1 = np.meshgrid(xs[1:], ys[1:], indexing="ij")
        boxes = shapely.box(x0.ravel(), y0.ravel(), x1.ravel(), y1.ravel())
        shapely.prepare(region)
        inside = shapely.contains_properly(region, boxes)
        clipped = boxes.copy()
        clipped[~inside] = shapely.intersection(boxes[~inside], region)
        index = [(i, j) for i in range(len(xs) - 1) for j in range(len(ys) - 1)]
        cells = {k: g for k, g in zip(index, clipped) if not g.is_empty and g.area > 0}
        square = {k: (math.floor(xs[k[0]] / _SQUARE), math.floor(ys[k[1]] / _SQUARE)) for k in cells}
        target = _merge_small(cells, n * n, self.min_fraction, square)
        members: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        for k, t in target.items():
            members[t].append(k)
        transformer = pyproj.Transformer.from_crs(utm, _LL, always_xy=True)
        per_square = math.ceil(_SQUARE / n)
        width = max(2, len(str(per_square - 1)))
        keys = list(members)
        tiles = np.array([cells[t] if len(members[t]) == 1 else shapely.union_all([cells[k] for k in members[t]])
                          for t in keys], dtype=object)
        shapely.prepare(aoi)
        hit = shapely.intersects(aoi, tiles) & ~shapely.touches(aoi, tiles)
        edge = hit & ~shapely.contains_properly(aoi, tiles)
        hit[edge] = shapely.area(shapely.intersection(tiles[edge], aoi)) > 0
        chosen = [t for t, h in zip(keys, hit) if h]
        geoms = reproject_many(tiles[hit], utm, aoi_crs)
        r = self.resolution
        anchors = shapely.point_on_surface(np.array([cells[t] for t in chosen], dtype=object))
        lons, lats = transformer.transform(shapely.get_x(anchors), shapely.get_y(anchors))
        rows = []
        for t, tile, geom, lon, lat in zip(chosen, tiles[hit], geoms, lons, lats):
            mgrs_tile, _ = s2_tile(lat, lon)
            col = int(round((xs[t[0]] - math.floor(xs[t[0]] / _SQUARE) * _SQUARE) / n))
            row = int(round((ys[t[1]] - math.floor(ys[t[1]] / _SQUARE) * _SQUARE) / n))
            w, s, e, nn = tile.bounds
            rows.append({
                "tile_id": f"{mgrs_tile}_{col:0{width}d}{row:0{width}d}",
                "mgrs_tile": mgrs_tile, "epsg": epsg,
                "west": math.floor(round(w / r, 6)) * r, "south": math.floor(round(s / r, 6)) * r,
                "east": math.ceil(round(e / r, 6)) * r, "north": math.ceil(round(nn / r, 6)) * r,
                "geometry": geom,
            })
        return rows
