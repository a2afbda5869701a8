"""The extraction manager end to end on the embedded backend over real HTTP.

The callbacks follow the reference notebook (seed 004): an H3-split job dataframe with a
GeoJSON FeatureCollection per row, a datacube function that buffers the samples to UTM
squares, an output path generator that opens the downloaded file, and a post-job action
that rewrites the file in place and adds a rasterised label file as an AUXILIARY asset.
Kept small (32x32 px, two dates, three bands) to stay fast.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pystac
import pytest
import xarray as xr
from pyproj import CRS
from rasterio.features import rasterize
from rasterio.transform import from_bounds
from shapely.geometry import Point, box

from eoextract.backend import LocalBackend
from eoextract.errors import ConfigurationError
from eoextract.extract import AUXILIARY, ExtractionManager, GFMAPJobManager, build_catalogue
from eoextract.extract import ItemStore
from eoextract.jobs.db import get_job_db
from eoextract.split import split_job_hex
from eoextract.stac import validate_catalog

DATA = Path(__file__).parents[1] / "data" / "wc_extraction_dataset.gpkg"
BANDS = ["B02", "B05", "SCL"]  # B05: a red-edge band, whose common name needs mapping
CELLS = ["841e333ffffffff", "841e153ffffffff"]  # two H3 cells with several samples each


# --------------------------------------------------------------------------- seed-like callbacks


def extracted_features(row: pd.Series) -> list[dict]:
    return [f for f in json.loads(row.geometry)["features"] if f["properties"].get("extract")]


def create_datacube(row: pd.Series, connection, provider=None, connection_provider=None):
    """As the notebook's create_datacube_s2, with the geometry inline (UTM, 'crs' member)."""
    gdf = gpd.GeoDataFrame.from_features(extracted_features(row)).set_crs(epsg=4326)
    utm = gdf.estimate_utm_crs()
    gdf = gdf.to_crs(utm)
    gdf["geometry"] = gdf.centroid.apply(
        lambda p: Point(round(p.x / 20.0) * 20.0, round(p.y / 20.0) * 20.0)
    ).buffer(distance=160, cap_style=3)
    geometry = json.loads(gdf[["sample_id", "geometry"]].to_json())
    geometry["crs"] = {"type": "name", "properties": {"name": f"EPSG:{utm.to_epsg()}"}}
    cube = connection.load_collection(
        "SENTINEL2_L2A", temporal_extent=[row.start_date, row.end_date], bands=BANDS
    ).filter_spatial(geometry)
    cube = cube.rename_labels("bands", [f"S2-L2A-{b}" for b in BANDS])
    options = json.loads(row.job_options) if isinstance(row.get("job_options"), str) else {}
    return cube.create_job(out_format="NetCDF", title=row.title, sample_by_feature=True, job_options=options)


def generate_output_path(root_folder: Path, tmp_path: Path, geometry_index: int, row: pd.Series) -> Path:
    props = extracted_features(row)[geometry_index]["properties"]
    sample_id, ref_id = props["sample_id"], props["ref_id"]
    with xr.open_dataset(tmp_path) as ds:
        epsg = CRS.from_wkt(ds.crs.attrs["crs_wkt"]).to_epsg()
    return (root_folder / ref_id / str(epsg) / sample_id
            / f"{row.out_prefix}_{sample_id}_{epsg}_{row.start_date}_{row.end_date}{row.out_extension}")


