"""Small extractions of real NetCDF patches, catalogued by eoextract's own builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS, Transformer

from eoextract.extract import AUXILIARY, ItemStore, build_catalogue
from eoextract.extract._stac_item import build_item, make_item_id, read_file_metadata

BANDS = ("B02", "B03", "B04", "SCL")
CROPS = ("wheat", "maize", "barley")
#: (EPSG code, lon, lat) of the sample areas: two UTM zones.
ZONES = ((32631, 3.5, 50.8), (32632, 9.5, 50.8))


def write_patch(path: Path, epsg: int, lon: float, lat: float, *, n: int = 8,
                times: int = 3, seed: int = 0, bands=BANDS) -> Path:
    """A NetCDF patch as openEO backends write them: t, y, x; uint16 bands; a crs variable."""
    crs = CRS.from_epsg(epsg)
    x0, y0 = Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat)
    x0, y0 = round(x0 / 10) * 10, round(y0 / 10) * 10
    x = x0 + 5 + 10 * np.arange(n)
    y = y0 - 5 - 10 * np.arange(n)
    rng = np.random.default_rng(seed)
    ds = xr.Dataset(
        {b: (("t", "y", "x"), rng.integers(1, 10000, (times, n, n), dtype=np.uint16),
             {"grid_mapping": "crs"}) for b in bands},
        coords={"t": pd.date_range("2021-03-01", periods=times, freq="5D"), "y": y, "x": x})
    ds["crs"] = xr.DataArray(np.array(0, dtype="S1"), attrs={"crs_wkt": crs.to_wkt(),
                                                             "spatial_ref": crs.to_wkt()})
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4",
                 encoding={b: {"_FillValue": np.uint16(65535)} for b in bands})
    return path


def write_labels(path: Path, patch: Path, crop: int, sample_id: str) -> Path:
    """An auxiliary file as the croptype example writes it: LABEL on the patch's grid."""
    with xr.open_dataset(patch) as ds:
        y, x, crs = ds.y.values, ds.x.values, ds["crs"].attrs
    label = np.full((y.size, x.size), crop, dtype=np.int64)
    aux = xr.Dataset({"LABEL": (("y", "x"), label, {"grid_mapping": "crs"})},
                     coords={"y": y, "x": x},
                     attrs={"sample_id": sample_id, "ref_id": "2021_TEST", "valid_date": "2021-03-05"})
    aux["crs"] = xr.DataArray(np.array(0, dtype="S1"), attrs=crs)
    aux.to_netcdf(path, engine="netcdf4")
    return path


def make_extraction(root: Path, *, per_zone: int = 3, zones=ZONES, times=None,
                    collection_id: str = "S2-EXTRACTION", sizes=None) -> Path:
    """An extraction output folder with items stored per job and its catalogue in ``stac/``.

    Item ``i`` gets ``times[i]`` dates (default 3) and ``sizes[i]`` pixels a side (default 8).
    """
    store = ItemStore(root)
    i = 0
    for job, (epsg, lon, lat) in enumerate(zones):
        items = []
        for k in range(per_zone):
            sample_id = f"sample-{i:03d}"
            folder = root / "2021_TEST" / str(epsg) / sample_id
            patch = write_patch(folder / f"S2_{sample_id}.nc", epsg, lon + 0.01 * k, lat,
                                times=(times or {}).get(i, 3), n=(sizes or {}).get(i, 8), seed=i)
            item = build_item(None, read_file_metadata(patch),
                              item_id=make_item_id(str(job), f"openEO_{k}.nc", patch),
                              collection_id=collection_id, asset_key="openEO",
                              properties={"croptype": CROPS[i % 3], "sample_id": sample_id,
                                          "eoextract:job_key": str(job)})
            labels = write_labels(folder / f"LABELS_{sample_id}.nc", patch, i % 3 + 1, sample_id)
            item.add_asset("auxiliary", AUXILIARY.create_asset(href=str(labels)))
            items.append(store.stored_item(item, str(job)))
            i += 1
        store.write_job(str(job), f"j-{job}", items)
    return build_catalogue(root, collection_id, "Patches for tests")


def bench_catalogue(folder: Path, n: int, px: int, bands: tuple[str, ...]) -> Path:
    """A catalogue of ``n`` patches of ``px``×``px`` pixels, 20 dates, in two UTM zones
    (for the dataset benchmarks); returns its ``collection.json``."""
    from eoextract.extract._stac_item import build_item, read_file_metadata
    from eoextract.stac import build_collection

    items = []
    for i in range(n):
        epsg, lon, lat = ZONES[i % 2]
        path = write_patch(folder / "data" / f"p{i:05d}.nc", epsg, lon + 0.001 * i, lat, n=px,
                           times=20, seed=i, bands=bands)
        items.append(build_item(None, read_file_metadata(path), item_id=f"p{i:05d}",
                                collection_id="B", asset_key="data",
                                properties={"croptype": "wheat" if i % 3 else "maize",
                                            "sample_id": f"s{i:05d}"}))
    return build_collection(items, folder / "stac", collection_id="B", description="bench")
