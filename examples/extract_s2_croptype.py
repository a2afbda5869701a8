"""Sentinel-2 L2A extraction around crop-type samples, with a STAC catalogue — offline.

This is the GFMAP full-extraction notebook (seed 004) as written: split the samples into
jobs, build a job dataframe, a datacube function (the 64x64 px UTM squares uploaded as
GeoParquet and read back with ``load_url``, Sentinel-2 L2A, the SCL dilation mask and the
distance-to-cloud UDF merged in with ``merge_cubes``), an output path generator and a
post-job action, run the manager, build the catalogue. It runs against the embedded openEO
backend on 127.0.0.1, authenticated with OpenID Connect (client credentials), instead of
CDSE. What was swapped, because no backend can remove it:

* imports: ``eoextract`` provides ``GFMAPJobManager``, ``AUXILIARY`` and ``split_job_hex``
  instead of ``openeo_gfmap``; ``json`` replaces the ``geojson`` package;
* ``build_sentinel2_l2a_extractor`` (openeo-gfmap's fetching helper) becomes the processes
  it builds: ``load_collection`` with the 13 L2A bands and the cloud-cover filter,
  ``filter_spatial`` on the uploaded squares, ``rename_labels`` to the ``S2-L2A-*`` names;
* the GeoParquet upload: ``openeo.extra.artifacts`` (the backend's S3 + STS, with the OIDC
  token, a presigned URL) instead of a PUT to VITO's artifactory with a password;
* ``generate_output_path_s2``: the Sentinel-2 tile of the sample comes from ``mgrs``
  (``eoextract.split.s2_tile``) instead of the downloaded S2 grid;
* samples: the 500 real polygons in ``examples/data/wc_extraction_dataset.gpkg`` instead of
  the DEMO_CROPTYPE.gpkg download; ``--samples`` of them, from the densest H3 cells, with
  every fourth one marked ``extract=False`` (kept for the labels, not extracted);
* dates: 45 days either side of the samples' valid date (about 3 months) instead of 275;
* ``post_job_action``: files written with xarray's default NetCDF engine;
* the backend: ``LocalBackend(artifacts=True)`` (synthetic Sentinel-2 data), or
  ``--backend-url`` (OIDC login as ``cdse_staging_connection`` does).

The distance-to-cloud UDF is ``udf_distance_to_cloud.py`` beside this script.

Run::

    python examples/extract_s2_croptype.py --output-dir /tmp/s2_croptype --samples 24
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import List

import geopandas as gpd
import openeo
import pandas as pd
import pystac
import xarray as xr
from openeo.extra.artifacts import build_artifact_helper
from pyproj import CRS, Transformer
from rasterio.features import rasterize
from rasterio.transform import from_bounds
from shapely.geometry import Point, box

from eoextract import GFMAPJobManager, LocalBackend, split_job_hex
from eoextract.extract import AUXILIARY
from eoextract.split import s2_tile
from eoextract.stac import validate_catalog

_log = logging.getLogger("extract_s2_croptype")

DATA = Path(__file__).parent / "data" / "wc_extraction_dataset.gpkg"
UDF_DISTANCE_TO_CLOUD = Path(__file__).parent / "udf_distance_to_cloud.py"
BACKEND_NAME = "local"
BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL"]


# --------------------------------------------------------------------------- first step: split


def select_samples(base_df: gpd.GeoDataFrame, n: int) -> gpd.GeoDataFrame:
    """``n`` samples, a few from each of the densest H3 cells, every fourth not extracted."""
    per_cell = min(6, max(2, math.ceil(n / 4)))
    cells = base_df.h3index.value_counts().index
    parts, taken = [], 0
    for cell in cells:
        if taken >= n:
            break
        part = base_df[base_df.h3index == cell].head(min(per_cell, n - taken))
        parts.append(part)
        taken += len(part)
    samples = pd.concat(parts).copy()
    samples["extract"] = [i % 4 != 3 for i in range(len(samples))]
    return samples


# --------------------------------------------------------------------------- second step: job dataframe


def create_job_dataframe_s2(backend: str, split_jobs: List[gpd.GeoDataFrame], buffer_days: int = 45) -> pd.DataFrame:
    """Create a dataframe from the split jobs, containg all the necessary information to run the job."""
    columns = ['backend_name', 'out_prefix', 'out_extension', 'start_date', 'end_date', 'geometry']
    rows = []
    for job in split_jobs:
        # Compute the average in the valid date and make a buffer around it
        median_time = pd.to_datetime(job.valid_date).mean()
        start_date = median_time - pd.Timedelta(days=buffer_days)
        end_date = median_time + pd.Timedelta(days=buffer_days)

        rows.append(
            pd.Series(
                dict(zip(columns, [backend, 'S2_10m', '.nc', start_date.strftime('%Y-%m-%d'),
                                   end_date.strftime('%Y-%m-%d'), job.to_json()]))
            )
        )

    return pd.DataFrame(rows)


def get_job_nb_polygons(row: pd.Series) -> int:
    """Get the number of polygons in the geometry."""
    return len([f for f in json.loads(row.geometry)['features'] if f['properties'].get('extract')])


# --------------------------------------------------------------------------- third step: datacube


def upload_geoparquet_artifacts(connection: openeo.Connection, gdf: gpd.GeoDataFrame,
                                row_id: int) -> str:
    """Save the dataframe as GeoParquet, upload it to the backend's artifact storage
    (``openeo.extra.artifacts``, with the connection's OIDC token) and return a presigned URL."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"openeogfmap_dataframe_{row_id}.parquet"
        gdf.to_parquet(path)
        helper = build_artifact_helper(connection)
        storage_uri = helper.upload_file(path)
    return helper.get_presigned_url(storage_uri, expires_in_seconds=24 * 3600)


def create_datacube_s2(row: pd.Series, connection: openeo.Connection, provider=None,
                       connection_provider=None) -> openeo.BatchJob:

    def buffer_geometry(geometry: dict, buffer: int) -> gpd.GeoDataFrame:
        gdf = gpd.GeoDataFrame.from_features(geometry).set_crs(epsg=4326)
        utm = gdf.estimate_utm_crs()
        gdf = gdf.to_crs(utm)

        gdf['geometry'] = gdf.centroid.apply(
            # Clips the point to the closest 20m from the S2 grid
            lambda point: Point(round(point.x / 20.0) * 20.0, round(point.y / 20.0) * 20.0)
        ).buffer(distance=buffer, cap_style=3)

        return gdf

    def filter_extractonly_geometries(collection: dict) -> dict:
        # Filter out geometries that do not have the field extract=True
        features = [f for f in collection['features'] if f['properties'].get('extract', False)]
        return {'type': 'FeatureCollection', 'features': features}

    start_date = row.start_date
    end_date = row.end_date

    # Get the feature collection containing the geometry to the job
    geometry = json.loads(row.geometry)
    assert geometry['type'] == 'FeatureCollection'

    # Filter the geometry to the rows with the extract only flag
    geometry = filter_extractonly_geometries(geometry)
    assert len(geometry['features']) > 0, "No geometries with the extract flag found"

    # Performs a buffer of 64 px around the geometry
    geometry_df = buffer_geometry(geometry, 320)
    spatial_extent_url = upload_geoparquet_artifacts(connection, geometry_df, row.name)

    bands_to_download = [f'S2-L2A-{band}' for band in BANDS]

    # What build_sentinel2_l2a_extractor(...).get_cube(connection, spatial_extent_url, ...) builds
    cube = connection.load_collection(
        'SENTINEL2_L2A',
        temporal_extent=[start_date, end_date],
        bands=BANDS,
        properties={'eo:cloud_cover': lambda val: val <= 95.0},
    ).filter_spatial(connection.load_url(spatial_extent_url, format='Parquet'))
    cube = cube.rename_labels('bands', bands_to_download)

    # Compute the SCL dilation and add it to the cube
    scl_dilated_mask = cube.process(
        "to_scl_dilation_mask",
        data=cube,
        scl_band_name="S2-L2A-SCL",
        kernel1_size=17,  # 17px dilation on a 20m layer
        kernel2_size=77,   # 77px dilation on a 20m layer
        mask1_values=[2, 4, 5, 6, 7],
        mask2_values=[3, 8, 9, 10, 11],
        erosion_kernel_size=3
    ).rename_labels("bands", ["S2-L2A-SCL_DILATED_MASK"])

    cube = cube.merge_cubes(scl_dilated_mask)

    # Compute the distance to cloud and add it to the cube
    scl = cube.filter_bands(['S2-L2A-SCL'])
    distance_to_cloud = scl.apply_neighborhood(
        process=openeo.UDF.from_file(UDF_DISTANCE_TO_CLOUD),
        size=[{'dimension': 'x', 'unit': 'px', 'value': 256},
              {'dimension': 'y', 'unit': 'px', 'value': 256}],
        overlap=[{'dimension': 'x', 'unit': 'px', 'value': 16},
                 {'dimension': 'y', 'unit': 'px', 'value': 16}]
    ).rename_labels('bands', ['S2-L2A-DISTANCE-TO-CLOUD'])

    cube = cube.merge_cubes(distance_to_cloud)
    cube = cube.linear_scale_range(0, 65534, 0, 65534)

    # Get the h3index to use in the tile
    h3index = geometry['features'][0]['properties']['h3index']
    valid_date = geometry['features'][0]['properties']['valid_date']

    number_polygons = get_job_nb_polygons(row)
    _log.debug(f"Number of polygons to extract: {number_polygons}")

    job_options = {
        "executor-memory": "5G",
        "executor-memoryOverhead": "2G",
    }

    return cube.create_job(
        out_format="NetCDF",
        title=f"GFMAP_Extraction_S2_{h3index}_{valid_date}",
        sample_by_feature=True,
        job_options=job_options,
    )


# --------------------------------------------------------------------------- fourth step: output paths


def generate_output_path_s2(root_folder: Path, tmp_path: Path, geometry_index: int, row: pd.Series) -> Path:
    # geometry_index counts the extracted features only
    features = [f for f in json.loads(row.geometry)['features'] if f['properties'].get('extract')]
    sample_id = features[geometry_index]['properties']['sample_id']
    ref_id = features[geometry_index]['properties']['ref_id']

    # Loads the array lazily in-memory
    try:
        with xr.open_dataset(tmp_path) as inds:
            source_crs = CRS.from_wkt(inds.crs.attrs['crs_wkt'])
            dst_crs = CRS.from_epsg(4326)

            transformer = Transformer.from_crs(source_crs, dst_crs, always_xy=True)

            # Get the center point of the tile
            centroid_utm = box(
                inds.x.min().item(), inds.y.min().item(), inds.x.max().item(), inds.y.max().item()
            ).centroid
            centroid_latlon = Point(*transformer.transform(centroid_utm.x, centroid_utm.y))

        # The Sentinel-2 tile of the centre, computed offline
        s2_tile_id, _ = s2_tile(centroid_latlon.y, centroid_latlon.x)

        subfolder = root_folder / ref_id / str(source_crs.to_epsg()) / s2_tile_id / sample_id
        epsg = source_crs.to_epsg()
    except Exception:
        subfolder = root_folder / 'unsortable'
        epsg = 'unknown'

    return subfolder / f'{row.out_prefix}_{sample_id}_{epsg}_{row.start_date}_{row.end_date}{row.out_extension}'


# --------------------------------------------------------------------------- fifth step: post-job action


def add_item_asset(related_item: pystac.Item, path: Path):
    asset = AUXILIARY.create_asset(
        href=path.as_posix()
    )
    related_item.add_asset('auxiliary', asset)


def post_job_action(job_items: List[pystac.Item], row: pd.Series, parameters: dict = {}) -> list:
    base_gpd = gpd.GeoDataFrame.from_features(json.loads(row.geometry)).set_crs(epsg=4326)
    assert len(base_gpd[base_gpd.extract == True]) == len(job_items), (  # noqa: E712
        "The number of result paths should be the same as the number of geometries"
    )
    extracted_gpd = base_gpd[base_gpd.extract == True].reset_index(drop=True)  # noqa: E712
    # In this case we want to burn the metadata in a new file in the same folder as the S2 product
    for idx, item in enumerate(job_items):
        sample_id = extracted_gpd.iloc[idx].sample_id
        ref_id = extracted_gpd.iloc[idx].ref_id
        confidence = extracted_gpd.iloc[idx].confidence
        valid_date = extracted_gpd.iloc[idx].valid_date

        item_asset_path = Path(
            list(item.assets.values())[0].href
        )
        # Read information from the item file (loaded, so that it can be rewritten in place)
        with xr.open_dataset(item_asset_path) as ds:
            result_ds = ds.load()

        # Add some metadata to the result_df netcdf file
        result_ds.attrs.update({
            'start_date': row.start_date,
            'end_date': row.end_date,
            'valid_date': valid_date,
            'eoextract_version': version('eoextract'),
            'creation_date': datetime.now().strftime('%Y-%m-%d %H:%M:%S'),
            'description': f'Sentinel2 L2A observations for sample: {sample_id}, unprocessed.',
            'title': f'Sentinel2 L2A - {sample_id}',
            'sample_id': sample_id,
            'spatial_resolution': '10m'
        })
        result_ds.to_netcdf(item_asset_path, format='NETCDF4')

        target_crs = CRS.from_wkt(result_ds.crs.attrs['crs_wkt'])

        # Get the surrounding polygons around our extracted center geometry to rasterize them
        bounds = (
            result_ds.x.min().item() - 5,
            result_ds.y.min().item() - 5,
            result_ds.x.max().item() + 5,
            result_ds.y.max().item() + 5
        )
        bbox = box(*bounds)
        surround_gpd = base_gpd.to_crs(target_crs).clip(bbox)

        # Burn the polygon croptypes
        transform = from_bounds(*bounds, result_ds.x.size, result_ds.y.size)
        croptype_shapes = list(zip(surround_gpd.geometry, surround_gpd.croptype_label))

        fill_value = 0
        croptype = rasterize(
            croptype_shapes,
            out_shape=(result_ds.y.size, result_ds.x.size),
            transform=transform,
            all_touched=False,
            fill=fill_value,
            default_value=0,
            dtype='int64'
        )

        # Create the attributes to add to the metadata
        attributes = {
            'ref_id': ref_id,
            'sample_id': sample_id,
            'confidence': str(confidence),
            'valid_date': valid_date,
            'Conventions': 'CF-1.9',
            'eoextract_version': version('eoextract'),
            'creation_date': datetime.now().strftime('%Y-%m-%d %H:%M:%S'),
            'description': f'Contains rasterized WorldCereal labels for sample: {sample_id}.',
            'title': f'WORLDCEREAL Auxiliary file for sample: {sample_id}',
            'spatial_resolution': '10m'
        }

        aux_dataset = xr.Dataset(
            {'LABEL': (('y', 'x'), croptype), 'crs': result_ds['crs']},
            coords={'y': result_ds.y, 'x': result_ds.x},
            attrs=attributes
        )
        # Required to map the 'crs' layer as geo-reference for the 'LABEL' layer.
        aux_dataset['LABEL'].attrs['grid_mapping'] = 'crs'
        aux_dataset['LABEL'].encoding['_FillValue'] = fill_value

        # Save the metadata in the same folder as the S2 product
        metadata_path = (
            item_asset_path.parent /
            f'WORLDCEREAL_10m_{sample_id}_{target_crs.to_epsg()}_{valid_date}.nc'
        )
        aux_dataset.to_netcdf(metadata_path, format='NETCDF4')
        aux_dataset.close()

        # Adds this metadata as a new asset
        add_item_asset(item, metadata_path)

    return job_items


# --------------------------------------------------------------------------- sixth step: run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=Path("s2_croptype_extraction"),
                        help="folder for the files, the job tracker and the catalogue")
    parser.add_argument("--samples", type=int, default=24, help="number of samples (about 3/4 are extracted)")
    parser.add_argument("--backend-url",
                        help="an openEO backend with artifacts instead of the embedded one "
                             "(OIDC login, as openeo's authenticate_oidc())")
    parser.add_argument("--parallel-jobs", type=int, default=4)
    parser.add_argument("-v", "--verbose", action="store_true", help="log the manager's progress")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")

    logging.basicConfig(format='%(asctime)s|%(name)s|%(levelname)s:  %(message)s',
                        level=logging.INFO if args.verbose else logging.WARNING)
    for noisy in ("openeo_processes_dask", "rasterio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    started = time.monotonic()

    base_df = gpd.read_file(DATA)
    base_df = select_samples(base_df, args.samples)
    # Splits the job using H3 cells
    split_jobs = split_job_hex(base_df, max_points=60, grid_resolution=4)
    # Remove the geometry where there are no points with the "extract" flag
    split_jobs = [job for job in split_jobs if job.extract.any()]
    job_df = create_job_dataframe_s2(BACKEND_NAME, split_jobs)
    job_df['nb_polygons'] = job_df.apply(get_job_nb_polygons, axis=1)
    print(f"{len(base_df)} samples, {int(base_df.extract.sum())} to extract, {len(job_df)} jobs")

    base_output_dir = args.output_dir
    base_output_dir.mkdir(parents=True, exist_ok=True)
    tracking_job_csv = base_output_dir / 'job_tracker.csv'

    with ExitStack() as stack:
        if args.backend_url:
            url = args.backend_url

            def connection() -> openeo.Connection:
                return openeo.connect(url).authenticate_oidc()
        else:
            # the openeo client keeps its OIDC state in its config folder: one inside the
            # output folder (it must exist to be used), not the user's home
            config_home = base_output_dir / '.openeo-config'
            config_home.mkdir(exist_ok=True)
            os.environ['OPENEO_CONFIG_HOME'] = str(config_home.resolve())
            # the embedded backend with its OIDC provider and S3 + STS for the artifacts
            backend = stack.enter_context(LocalBackend(artifacts=True))
            connection = backend.connect_oidc  # client credentials, renewed when they expire

        manager = GFMAPJobManager(
            output_dir=base_output_dir,
            output_path_generator=generate_output_path_s2,
            collection_id='SENTINEL-EXTRACTION',
            collection_description=(
                "Sentinel-2 and Auxiliary data extraction example."
            ),
            post_job_action=post_job_action,
            poll_sleep=0.5,
            n_threads=2,
            post_job_params={},
        )
        manager.add_backend(BACKEND_NAME, connection, parallel_jobs=args.parallel_jobs)

        # Run the jobs and create the STAC catalogue
        stats = manager.run_jobs(job_df, create_datacube_s2, tracking_job_csv)
    collection = manager.create_stac()  # in the stac subfolder of the output folder
    report = validate_catalog(collection, check_assets=True)

    files = [p for p in base_output_dir.rglob("*.nc") if ".eoextract" not in p.parts]
    print("jobs:       " + ", ".join(f"{k} {v}" for k, v in sorted(stats["status_counts"].items())))
    print(f"items:      {report.n_items}")
    print(f"files:      {len(files)} NetCDF ({sum(p.stat().st_size for p in files) / 1e6:.1f} MB)")
    print(f"catalogue:  {collection} ({'valid' if report.ok else f'{report.n_errors} problems'})")
    print(f"elapsed:    {time.monotonic() - started:.1f} s")
    return 0 if report.ok and set(stats["status_counts"]) == {"finished"} else 1


if __name__ == "__main__":
    sys.exit(main())
