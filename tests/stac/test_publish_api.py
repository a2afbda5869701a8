"""Publishing to a STAC API (stac-fastapi-pgstac with transactions) and into pgstac.

PostgreSQL with PostGIS comes from Debian's packages (``dev.py test`` installs them
where apt can); without them this group skips with the reason printed.
"""

from __future__ import annotations

import logging
import uuid

import orjson
import pandas as pd
import pytest
import requests

pytest.importorskip("pypgstac")
pytest.importorskip("stac_fastapi.pgstac")

from publish_fixtures import (  # noqa: E402
    make_output,
    pgstac_database,
    postgis_cluster,
    stac_fastapi_server,
    write_job_items,
)

from eoextract.extract import publish_catalogue  # noqa: E402
from eoextract.stac.publish import (  # noqa: E402
    PublishError,
    load_into_pgstac,
    publish_to_stac_api,
    walk_catalog,
)

pytestmark = pytest.mark.pg

PG_PASSWORD = "pg-Pa55word-never-logged"


@pytest.fixture(scope="module")
def cluster():
    try:
        with postgis_cluster() as running:
            yield running
    except RuntimeError as exc:
        reason = f"pgstac tests skipped: {exc}"
        print(f"\n{reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def pgstac_dsn(cluster):
    return pgstac_database(cluster, "pgstac", password=PG_PASSWORD)


@pytest.fixture(scope="module")
def api(cluster, pgstac_dsn):
    with stac_fastapi_server(cluster, "pgstac") as url:
        yield url


def _items(url: str, collection_id: str) -> dict[str, dict]:
    answer = requests.get(f"{url}/collections/{collection_id}/items", params={"limit": 1000},
                          timeout=30)
    answer.raise_for_status()
    return {f["id"]: f for f in answer.json()["features"]}


def _local_items(root) -> dict[str, dict]:
    return {e.data["id"]: e.data for e in walk_catalog(root) if e.kind == "item"}


def _job_db(path, keys):
    from eoextract.jobs.db import create_job_db

    df = pd.DataFrame({"input_published_at": [pd.Timestamp("2024-05-01T00:00:00Z")] * len(keys)},
                      index=pd.Index(keys, name="job_key"))
    return create_job_db(path, df)


def test_bulk_upsert_into_stac_api(tmp_path, api):
    cid = f"bulk-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    root = make_output(out, n_jobs=3, items_per_job=4, collection_id=cid)
    db_path = tmp_path / "jobs.db"
    _job_db(db_path, ["job-000", "job-001", "job-002"]).close()
    result = publish_catalogue(root, api, batch_size=5, job_db=str(db_path),
                               asset_base_url="https://data.example.org/out")
    assert result.ok, result.errors
    assert result.n_items == 12 and result.n_written == 13
    assert sorted(result.jobs_marked) == ["job-000", "job-001", "job-002"]

    collection = requests.get(f"{api}/collections/{cid}", timeout=30).json()
    assert collection["id"] == cid and collection["extent"]["temporal"]
    published, local = _items(api, cid), _local_items(root)
    assert published.keys() == local.keys()
    for item_id, item in published.items():
        assert item["properties"] == local[item_id]["properties"]
        rel = local[item_id]["assets"]["S2-L2A"]["href"].split("../")[-1]
        assert item["assets"]["S2-L2A"]["href"] == f"https://data.example.org/out/{rel}"
        assert item["collection"] == cid

    # a rerun upserts: same items, a changed property is updated, no duplicates
    job_file = out / ".eoextract/items/job-002.json"
    doc = orjson.loads(job_file.read_bytes())
    doc["items"][0]["properties"]["sample_id"] = "renamed"
    write_job_items(out, "job-002", doc["items"])
    from eoextract.extract import build_catalogue

    build_catalogue(out, collection_id=cid, description="Test extraction v2", validate=False)
    again = publish_catalogue(root, api, batch_size=500, job_db=str(db_path))
    assert again.ok and again.jobs_marked == []  # first publication time is kept
    published = _items(api, cid)
    assert len(published) == 12
    assert published[doc["items"][0]["id"]]["properties"]["sample_id"] == "renamed"
    assert requests.get(f"{api}/collections/{cid}", timeout=30).json()["description"] == \
        "Test extraction v2"


class _Flaky(requests.adapters.HTTPAdapter):
    """Answers 503 and 429 to the first requests and 404 to bulk_items, forwards the rest."""

    def __init__(self, faults: list[int]) -> None:
        super().__init__()
        self.faults = list(faults)
        self.seen: list[tuple[str, str, int]] = []

    def _fake(self, request, status: int) -> requests.Response:
        response = requests.Response()
        response.status_code = status
        response._content = b'{"detail": "injected"}'
        response.headers["Retry-After"] = "0"
        response.request, response.url = request, request.url
        return response

    def send(self, request, **kwargs):
        if "bulk_items" in request.url:
            response = self._fake(request, 404)
        elif self.faults:
            response = self._fake(request, self.faults.pop(0))
        else:
            response = super().send(request, **kwargs)
        self.seen.append((request.method, request.url, response.status_code))
        return response


def test_per_item_fallback_conflicts_and_retries(tmp_path, api):
    cid = f"single-{uuid.uuid4().hex[:8]}"
    root = make_output(tmp_path / "out", n_jobs=2, items_per_job=3, collection_id=cid)
    session = requests.Session()
    flaky = _Flaky([503, 429, 502])
    session.mount("http://", flaky)
    first = publish_to_stac_api(root, api, session=session, upsert=False)
    assert first.ok, first.errors
    assert [s for _, _, s in flaky.seen[:3]] == [503, 429, 502]  # retried, then went through
    assert sum(1 for _, url, _ in flaky.seen if "bulk_items" in url) == 1  # asked once
    assert len(_items(api, cid)) == 6

    # without upsert an existing item is left alone (409) ...
    again = publish_to_stac_api(root, api, session=session, upsert=False)
    assert again.ok and again.n_written == 0 and again.n_unchanged == 7
    assert any(m == "POST" and s == 409 for m, _, s in flaky.seen[-6:])
    # ... with upsert it is replaced with PUT
    replaced = publish_to_stac_api(root, api, session=session, upsert=True)
    assert replaced.ok and replaced.n_written == 7
    assert sum(1 for m, url, s in flaky.seen if m == "PUT" and "/items/" in url and s == 200) == 6

    # retries are bounded
    broken = requests.Session()
    broken.mount("http://", _Flaky([503] * 10))
    with pytest.raises(PublishError, match="HTTP 503 after 2 retries"):
        publish_to_stac_api(root, api, session=broken, max_retries=2)


def test_load_into_pgstac(tmp_path, api, pgstac_dsn, caplog):
    caplog.set_level(logging.DEBUG)
    cid = f"direct-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    root = make_output(out, n_jobs=4, items_per_job=5, collection_id=cid)
    db_path = tmp_path / "jobs.db"
    _job_db(db_path, [f"job-{j:03d}" for j in range(4)]).close()
    result = publish_catalogue(out, pgstac_dsn, job_db=str(db_path))
    assert result.n_items == 20 and len(result.jobs_marked) == 4
    published, local = _items(api, cid), _local_items(root)
    assert published.keys() == local.keys()
    for item_id, item in published.items():
        assert item["properties"] == local[item_id]["properties"]
        assert item["assets"]["label"]["href"].startswith(str(out))  # absolute local paths
    assert load_into_pgstac(root, pgstac_dsn.replace("postgresql://", "postgresql+psycopg://"),
                            method="upsert").n_items == 20
    assert len(_items(api, cid)) == 20
    with pytest.raises(PublishError) as info:
        load_into_pgstac(root, pgstac_dsn, method="insert")  # duplicates
    for text in (str(info.value), caplog.text, repr(result), result.target):
        assert PG_PASSWORD not in text


def test_cli_publish_to_api_and_pgstac(tmp_path, api, pgstac_dsn):
    from typer.testing import CliRunner

    from eoextract.cli import app

    runner = CliRunner()
    out = tmp_path / "out"
    cid = f"cli-{uuid.uuid4().hex[:8]}"
    make_output(out, n_jobs=1, items_per_job=3, collection_id=cid)
    to_api = runner.invoke(app, ["stac", "publish", str(out), "--stac-api", api,
                                 "--asset-base-url", "https://data.example.org/x"])
    assert to_api.exit_code == 0, to_api.output
    assert "3 item(s)" in to_api.output and f"{api}/collections/{cid}" in to_api.output
    to_pg = runner.invoke(app, ["stac", "publish", str(out), "--pgstac", pgstac_dsn])
    assert to_pg.exit_code == 0, to_pg.output
    assert PG_PASSWORD not in to_pg.output and "***" in to_pg.output
    assert len(_items(api, cid)) == 3


def test_openeo_stac_api_job_database_with_our_manager(api, tmp_path):
    """openeo's experimental STACAPIJobDatabase (one item per job in a STAC API collection)
    as the job database of our manager, with the embedded backend."""
    from openeo.extra.job_management.stac_job_db import STACAPIJobDatabase

    from eoextract.backend import LocalBackend
    from eoextract.jobs import MultiBackendJobManager

    collection_id = f"jobs-{uuid.uuid4().hex[:8]}"
    # created beforehand: openeo would validate it against the schemas online
    collection = {"type": "Collection", "stac_version": "1.0.0", "id": collection_id,
                  "description": "jobs", "license": "proprietary", "links": [],
                  "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                             "temporal": {"interval": [[None, None]]}}}
    requests.post(f"{api}/collections", json=collection, timeout=30).raise_for_status()
    job_db = STACAPIJobDatabase(collection_id=collection_id, stac_root_url=api)
    # item ids as text (pgstac refuses openeo's default, the integer index) and geometries
    # (pgstac needs one per item)
    import geopandas
    import shapely

    jobs = geopandas.GeoDataFrame({"item_id": ["job-a", "job-b"], "title": ["a", "b"]},
                                  geometry=[shapely.box(5.0, 51.0, 5.01, 51.01)] * 2, crs="EPSG:4326")
    job_db.initialize_from_df(jobs, on_exists="append")

    def start_job(row, connection, **kwargs):
        cube = connection.load_collection(
            "SENTINEL2_L2A", spatial_extent={"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
            temporal_extent=["2021-06-01", "2021-06-10"], bands=["B04"])
        return cube.create_job(title=row["title"], job_options={"eoextract_mode": "instant"},
                               out_format="NetCDF")

    with LocalBackend(data_dir=tmp_path / "backend") as backend:
        manager = MultiBackendJobManager(poll_sleep=0.1, retry_backoff=0.05, root_dir=tmp_path / "out")
        manager.add_backend("local", backend.connect())
        stats = manager.run_jobs(job_db=job_db, start_job=start_job)
    assert stats["start_job call"] == 2 and stats["status_counts"] == {"finished": 2}
    stored = STACAPIJobDatabase(collection_id=collection_id, stac_root_url=api).get_by_status([])
    assert sorted(stored["status"]) == ["finished", "finished"]
    assert stored["id"].notna().all() and set(stored["backend_name"]) == {"local"}
    assert sorted(stored["title"]) == ["a", "b"]


def test_existing_samples_looked_up_in_a_stac_api(tmp_path, api, monkeypatch):
    """CQL2 ``in`` searches, several chunks of values and several pages each."""
    from eoextract.stac import _existing, drop_existing, existing_values

    cid = f"existing-{uuid.uuid4().hex[:8]}"
    root = make_output(tmp_path / "out", n_jobs=3, items_per_job=3, collection_id=cid)
    assert publish_to_stac_api(root, api).ok
    monkeypatch.setattr(_existing, "API_CHUNK", 4)
    monkeypatch.setattr(_existing, "API_PAGE", 2)
    published = {f"job-{j:03d}_{k:03d}" for j in range(3) for k in range(3)}
    asked = sorted(published)[:7] + ["not-extracted-1", "not-extracted-2"]
    assert existing_values(api, "sample_id", among=asked) == set(sorted(published)[:7])
    samples = pd.DataFrame({"sample_id": asked})
    assert list(drop_existing(samples, api, "sample_id")["sample_id"]) == ["not-extracted-1", "not-extracted-2"]