def post_job_action(job_items: list[pystac.Item], row: pd.Series, parameters: dict) -> list[pystac.Item]:
    """Rewrite each file with attributes, then burn the crop types into an auxiliary file."""
    base = gpd.GeoDataFrame.from_features(json.loads(row.geometry)).set_crs(epsg=4326)
    extracted = base[base.extract].reset_index(drop=True)
    assert len(extracted) == len(job_items)
    for idx, item in enumerate(job_items):
        sample_id = extracted.iloc[idx].sample_id
        path = Path(list(item.assets.values())[0].href)
        with xr.open_dataset(path) as ds:
            result = ds.load()
        result.attrs.update({"sample_id": sample_id, "eoextract_version": version("eoextract"),
                             "creation_date": datetime.now().strftime("%Y-%m-%d %H:%M:%S")})
        result.to_netcdf(path)
        crs = CRS.from_wkt(result.crs.attrs["crs_wkt"])
        bounds = (float(result.x.min()) - 5, float(result.y.min()) - 5,
                  float(result.x.max()) + 5, float(result.y.max()) + 5)
        shapes = base.to_crs(crs).clip(box(*bounds))
        label = rasterize(list(zip(shapes.geometry, shapes.croptype_label)),
                          out_shape=(result.y.size, result.x.size),
                          transform=from_bounds(*bounds, result.x.size, result.y.size), fill=0, dtype="int64")
        aux = xr.Dataset({"LABEL": (("y", "x"), label), "crs": result["crs"]},
                         coords={"y": result.y, "x": result.x}, attrs={"sample_id": sample_id})
        aux["LABEL"].attrs["grid_mapping"] = "crs"
        aux_path = path.parent / f"LABEL_{sample_id}.nc"
        aux.to_netcdf(aux_path)
        item.add_asset("auxiliary", AUXILIARY.create_asset(href=aux_path.as_posix()))
    return job_items


# --------------------------------------------------------------------------- helpers


def job_dataframe(n_per_cell: int = 3, prefix: str | None = None, **columns) -> pd.DataFrame:
    """Two H3 jobs of real samples; the second job's first sample is not extracted."""
    base = gpd.read_file(DATA)
    base = pd.concat([base[base.h3index == c].head(n_per_cell) for c in CELLS])
    base.loc[base.index[n_per_cell], "extract"] = False
    jobs = [j for j in split_job_hex(base, max_points=60, grid_resolution=4) if j.extract.any()]
    prefix = prefix or f"t{uuid.uuid4().hex[:8]}"
    df = pd.DataFrame({
        "backend_name": "local",
        "out_prefix": "S2_10m",
        "out_extension": ".nc",
        "start_date": "2021-06-01",
        "end_date": "2021-06-11",
        "geometry": [j.to_json() for j in jobs],
        "title": [f"{prefix}-{i}" for i in range(len(jobs))],
    })
    for name, value in columns.items():
        df[name] = value
    return df


