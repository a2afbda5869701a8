"""The patches of a catalogue as one lazy xarray dataset, and as (array, label) pairs.

:func:`open_patches` reads the items (of a catalogue, a stac-geoparquet file or a selection
of either) and the *headers* of their files (dimensions, coordinates, attributes), and
returns a dataset whose pixel arrays are dask arrays, one chunk per patch: no pixel is read
until ``.compute()``/``.values`` asks for it. Needs dask (``pip install 'eoextract[backend]'``
or ``dask[array]``).

Layout of the dataset:

* ``patches`` (``sample, t, band, y, x``): the band variables of each data file, raw values
  as stored (no scaling, nodata kept; its value is in the attribute ``nodata``);
* ``time`` (``sample, t``): the dates of each patch; patches with fewer dates than the
  longest are padded at the end with ``nodata`` pixels and ``NaT`` times;
* ``easting``/``northing`` (``sample, x``/``sample, y``), ``epsg``, ``collection`` (``sample``);
* labels: each variable of the auxiliary asset (e.g. ``LABEL``, ``sample, y, x``, lazy too),
  and each name in ``labels`` found in the item's properties, the auxiliary/data file's
  attributes or the row of the item's job (``eoextract:job_key``) in ``job_db`` (``sample``).

All patches must have the same size and bands, and (unless ``allow_mixed_crs``) the same
EPSG code; else :class:`~eoextract.errors.DatasetError` names the items that differ.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eoextract._util.hrefs import is_url, local_path
from eoextract.errors import DatasetError
from eoextract.dataset._selection import Selection, Source, item_epsg, select_items

_DATA_MEDIA = ("netcdf", "x-hdf", "tiff")
#: The item property naming the job an item came from (written by the extraction manager).
JOB_KEY_PROPERTY = "eoextract:job_key"


@dataclass
class _Header:
    """What a patch file says about itself without reading its pixels."""

    path: str
    variables: list[str]
    times: np.ndarray
    y: np.ndarray
    x: np.ndarray
    dtype: np.dtype
    nodata: Any
    epsg: int | None
    attrs: dict[str, Any] = field(default_factory=dict)


def _require_dask() -> Any:
    try:
        import dask
        import dask.array
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DatasetError("the lazy dataset loader needs dask: pip install 'dask[array]'") from exc
    return dask


@functools.lru_cache(maxsize=64)
def _epsg_of_wkt(wkt: str) -> int | None:
    from pyproj import CRS

    try:
        return CRS.from_wkt(wkt).to_epsg()
    except Exception:  # noqa: BLE001 - an unreadable CRS is no EPSG code
        return None


def _netcdf_lock() -> Any:
    """The lock xarray takes around netCDF4/HDF5 calls: the libraries are not thread-safe,
    and dask's default scheduler reads patches from several threads."""
    from xarray.backends.locks import HDF5_LOCK, NETCDFC_LOCK, combine_locks

    return combine_locks([HDF5_LOCK, NETCDFC_LOCK])


def _times(var: Any) -> np.ndarray:
    """The dates of a CF time variable (raw values when it has no units)."""
    import netCDF4

    values = np.asarray(var[...])
    units = getattr(var, "units", None)
    if not isinstance(units, str) or " since " not in units:
        return values
    dates = netCDF4.num2date(values, units, getattr(var, "calendar", "standard"),
                             only_use_cftime_datetimes=False, only_use_python_datetimes=True)
    return np.array(dates, dtype="datetime64[ns]")


