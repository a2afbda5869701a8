"""Download and describe real sample_by_feature results of the embedded backend."""

from __future__ import annotations

import hashlib
import time

import pandas as pd
import pytest
import xarray as xr
from pyproj import CRS

from eoextract.extract._stac_item import build_item, make_item_id, read_file_metadata
from eoextract.extract._placement import OutputPathGenerator
from eoextract.jobs._download import download_job_assets, parse_job_results, session_for
from eoextract.stac import validate_dict


def _square(lon: float, lat: float, half: float = 0.0009) -> dict:
    return {
        "type": "Polygon",
        "coordinates": [[[lon - half, lat - half], [lon + half, lat - half], [lon + half, lat + half],
                         [lon - half, lat + half], [lon - half, lat - half]]],
    }


SAMPLES = ["s-a", "s-b", "s-c"]
FEATURES = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "properties": {"sample_id": s}, "geometry": _square(5.0 + 0.01 * i, 51.0)}
        for i, s in enumerate(SAMPLES)
    ],
}


def generate_output_path(root_folder, tmp_path, geometry_index, row):
    """As in the reference notebook: the callback opens the downloaded file."""
    with xr.open_dataset(tmp_path) as ds:
        epsg = CRS.from_wkt(ds.crs.attrs["crs_wkt"]).to_epsg()
    sample_id = row.sample_ids[geometry_index]
    return root_folder / str(epsg) / sample_id / f"{row.out_prefix}_{sample_id}_{epsg}{row.out_extension}"


@pytest.mark.parametrize("style", ["current", "cdse"])
def test_sample_by_feature_results_to_valid_items(connection, tmp_path, style):
    cube = connection.load_collection(
        "SENTINEL2_L2A",
        spatial_extent={"west": 4.99, "south": 50.99, "east": 5.04, "north": 51.01},
        temporal_extent=["2021-06-01", "2021-06-16"],
        bands=["B02", "B03", "SCL"],
    ).filter_spatial(geometries=FEATURES)
    job = cube.create_job(
        out_format="NetCDF", title=f"download-{style}", sample_by_feature=True,
        job_options={"eoextract_result_style": style},
    )
    job.start()
    deadline = time.monotonic() + 120
    while (status := job.status()) not in ("finished", "error", "canceled"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert status == "finished"

    session, headers = session_for(connection)
    results_url = connection.build_url(f"/jobs/{job.job_id}/results")
    doc = session.get(results_url, headers=headers(results_url), timeout=30).json()
    assets = parse_job_results(
        doc, base_url=results_url, fetch=lambda url: session.get(url, headers=headers(url), timeout=30).json()
    )
    assert sorted(a.geometry_index for a in assets) == [0, 1, 2]
    assert all(a.geometry_4326 is not None and a.epsg for a in assets)
    assert all((a.checksum is not None) == (style == "current") for a in assets)

    row = pd.Series({"out_prefix": "S2_10m", "out_extension": ".nc", "sample_ids": SAMPLES}, name="job-1")
    root = tmp_path / "out"
    placer = OutputPathGenerator(generate_output_path, root)
    done = download_job_assets(session, assets, root, placer.chooser(row, assets), headers=headers,
                               job_key=f"job-1-{style}")
    items = []
    for d in done:
        meta = read_file_metadata(d.path, checksum=d.checksum)
        items.append(build_item(d.asset, meta, item_id=make_item_id("job-1", d.asset.name, d.path),
                                collection_id="S2-EXTRACTION"))
    by_sample = {d.path.parent.name: item for d, item in zip(done, items)}
    assert sorted(by_sample) == SAMPLES
    for d, item in zip(done, items):
        assert d.path.name.startswith(f"S2_10m_{d.path.parent.name}_326")
        asset = item.assets[d.asset.name].to_dict()
        if d.asset.checksum:  # the backend's SHA-256, verified and kept
            assert asset["file:checksum"] == d.asset.checksum and d.asset.checksum.startswith("1220")
        else:  # none announced (CDSE): SHA-256 of the file
            assert asset["file:checksum"] == "1220" + hashlib.sha256(d.path.read_bytes()).hexdigest()
        assert [b["name"] for b in asset["eo:bands"]] == ["B02", "B03", "SCL"]
        assert asset["eo:bands"][0].get("common_name") == "blue"
        assert asset["raster:bands"][0]["data_type"] == "uint16"
        d_item = item.to_dict(include_self_link=False)
        d_item["links"] = [{"rel": "collection", "href": "../collection.json", "type": "application/json"}]
        assert validate_dict(d_item) == []
        # Footprints of the file and of the backend agree.
        west, south, east, north = item.bbox
        bw, bs, be, bn = d.asset.bbox_4326
        assert abs(west - bw) < 1e-4 and abs(north - bn) < 1e-4
    # A rerun finds everything in place.
    again = download_job_assets(session, assets, root, placer.chooser(row, assets), headers=headers,
                                job_key=f"job-1-{style}")
    assert all(d.reused for d in again)
