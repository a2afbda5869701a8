"""Patch to point: sample the patch files of a catalogue at their samples' geometries.

Each patch (a NetCDF data asset on ``t, y, x``, or a GeoTIFF: one band per variable, named
by its description, dated by its item) is read by a worker process, only the
window its sample covers, and sampled in one of three ways:

* ``centre``: the pixel holding the centroid of the sample geometry;
* ``mean``: the mean over the pixels whose centres lie inside the polygon (nodata pixels
  left out; a point geometry gives its pixel);
* ``all``: every pixel inside the polygon, one row each, with its ``x``/``y`` (patch CRS)
  and ``epsg``.

The rows (``sample_id, time``, one column per band, label columns, a WGS84 ``geometry``)
are written in patch order into one GeoParquet file; at most ``2 * processes`` patches are
in flight, so memory stays bounded whatever the catalogue's size.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eoextract.dataset._loader import (
    JOB_KEY_PROPERTY, _asset_path, _aux_asset, _data_asset, _job_rows)
from eoextract.dataset._patch_workers import in_process, in_processes, on_cluster
from eoextract.dataset._patch_files import aux_attributes, aux_raster, read_header, window_reader
from eoextract.dataset._selection import Selection, Source, item_epsg, select_items
from eoextract.errors import ConfigurationError, DatasetError

HOWS = ("centre", "mean", "all")


#: What is said of labels no row holds, after their names (the warning; the CLI's line).
EMPTY_LABELS_NOTE = "empty in every row: no item property, auxiliary file or job row holds them"


@dataclass(frozen=True)
class PatchPointsResult:
    """What :func:`patches_to_points` wrote."""

    path: Path
    rows: int
    patches: int
    skipped: int  #: samples skipped (outside their patch, no pixel inside)
    #: labels asked for that no row holds (no item property, auxiliary file or job row has them)
    empty_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Task:
    item_id: str
    path: str
    epsg: int | None
    samples: tuple[tuple[str, bytes], ...]  # (sample_id, WKB in WGS84)
    how: str
    labels: tuple[str, ...]
    properties: Mapping[str, Any]
    aux_path: str | None
    job_row: Mapping[str, Any] = field(default_factory=dict)
    time: str | None = None  #: the item's datetime (the date of a GeoTIFF patch)


def _window(x: np.ndarray, y: np.ndarray, geom: Any, how: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and columns of the pixels the geometry selects (``None``: outside the patch)."""
    import shapely

    dx = float(x[1] - x[0]) if x.size > 1 else 1.0
    dy = float(y[1] - y[0]) if y.size > 1 else -1.0
    x0, y0 = x[0] - dx / 2, y[0] - dy / 2

    def cell(px: float, py: float) -> tuple[np.ndarray, np.ndarray] | None:
        col, row = int(np.floor((px - x0) / dx)), int(np.floor((py - y0) / dy))
        if 0 <= row < y.size and 0 <= col < x.size:
            return np.array([row]), np.array([col])
        return None

    if how == "centre" or geom.geom_type in ("Point", "MultiPoint") or geom.area == 0:
        c = geom.centroid
        return cell(c.x, c.y)
    xx, yy = np.meshgrid(x, y)
    inside = shapely.contains_xy(geom, xx, yy)
    rows, cols = np.nonzero(inside)
    return (rows, cols) if rows.size else None


@functools.lru_cache(maxsize=32)
def _transformer(source: int, target: int) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(source, target, always_xy=True)


def _mode(values: np.ndarray) -> Any:
    uniq, counts = np.unique(values, return_counts=True)
    return uniq[int(np.argmax(counts))].item()