def _read_header(path: str, *, item_id: str, kind: str) -> _Header:
    """Dimensions, coordinates and attributes of a NetCDF patch (netCDF4 directly: opening
    thousands of headers is the loader's main cost)."""
    import netCDF4

    try:
        with _netcdf_lock(), netCDF4.Dataset(path) as nc:
            nc.set_auto_maskandscale(False)
            variables = [n for n, v in nc.variables.items()
                         if v.dimensions[-2:] == ("y", "x") and len(v.dimensions) in (2, 3)]
            if not variables:
                raise DatasetError(f"{path} ({kind} of item {item_id!r}) has no variable on "
                                   "dims (t,) y, x", item_id=item_id, path=path)
            ndim = max(len(nc.variables[v].dimensions) for v in variables)
            variables = [v for v in variables if len(nc.variables[v].dimensions) == ndim]
            first = nc.variables[variables[0]]
            tname = first.dimensions[0] if ndim == 3 else None
            times = _times(nc.variables[tname]) if tname in nc.variables else np.array([])
            crs = next((getattr(nc.variables[v], k) for v in ("crs", "spatial_ref")
                        if v in nc.variables for k in ("crs_wkt", "spatial_ref")
                        if getattr(nc.variables[v], k, None)), None)
            fill = first.getncattr("_FillValue") if "_FillValue" in first.ncattrs() else None
            return _Header(
                path=path, variables=variables, times=times,
                y=np.asarray(nc.variables["y"][...]), x=np.asarray(nc.variables["x"][...]),
                dtype=np.result_type(*(nc.variables[v].dtype for v in variables)),
                nodata=fill.item() if isinstance(fill, np.generic) else fill,
                epsg=_epsg_of_wkt(crs) if crs else None,
                attrs={k: nc.getncattr(k) for k in nc.ncattrs()})
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"cannot read {path} ({kind} of item {item_id!r}): {exc}",
                           item_id=item_id, path=path) from exc


def _read_variables(path: str, variables: Sequence[str], dtype: str) -> list[np.ndarray]:
    """Raw values of variables of a NetCDF file (netCDF4 directly: no decoding, little
    overhead per file)."""
    import netCDF4

    with _netcdf_lock(), netCDF4.Dataset(path) as nc:
        nc.set_auto_maskandscale(False)
        return [np.asarray(nc.variables[v][...], dtype=dtype) for v in variables]


def _read_patch(path: str, variables: tuple[str, ...], n_t: int, dtype: str, fill: Any) -> np.ndarray:
    """The pixels of one file as ``(t, band, y, x)``, padded to ``n_t`` dates with ``fill``."""
    arrays = _read_variables(path, variables, dtype)
    stack = np.stack([a if a.ndim == 3 else a[None] for a in arrays], axis=1)
    if stack.shape[0] < n_t:
        pad = np.full((n_t - stack.shape[0], *stack.shape[1:]), fill, dtype=dtype)
        stack = np.concatenate([stack, pad])
    return stack


def _read_raster(path: str, variable: str, dtype: str) -> np.ndarray:
    return _read_variables(path, [variable], dtype)[0]


def _asset_path(item: Mapping[str, Any], key: str) -> str:
    href = (item.get("assets") or {})[key].get("href")
    path = local_path(href) if isinstance(href, str) and not is_url(href) else None
    if path is None or not os.path.isabs(path):
        raise DatasetError(f"asset {key!r} of item {item.get('id')!r} is not a local file: {href!r}",
                           item_id=str(item.get("id")))
    return path


def _data_asset(item: Mapping[str, Any], wanted: str | None) -> str:
    assets = item.get("assets") or {}
    if wanted is not None:
        if wanted not in assets:
            raise DatasetError(f"item {item.get('id')!r} has no asset {wanted!r} (it has "
                               f"{', '.join(assets) or 'none'})", item_id=str(item.get("id")))
        return wanted
    for key, asset in assets.items():
        roles = asset.get("roles") or []
        media = str(asset.get("type") or "")
        if "data" in roles and "auxiliary" not in roles and any(m in media for m in _DATA_MEDIA):
            return key
    raise DatasetError(f"item {item.get('id')!r} has no data asset (role 'data', NetCDF); "
                       "name one with asset=", item_id=str(item.get("id")))


def _aux_asset(item: Mapping[str, Any], wanted: str | None) -> str | None:
    assets = item.get("assets") or {}
    if wanted is not None:
        return wanted if wanted in assets else None
    return next((k for k, a in assets.items() if "auxiliary" in (a.get("roles") or [])), None)


