"""Seed-like extraction callbacks for the chaos tests, kept tiny so hundreds of jobs stay cheap.

Each job holds one or two real sample polygons (``tests/data``) as a GeoJSON
FeatureCollection; the datacube is 8x8 px of one band plus SCL over two dates, sampled per
feature. The output path generator opens the downloaded file (as the reference notebook's
does), and the post-job action rewrites each file in place and writes a label file next to
it as an auxiliary asset, so a kill can land in any of these steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pystac
import xarray as xr
from pyproj import CRS
from shapely.geometry import Point

from eoextract.extract import AUXILIARY

DATA = Path(__file__).parents[1] / "data" / "wc_extraction_dataset.gpkg"
BANDS = ["B04", "SCL"]
SCALE = os.environ.get("EOEXTRACT_CHAOS_SCALE", "small")


def scaled(small: int, full: int) -> int:
    """``small`` by default, ``full`` with ``EOEXTRACT_CHAOS_SCALE=full``."""
    return full if SCALE == "full" else small


def job_dataframe(n_jobs: int, prefix: str, *, per_job: int = 2, **columns: object) -> pd.DataFrame:
    """``n_jobs`` jobs of up to ``per_job`` samples of one H3 cell each, titles ``<prefix>-<i>``."""
    samples = gpd.read_file(DATA).sort_values(["h3index", "sample_id"], kind="stable")
    groups: list[gpd.GeoDataFrame] = []
    for _, cell in samples.groupby("h3index", sort=True):
        for start in range(0, len(cell), per_job):
            groups.append(cell.iloc[start:start + per_job])
    if n_jobs > len(groups):
        raise ValueError(f"only {len(groups)} jobs can be made from the sample file")
    frame = pd.DataFrame({
        "title": [f"{prefix}-{i}" for i in range(n_jobs)],
        "geometry": [g[["sample_id", "ref_id", "croptype_label", "geometry"]].to_json() for g in groups[:n_jobs]],
        "start_date": "2021-06-01",
        "end_date": "2021-06-06",
    })
    for name, value in columns.items():
        frame[name] = value
    return frame


def features(row: pd.Series) -> list[dict]:
    return json.loads(row["geometry"])["features"]


def create_datacube(row: pd.Series, connection, provider=None, connection_provider=None):
    """8x8 px squares (10 m) around each sample's centroid, in its UTM zone, per feature."""
    gdf = gpd.GeoDataFrame.from_features(features(row)).set_crs(epsg=4326)
    utm = gdf.estimate_utm_crs()
    gdf = gdf.to_crs(utm)
    gdf["geometry"] = gdf.centroid.apply(
        lambda p: Point(round(p.x / 20.0) * 20.0, round(p.y / 20.0) * 20.0)).buffer(40, cap_style=3)
    geometry = json.loads(gdf[["sample_id", "geometry"]].to_json())
    geometry["crs"] = {"type": "name", "properties": {"name": f"EPSG:{utm.to_epsg()}"}}
    cube = connection.load_collection("SENTINEL2_L2A", temporal_extent=[row["start_date"], row["end_date"]],
                                      bands=BANDS).filter_spatial(geometry)
    options = json.loads(row["job_options"]) if isinstance(row.get("job_options"), str) else {}
    return cube.create_job(out_format="NetCDF", title=row["title"], sample_by_feature=True, job_options=options)


def generate_output_path(root_folder: Path, tmp_path: Path, geometry_index: int, row: pd.Series) -> Path:
    """``<ref_id>/<epsg>/<sample_id>/S2_<sample_id>_<epsg>.nc``, the EPSG read from the file."""
    props = features(row)[geometry_index]["properties"]
    with xr.open_dataset(tmp_path) as ds:
        epsg = CRS.from_wkt(ds.crs.attrs["crs_wkt"]).to_epsg()
    sample_id = props["sample_id"]
    return Path(root_folder) / props["ref_id"] / str(epsg) / sample_id / f"S2_{sample_id}_{epsg}.nc"


def post_job_action(job_items: list[pystac.Item], row: pd.Series, parameters: dict) -> list[pystac.Item]:
    """Rewrite each file with a sample attribute; add a label file as an auxiliary asset."""
    for item in job_items:
        path = Path(next(iter(item.assets.values())).href)
        sample_id = path.parent.name
        with xr.open_dataset(path) as ds:
            result = ds.load()
        result.attrs["sample_id"] = sample_id
        result.to_netcdf(path)
        first = result[BANDS[0]].isel(t=0).values
        label = xr.Dataset({"LABEL": (("y", "x"), (first > 1000).astype("uint8"))},
                           coords={"y": result.y, "x": result.x}, attrs={"sample_id": sample_id})
        aux_path = path.parent / f"LABEL_{sample_id}.nc"
        label.to_netcdf(aux_path)
        item.add_asset("auxiliary", AUXILIARY.create_asset(href=aux_path.as_posix()))
    return job_items