def _sample_patch(task: _Task) -> tuple[Any, list[str], str | None]:
    """Rows of one patch as a pyarrow table, warnings, and an error (``None``: fine)."""
    import pyarrow as pa
    import shapely

    head = read_header(task.path, item_id=task.item_id, kind="data", time=task.time)
    if head.epsg is not None and task.epsg is not None and head.epsg != task.epsg:
        return None, [], (f"{task.path} is in EPSG:{head.epsg} but its item {task.item_id!r} "
                          f"says EPSG:{task.epsg}")
    epsg = head.epsg or task.epsg
    if epsg is None:
        return None, [], f"{task.path} (item {task.item_id!r}) has no CRS"
    to_patch, to_wgs84 = _transformer(4326, epsg), _transformer(epsg, 4326)
    times = head.times if head.times.size else np.array([np.datetime64("NaT", "ns")])
    n_t = times.size
    columns: dict[str, list[Any]] = {}
    notes: list[str] = []
    aux_rasters = {n: aux_raster(task.aux_path, n) for n in task.labels}
    aux_attrs = aux_attributes(task.aux_path)
    with window_reader(head) as read_window:
        for sample_id, wkb in task.samples:
            geom = shapely.transform(shapely.from_wkb(wkb), lambda c: np.column_stack(
                to_patch.transform(c[:, 0], c[:, 1])))
            picked = _window(head.x, head.y, geom, task.how)
            if picked is None:
                notes.append(f"sample {sample_id!r} lies outside its patch {task.path} "
                             f"(item {task.item_id!r}); skipped")
                continue
            rows, cols = picked
            r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
            data = read_window(r0, r1, c0, c1)
            data = {v: (a if a.ndim == 3 else np.broadcast_to(a, (n_t, *a.shape)))[:, rows - r0, cols - c0]
                    for v, a in data.items()}  # (t, pixel)
            n_px = rows.size if task.how == "all" else 1
            add = columns.setdefault
            add("sample_id", []).extend([sample_id] * (n_t * n_px))
            add("time", []).append(np.repeat(times, n_px))
            for v, a in data.items():
                if task.how == "mean":
                    valid = a != head.nodata if head.nodata is not None else np.ones(a.shape, bool)
                    total = np.where(valid, a, 0).sum(axis=1, dtype="float64")
                    count = valid.sum(axis=1)
                    with np.errstate(invalid="ignore", divide="ignore"):
                        a = np.where(count > 0, total / np.maximum(count, 1), np.nan)
                add(v, []).append(a.reshape(-1))
            if task.how == "all":
                xs, ys = head.x[cols], head.y[rows]
                add("x", []).append(np.tile(xs, n_t))
                add("y", []).append(np.tile(ys, n_t))
                add("epsg", []).extend([epsg] * (n_t * n_px))
                lon, lat = to_wgs84.transform(xs, ys)
                points = shapely.points(lon, lat)
            elif task.how == "centre":
                lon, lat = to_wgs84.transform(head.x[cols], head.y[rows])
                points = shapely.points(lon, lat)
            else:
                points = np.array([shapely.from_wkb(wkb)])
            add("geometry", []).append(np.tile(shapely.to_wkb(points), n_t))
            for name in task.labels:
                raster = aux_rasters.get(name)
                if raster is not None:
                    picked_labels = raster[rows, cols]
                    value = picked_labels if task.how == "all" else [
                        _mode(picked_labels) if task.how == "mean" else picked_labels[0].item()]
                    add(name, []).append(np.tile(np.asarray(value), n_t))
                else:
                    value = next((s[name] for s in (task.properties, aux_attrs, head.attrs,
                                                    task.job_row) if name in s), None)
                    if isinstance(value, np.generic):
                        value = value.item()
                    add(name, []).extend([value] * (n_t * n_px))
    if not columns:
        return None, notes, None
    arrays = {}
    for name, parts in columns.items():
        if parts and isinstance(parts[0], np.ndarray):
            values = np.concatenate(parts)
            if name == "time":
                arrays[name] = pa.array(values.astype("datetime64[ns]")).cast(pa.timestamp("ns", "UTC"))
            elif name in head.variables and task.how != "mean" and head.nodata is not None:
                arrays[name] = pa.array(values, mask=values == head.nodata)
            elif name in head.variables and task.how == "mean":
                arrays[name] = pa.array(values, mask=np.isnan(values))
            else:
                arrays[name] = pa.array(values)
        else:
            arrays[name] = pa.array(parts)
    return pa.table(arrays), notes, None