def _same(what: str, values: Mapping[str, Any]) -> None:
    """Raise naming one item per distinct value when the values differ."""
    by_value: dict[str, str] = {}
    for item_id, value in values.items():
        by_value.setdefault(repr(value), item_id)
    if len(by_value) > 1:
        shown = "; ".join(f"item {i!r}: {v}" for v, i in list(by_value.items())[:4])
        raise DatasetError(f"patches differ in {what} ({shown}); select items of one kind "
                           "(e.g. epsg=..., or split the catalogue per EPSG)",
                           item_id=next(iter(by_value.values())))


def open_patches(
    source: Source,
    *,
    asset: str | None = None,
    label_asset: str | None = None,
    labels: Sequence[str] = (),
    selection: Selection | None = None,
    allow_mixed_crs: bool = False,
    job_db: Any = None,
    **criteria: Any,
) -> Any:
    """Open the patches of a catalogue as a lazy :class:`xarray.Dataset`
    (``sample, t, band, y, x``; see the module documentation for its layout).

    Args:
        source: A catalogue (root file, its folder or an extraction's output folder), a
            stac-geoparquet file, or item dicts.
        asset: Key of the data asset (default: the first NetCDF asset with role ``data``).
        label_asset: Key of the label asset (default: the asset with role ``auxiliary``).
        labels: Names of per-sample labels, taken from the item's properties, else the
            attributes of its auxiliary file, else of its data file.
        selection: Which items (see :class:`Selection`); or its fields as keyword
            arguments: ``properties``, ``start``, ``end``, ``tiles``, ``epsg``, ``collections``.
        allow_mixed_crs: Accept patches of several EPSG codes (their ``epsg`` tells them apart).
        job_db: A job database (object, path or URL) whose job rows give ``labels`` no item
            property or file attribute has, by the items' ``eoextract:job_key`` (read only).

    Returns:
        The dataset; only headers were read.

    Raises:
        DatasetError: No item selected, a file that cannot be read, a patch whose CRS is not
            its item's, or patches of different sizes, bands or (by default) CRS.
    """
    dask = _require_dask()
    import dask.array as da
    import xarray as xr

    items = list(select_items(source, selection, **criteria))
    if not items:
        raise DatasetError(f"no item of {source if isinstance(source, (str, os.PathLike)) else 'the items'} "
                           "matches the selection")
    heads: list[_Header] = []
    aux_heads: list[_Header | None] = []
    for item in items:
        item_id = str(item.get("id"))
        head = _read_header(_asset_path(item, _data_asset(item, asset)), item_id=item_id, kind="data")
        epsg = item_epsg(item)
        if head.epsg is not None and epsg is not None and head.epsg != epsg:
            raise DatasetError(f"{head.path} is in EPSG:{head.epsg} but its item {item_id!r} says "
                               f"EPSG:{epsg}", item_id=item_id, path=head.path)
        heads.append(head)
        aux_key = _aux_asset(item, label_asset)
        aux_heads.append(_read_header(_asset_path(item, aux_key), item_id=item_id, kind="labels")
                         if aux_key else None)
    ids = [str(i.get("id")) for i in items]
    _same("size (y, x)", {i: (h.y.size, h.x.size) for i, h in zip(ids, heads)})
    _same("bands", {i: h.variables for i, h in zip(ids, heads)})
    if not allow_mixed_crs:
        _same("CRS", {i: f"EPSG:{item_epsg(it) or h.epsg}" for i, it, h in zip(ids, items, heads)})
    n_t = max(max(h.times.size for h in heads), 1)
    dtype = np.result_type(*(h.dtype for h in heads))
    nodata = next((h.nodata for h in heads if h.nodata is not None), 0)
    bands = heads[0].variables
    ny, nx = heads[0].y.size, heads[0].x.size
    read = dask.delayed(_read_patch, pure=True)
    patches = da.stack([
        da.from_delayed(read(h.path, tuple(bands), n_t, dtype.str, nodata),
                        shape=(n_t, len(bands), ny, nx), dtype=dtype) for h in heads])
    times = np.full((len(heads), n_t), np.datetime64("NaT"), dtype="datetime64[ns]")
    for row, h in enumerate(heads):
        if h.times.size and np.issubdtype(h.times.dtype, np.datetime64):
            times[row, : h.times.size] = h.times
    ds = xr.Dataset(
        {"patches": (("sample", "t", "band", "y", "x"), patches, {"nodata": nodata})},
        coords={
            "sample": ids, "band": bands, "t": np.arange(n_t),
            "time": (("sample", "t"), times),
            "easting": (("sample", "x"), np.stack([h.x for h in heads])),
            "northing": (("sample", "y"), np.stack([h.y for h in heads])),
            "epsg": ("sample", [item_epsg(it) or h.epsg or -1 for it, h in zip(items, heads)]),
            "collection": ("sample", [str(it.get("collection") or "") for it in items]),
        })
    _add_aux_rasters(ds, ids, heads, aux_heads)
    rows = _job_rows(job_db, items) if job_db is not None and labels else {}
    for name in labels:
        values = [_label(name, it, h, a, rows) for it, h, a in zip(items, heads, aux_heads)]
        ds[name] = ("sample", np.asarray(values, dtype=object if any(
            isinstance(v, str) or v is None for v in values) else None))
    return ds