def make_manager(output_dir: Path, **kwargs) -> ExtractionManager:
    kwargs.setdefault("post_job_action", post_job_action)
    kwargs.setdefault("n_threads", 2)
    return ExtractionManager(output_dir, kwargs.pop("generator", generate_output_path), "TEST-S2",
                             "Sentinel-2 test extraction", poll_sleep=0.1, retry_backoff=0.05, **kwargs)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_states(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cdse_backend(tmp_path_factory):
    with LocalBackend(data_dir=tmp_path_factory.mktemp("cdse"), result_style="cdse") as backend:
        yield backend


@pytest.fixture(scope="module")
def finished(local_backend, tmp_path_factory):
    """A finished seed-like extraction (current result style, SQLite job database)."""
    root = tmp_path_factory.mktemp("extraction")
    df = job_dataframe()
    manager = make_manager(root / "out")
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    stats = manager.run_jobs(df, create_datacube, root / "jobs.db")
    return root, df, manager, stats


# --------------------------------------------------------------------------- tests


def check_extraction(root: Path, df: pd.DataFrame, stats: dict, collection: Path) -> None:
    """Check a finished extraction (SHA-256 checksums, announced by the backend or not)."""
    assert stats["status_counts"] == {"finished": len(df)}
    items = list(ItemStore(root).iter_items())
    expected = {f["properties"]["sample_id"] for _, row in df.iterrows() for f in extracted_features(row)}
    assert {i["properties"].get("start_datetime") is not None for i in items} == {True}
    files = {Path(i["assets"]["data"]["href"]) for i in items}
    assert {p.parent.name for p in files} == expected and len(items) == len(expected)
    for item in items:
        data = Path(item["assets"]["data"]["href"])
        aux = Path(item["assets"]["auxiliary"]["href"])
        assert data.relative_to(root).parts[0] == "2021_EUR_DEMO_POLY_110"
        assert data.name.startswith(f"S2_10m_{data.parent.name}_32") and data.name.endswith("_2021-06-11.nc")
        # the post-job action rewrote the file: the catalogue describes it as it is now,
        # hashed with the backend's hash function, or SHA-256 where it announced none
        checksum = "1220" + sha256(data)
        assert item["assets"]["data"]["file:checksum"] == checksum
        assert item["assets"]["data"]["file:size"] == data.stat().st_size
        with xr.open_dataset(data) as ds:
            assert ds.attrs["sample_id"] == data.parent.name
        # the manager filled the auxiliary asset's metadata from its file; no checksum was
        # announced for it, so it is hashed with SHA-256 (the default)
        assert item["assets"]["auxiliary"]["file:checksum"] == "1220" + sha256(aux)
        assert item["assets"]["auxiliary"]["roles"] == ["data", "auxiliary"]
        assert item["assets"]["auxiliary"]["proj:code"] == item["properties"]["proj:code"]
        assert [b["name"] for b in item["assets"]["data"]["eo:bands"]] == [f"S2-L2A-{b}" for b in BANDS]
    report = validate_catalog(collection, check_assets=True)
    assert report.ok and report.n_items == len(expected)


@pytest.mark.slow
def test_seed_like_extraction_and_relocatable_catalogue(finished, tmp_path):
    root, df, manager, stats = finished
    collection = manager.create_stac()
    assert collection == root / "out" / "stac" / "collection.json"
    check_extraction(root / "out", df, stats, collection)
    history = [str(c.new) for c in get_job_db(root / "jobs.db").history("0")]
    assert history[-3:] == ["downloading", "postprocessing", "finished"]
    # the whole folder can move: the catalogue and the stored items go with it
    shutil.copytree(root / "out", tmp_path / "copy")
    moved = Path(shutil.move(tmp_path / "copy", tmp_path / "moved"))
    report = validate_catalog(moved / "stac", check_assets=True)
    assert report.ok and report.n_items == len(list(ItemStore(moved).iter_items()))
    assert all(i["assets"]["data"]["href"].startswith(str(moved)) for i in ItemStore(moved).iter_items())
    rebuilt = build_catalogue(moved, "TEST-S2", "rebuilt after the move")
    assert (rebuilt.parent / "collection.json").read_bytes() == (moved / "stac" / "collection.json").read_bytes() \
        .replace(b"Sentinel-2 test extraction", b"rebuilt after the move")


def test_rerun_of_a_finished_extraction_does_nothing(finished, local_backend):
    root, df, manager, _ = finished
    before = file_states(root / "out")
    stats = manager.run_jobs(df, create_datacube, root / "jobs.db")
    assert stats["status_counts"] == {"finished": len(df)}
    assert stats.get("start_job call", 0) == 0
    assert file_states(root / "out") == before


@pytest.mark.slow
def test_cdse_results_with_a_csv_job_database(cdse_backend, tmp_path):
    df = job_dataframe()
    manager = GFMAPJobManager(
        output_dir=tmp_path / "out", output_path_generator=generate_output_path, collection_id="TEST-S2",
        collection_description="CDSE-style results", post_job_action=post_job_action, poll_sleep=0.1,
        n_threads=2, post_job_params={},
    )
    manager.add_backend("cdse", cdse_backend.connect, parallel_jobs=2)
    stats = manager.run_jobs(df, create_datacube, tmp_path / "job_tracker.csv")
    collection = manager.create_stac()
    check_extraction(tmp_path / "out", df, stats, collection)
    tracker = pd.read_csv(tmp_path / "job_tracker.csv")
    assert tracker["status"].tolist() == ["finished"] * len(df) and tracker["id"].notna().all()
    # a second manager extends the catalogue instead of starting a new one
    again = make_manager(tmp_path / "out", stac=collection)
    assert validate_catalog(again.create_stac(), check_assets=True).n_items == len(list(ItemStore(tmp_path / "out").iter_items()))


def test_blake3_on_request_where_the_backend_announces_no_checksum(cdse_backend, tmp_path):
    import blake3

    with pytest.raises(ConfigurationError, match="unknown checksum_algorithm 'sha256'"):
        make_manager(tmp_path / "x", checksum_algorithm="sha256")
    manager = make_manager(tmp_path / "out", checksum_algorithm="blake3")
    manager.add_backend("cdse", cdse_backend.connect, parallel_jobs=2)
    df = job_dataframe(1)
    assert manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")["status_counts"] == {"finished": 1}
    items = list(ItemStore(tmp_path / "out").iter_items())
    assert items
    for item in items:  # data files (rewritten by the post-job action) and auxiliary files alike
        for key in ("data", "auxiliary"):
            path = Path(item["assets"][key]["href"])
            assert item["assets"][key]["file:checksum"] == "1e20" + blake3.blake3(path.read_bytes()).hexdigest()
    assert validate_catalog(manager.create_stac(), check_assets=True).ok


def test_failing_post_job_actions_mark_only_their_job(local_backend, tmp_path):
    df = pd.concat([job_dataframe(2), job_dataframe(2)], ignore_index=True)

    def action(job_items, row, parameters):
        if row.name == "0":
            raise RuntimeError("label file missing")
        if row.name == "1":
            return {"items": job_items}
        if row.name == "2":
            return [*job_items, "not an item"]
        return post_job_action(job_items, row, parameters)

    def per_job(root_folder, tmp_path, geometry_index, row):
        # both halves extract the same samples: each job's files need paths of their own
        path = generate_output_path(root_folder, tmp_path, geometry_index, row)
        return path.parent / row.title / path.name

    manager = make_manager(tmp_path / "out", post_job_action=action, max_attempts=2, generator=per_job)
    manager.add_backend("local", local_backend.connect, parallel_jobs=4)
    stats = manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"error": 3, "finished": 1}
    jobs = get_job_db(tmp_path / "jobs.db").read()
    assert jobs.loc["0", "error_class"] == "UserCodeError.RuntimeError"
    assert "label file missing" in jobs.loc["0", "error_message"]
    for key, got in (("1", "dict"), ("2", "list of Item, str")):
        assert jobs.loc[key, "error_class"] == "UserCodeError.TypeError"
        assert f"returned {got}" in jobs.loc[key, "error_message"]
        assert "list of pystac.Item" in jobs.loc[key, "error_message"]
    # only the finished job's items are stored and catalogued
    assert len(list(ItemStore(tmp_path / "out").items_dir.glob("*.json"))) == 1
    assert validate_catalog(manager.create_stac(), check_assets=True).n_items == 2