def _geo_metadata() -> bytes:
    """GeoParquet 1.0 metadata of the WKB ``geometry`` column (OGC:CRS84, the default)."""
    return json.dumps({"version": "1.0.0", "primary_column": "geometry", "columns": {
        "geometry": {"encoding": "WKB", "geometry_types": []}}}).encode()


def _default_samples(item: Mapping[str, Any], sample_column: str) -> list[tuple[str, bytes]]:
    import shapely
    from shapely.geometry import shape

    geometry = item.get("geometry")
    if not geometry:
        raise DatasetError(f"item {item.get('id')!r} has no geometry; pass samples=",
                           item_id=str(item.get("id")))
    props = item.get("properties") or {}
    sample_id = str(props.get(sample_column) or item.get("id"))
    return [(sample_id, shapely.to_wkb(shape(geometry)))]


def _given_samples(samples: Any, sample_column: str) -> dict[str, list[bytes]]:
    import shapely

    if sample_column not in samples.columns:
        raise ConfigurationError(f"samples have no column {sample_column!r}")
    frame = samples.to_crs(4326) if samples.crs is not None else samples
    by_id: dict[str, list[bytes]] = {}
    for sid, geom in zip(frame[sample_column], frame.geometry):
        by_id.setdefault(str(sid), []).append(shapely.to_wkb(geom))
    return by_id


def _tasks(items: Iterable[Mapping[str, Any]], *, how: str, samples: Any, sample_column: str,
           labels: tuple[str, ...], asset: str | None, label_asset: str | None,
           job_rows: Mapping[str, Mapping[str, Any]]) -> Iterable[_Task]:
    given = _given_samples(samples, sample_column) if samples is not None else None
    for item in items:
        item_id = str(item.get("id"))
        props = dict(item.get("properties") or {})
        if given is None:
            pairs = _default_samples(item, sample_column)
        else:
            sid = str(props.get(sample_column) or item_id)
            pairs = [(sid, g) for g in given.get(sid, [])]
            if not pairs:
                continue
        aux_key = _aux_asset(item, label_asset)
        yield _Task(item_id=item_id, path=_asset_path(item, _data_asset(item, asset)),
                    epsg=item_epsg(item), samples=tuple(pairs), how=how, labels=labels,
                    properties={k: v for k, v in props.items() if k in labels},
                    aux_path=_asset_path(item, aux_key) if aux_key else None,
                    job_row={k: v for k, v in job_rows.get(str(props.get(JOB_KEY_PROPERTY)),
                                                           {}).items() if k in labels},
                    time=props.get("datetime") or props.get("start_datetime"))