def _job_rows(job_db: Any, items: list[dict[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The user columns of the jobs the items came from, by job key."""
    if isinstance(job_db, (str, os.PathLike)):
        from eoextract.jobs.db import get_job_db

        job_db = get_job_db(str(job_db))
    keys = sorted({str(k) for it in items
                   if (k := (it.get("properties") or {}).get(JOB_KEY_PROPERTY)) is not None})
    return {r.job_key: r.row for r in job_db.jobs(keys=keys)} if keys else {}


def _label(name: str, item: Mapping[str, Any], head: _Header, aux: _Header | None,
           rows: Mapping[str, Mapping[str, Any]]) -> Any:
    """A label: item property, else auxiliary file attribute, data file attribute, job row."""
    props = item.get("properties") or {}
    for source in (props, aux.attrs if aux else {}, head.attrs,
                   rows.get(str(props.get(JOB_KEY_PROPERTY)), {})):
        if name in source:
            return source[name]
    return None


def _add_aux_rasters(ds: Any, ids: list[str], heads: list[_Header],
                     aux_heads: list[_Header | None]) -> None:
    """The raster variables of the auxiliary files as lazy ``(sample, y, x)`` variables."""
    import dask
    import dask.array as da

    present = [a for a in aux_heads if a is not None]
    if not present:
        return
    ny, nx = heads[0].y.size, heads[0].x.size
    for var in present[0].variables:
        dtype = np.result_type(*(a.dtype for a in present))
        fill = present[0].nodata if present[0].nodata is not None else 0
        parts = []
        for item_id, a in zip(ids, aux_heads):
            if a is None or var not in a.variables:
                parts.append(da.full((ny, nx), fill, dtype=dtype))
                continue
            if (a.y.size, a.x.size) != (ny, nx):
                raise DatasetError(f"{a.path} (labels of item {item_id!r}) is {a.y.size}x{a.x.size} "
                                   f"pixels, its patch {ny}x{nx}", item_id=item_id, path=a.path)
            parts.append(da.from_delayed(dask.delayed(_read_raster, pure=True)(a.path, var, dtype.str),
                                         shape=(ny, nx), dtype=dtype))
        ds[var] = (("sample", "y", "x"), da.stack(parts), {"nodata": fill})


def iter_patches(dataset: Any, label: str | None = None, *, variable: str = "patches"
                 ) -> Iterator[tuple[np.ndarray, Any]]:
    """Yield ``(array, label)`` per sample of a dataset from :func:`open_patches`, reading one
    patch at a time: ``array`` is ``(t, band, y, x)``, ``label`` the sample's value of the
    variable ``label`` (an array for a raster label; ``None`` without ``label``)."""
    if label is not None and label not in dataset:
        raise DatasetError(f"the dataset has no label {label!r} (it has "
                           f"{', '.join(n for n in dataset.data_vars if n != variable)})")
    for i in range(dataset.sizes["sample"]):
        array = np.asarray(dataset[variable].isel(sample=i).values)
        value = dataset[label].isel(sample=i).values if label is not None else None
        yield array, (value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value)