def test_hostile_output_paths_fail_their_job_and_write_nothing_outside(local_backend, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(outside, target_is_directory=True)
    targets = {"0": "../escape.nc", "1": str(outside / "absolute.nc"), "2": "link/via-symlink.nc"}

    def generator(root_folder, tmp_path, geometry_index, row):
        if row.name in targets:
            return root_folder / targets[row.name]
        return generate_output_path(root_folder, tmp_path, geometry_index, row)

    df = pd.concat([job_dataframe(2), job_dataframe(2)], ignore_index=True)
    manager = make_manager(tmp_path / "out", generator=generator, post_job_action=None)
    manager.add_backend("local", local_backend.connect, parallel_jobs=4)
    stats = manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"error": 3, "finished": 1}
    jobs = get_job_db(tmp_path / "jobs.db").read()
    assert set(jobs.loc[list(targets), "error_class"]) == {"UnsafeAssetPath"}
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("jobs.db")) == ["out", "outside"]
    assert not any(p.name.startswith(".eoextract-tmp") for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_corrupt_results_make_the_job_run_again(local_backend, tmp_path):
    df = job_dataframe(2).head(1)
    df["job_options"] = json.dumps({"eoextract_fault": "corrupt_asset", "eoextract_fault_times": 1})
    manager = make_manager(tmp_path / "out", post_job_action=None)
    manager.add_backend("local", local_backend.connect, parallel_jobs=1)
    stats = manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"finished": 1}
    db = get_job_db(tmp_path / "jobs.db")
    assert db.read().loc["0", "attempt"] == 2
    reruns = [c for c in db.history("0") if str(c.new) == "not_started" and c.old is not None]
    assert len(reruns) == 1 and "results:" in reruns[0].message and "verification" in reruns[0].message
    for item in ItemStore(tmp_path / "out").iter_items():
        path = Path(item["assets"]["data"]["href"])
        assert item["assets"]["data"]["file:checksum"] == "1220" + sha256(path)