def patches_to_points(
    catalogue: Source,
    output: str | os.PathLike[str],
    *,
    how: str = "centre",
    samples: Any = None,
    labels: Sequence[str] = (),
    sample_column: str = "sample_id",
    asset: str | None = None,
    label_asset: str | None = None,
    processes: int | None = None,
    job_db: Any = None,
    selection: Selection | None = None,
    client: Any = None,
    **criteria: Any,
) -> PatchPointsResult:
    """Sample the patches of a catalogue at their samples' geometries into one long
    GeoParquet table (``sample_id, time``, band columns, labels, ``geometry``).

    Args:
        catalogue: A catalogue, a stac-geoparquet file or item dicts (see
            :func:`~eoextract.dataset.open_patches`).
        output: The GeoParquet file written (replaced atomically).
        how: ``centre``, ``mean`` or ``all`` (see the module documentation).
        samples: A GeoDataFrame with ``sample_column`` and geometries, matched to items by
            their ``sample_column`` property; default: each item's own geometry.
        labels: Columns taken from the item's properties, else the auxiliary file (a raster
            variable is sampled at the same pixels; ``mean`` takes its most frequent value)
            or its attributes, else the data file's attributes.
        processes: Worker processes (default: all cores; 1 samples in this process).
        client: A ``dask.distributed.Client`` or a scheduler address (``tcp://...``): the
            patches are sampled on that cluster instead (its workers must reach the patch
            files by the same paths); ``processes`` is then ignored.
        job_db: A job database (object, path or URL) whose job rows give ``labels`` found
            nowhere else, by the items' ``eoextract:job_key`` (read only).
        selection: Which items (see :class:`~eoextract.dataset.Selection`), or its fields
            as keyword arguments.

    Raises:
        DatasetError: A patch whose CRS differs from its item's (names both), a file that
            cannot be read. A sample outside its patch only warns (``UserWarning``).
        ConfigurationError: An unknown ``how``, or ``output`` is a folder.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if how not in HOWS:
        raise ConfigurationError(f"how must be one of {', '.join(HOWS)}, not {how!r}")
    output = Path(output)
    if output.is_dir():
        raise ConfigurationError(f"{output} is a folder; give the path of the GeoParquet file to write")
    items: Iterable[Mapping[str, Any]] = select_items(catalogue, selection, **criteria)
    job_rows: Mapping[str, Mapping[str, Any]] = {}
    if job_db is not None and labels:
        items = list(items)
        job_rows = _job_rows(job_db, items)  # type: ignore[arg-type]
    tasks = _tasks(items, how=how, samples=samples, sample_column=sample_column,
                   labels=tuple(labels), asset=asset, label_asset=label_asset,
                   job_rows=job_rows)
    workers = processes or os.cpu_count() or 1
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.with_name(f".{output.name}.partial")
    writer: Any = None
    schema: Any = None
    rows = patches = skipped = 0
    unfilled = set(labels)  # labels not yet seen with a value

    def consume(task: _Task, result: tuple[Any, list[str], str | None]) -> None:
        nonlocal writer, schema, rows, patches, skipped
        table, notes, error = result
        if error is not None:
            raise DatasetError(error, item_id=task.item_id, path=task.path)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=3)
        skipped += len(notes)
        patches += 1
        if table is None:
            return
        if schema is None:
            meta = {**(table.schema.metadata or {}), b"geo": _geo_metadata()}
            schema = table.schema.with_metadata(meta)
            writer = pq.ParquetWriter(staging, schema, compression="zstd")
        try:
            table = table.select(schema.names).cast(schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
            raise DatasetError(f"{task.path} (item {task.item_id!r}) gives other columns than "
                               f"the patches before it ({exc})", item_id=task.item_id,
                               path=task.path) from exc
        writer.write_table(table)
        rows += table.num_rows
        unfilled.difference_update([n for n in unfilled if table.column(n).null_count < table.num_rows])

    if client is not None:
        results = on_cluster(_sample_patch, tasks, client)
    elif workers <= 1:
        results = in_process(_sample_patch, tasks)
    else:
        results = in_processes(_sample_patch, tasks, workers)
    try:
        for task, result in results:
            consume(task, result)
        if writer is None:
            raise DatasetError("no sample fell inside its patch; nothing written")
        writer.close()
        writer = None
        os.replace(staging, output)
    except BaseException:
        results.close()  # cancels what is still in flight
        if writer is not None:
            writer.close()
        staging.unlink(missing_ok=True)
        raise
    empty = tuple(name for name in labels if name in unfilled)
    if empty:
        warnings.warn(f"label(s) {', '.join(map(repr, empty))} {EMPTY_LABELS_NOTE}", UserWarning, stacklevel=2)
    return PatchPointsResult(path=output, rows=rows, patches=patches, skipped=skipped, empty_labels=empty)