def test_error_logs_of_failed_jobs_stay_out_of_the_data_folder(local_backend, tmp_path):
    df = job_dataframe(2).head(1)
    df["job_options"] = json.dumps({"eoextract_fault": "error"})
    manager = make_manager(tmp_path / "out", post_job_action=None, max_attempts=1)
    manager.add_backend("local", local_backend.connect, parallel_jobs=1)
    stats = manager.run_jobs(df, create_datacube, tmp_path / "jobs.db")
    assert stats["status_counts"] == {"error": 1}
    job_id = get_job_db(tmp_path / "jobs.db").read().loc["0", "id"]
    logs = json.loads((tmp_path / "out" / ".eoextract" / "jobs" / f"job_{job_id}" / f"job_{job_id}_errors.json")
                      .read_text())
    assert logs and all(entry["level"] == "error" for entry in logs)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".eoextract"]


def test_verified_files_are_not_downloaded_again(local_backend, tmp_path):
    df = job_dataframe(2)
    manager = make_manager(tmp_path / "out", post_job_action=None)
    manager.add_backend("local", local_backend.connect, parallel_jobs=2)
    manager.run_jobs(df, create_datacube, tmp_path / "first.db")
    data_files = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.nc")}
    items_before = list(ItemStore(tmp_path / "out").iter_items())
    # a new job database: the jobs run again, their (identical) results are found in place
    stats = manager.run_jobs(df, create_datacube, tmp_path / "second.db")
    assert stats["status_counts"] == {"finished": len(df)} and stats["start_job call"] == len(df)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.nc")} == data_files
    # the same items, now naming the jobs of the second run
    items_after = list(ItemStore(tmp_path / "out").iter_items())
    second = get_job_db(tmp_path / "second.db").read()
    assert {i["properties"].pop("eoextract:job_id") for i in items_after} == set(second["id"])
    for item in items_before:
        item["properties"].pop("eoextract:job_id")
    assert items_after == items_before


def test_bad_callbacks_and_inputs_are_refused_before_anything_is_submitted(local_backend, tmp_path):
    with pytest.raises(ConfigurationError, match="output_path_generator"):
        make_manager(tmp_path / "out", generator=lambda root_folder, row: root_folder)
    with pytest.raises(ConfigurationError, match="post_job_action"):
        make_manager(tmp_path / "out", post_job_action=lambda items: items)
    with pytest.raises(ConfigurationError, match="collection_id"):
        ExtractionManager(tmp_path / "out", generate_output_path, "")
    manager = make_manager(tmp_path / "out", required_columns=["out_prefix", "start_date", "geometry"])
    manager.add_backend("local", local_backend.connect, parallel_jobs=1)
    before = len(local_backend.connect().list_jobs(limit=10_000))

    def wrong_names(r, c):
        return None

    with pytest.raises(ConfigurationError, match=r"'row' and 'connection'.*missing: row, connection"):
        manager.run_jobs(job_dataframe(1), wrong_names, tmp_path / "jobs.csv")
    with pytest.raises(ConfigurationError, match="create_datacube_fn"):
        manager.run_jobs(job_dataframe(1), lambda row, connection, extra: None, tmp_path / "jobs.csv")
    with pytest.raises(ConfigurationError, match="lacks required column"):
        manager.run_jobs(job_dataframe(1).drop(columns="out_prefix"), create_datacube, tmp_path / "jobs.csv")
    with pytest.raises(ConfigurationError, match="empty"):
        manager.run_jobs(job_dataframe(1).iloc[:0], create_datacube, tmp_path / "jobs.csv")
    assert not (tmp_path / "jobs.csv").exists()
    assert len(local_backend.connect().list_jobs(limit=10_000)) == before
    with pytest.raises(ConfigurationError, match="ABSOLUTE_PUBLISHED|relative"):
        manager.create_stac(catalog_type=pystac.CatalogType.ABSOLUTE_PUBLISHED)


def test_catalogue_from_another_process_needs_only_the_folder(finished, tmp_path):
    root, _, manager, _ = finished
    assert ItemStore(root / "out").settings() == {"collection_id": "TEST-S2",
                                                 "description": "Sentinel-2 test extraction"}
    with pytest.raises(ConfigurationError, match="relative"):
        build_catalogue(root / "out", output_path=tmp_path / "catalogue")
    path = build_catalogue(root / "out", output_path=root / "out" / "flat-catalogue", layout="flat")
    collection = json.loads(path.read_text())
    assert collection["id"] == "TEST-S2" and collection["description"] == "Sentinel-2 test extraction"
    assert set(collection["item_assets"]) == {"data", "auxiliary"}
