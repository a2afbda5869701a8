"""Publishing: S3 upload against s3fs, and loading into pgstac.

Usage::

    python benchmarks/bench_publish.py                 # 10k items to moto, 100k into pgstac
    python benchmarks/bench_publish.py --n 2000 --pg-n 20000
    python benchmarks/bench_publish.py --skip-pg       # only the S3 part
    python benchmarks/bench_publish.py --baseline none # no s3fs runs

S3: a synthetic catalogue of ``--n`` items (built with ``build_collection``; each item
has ``--assets`` small asset files) is uploaded to a local moto server (its own
process on 127.0.0.1; moto's S3 app alone, or with ``--moto all`` its all-services
server) twice: by ``s3fs``'s ``put(recursive=True)`` of the output folder
(the baseline: one file at a time, ``batch_size=1``, and with fsspec's default of 128
files at a time) and by :func:`eoextract.stac.publish.publish_to_s3` (``--workers``
uploads at once, each file hashed and verified). Then the rerun of ours, which must
upload nothing. Goal: ours ≥3× faster than the sequential baseline. Parallel runs are
bounded by moto's CPU (about 1.5 ms per PUT for the S3 app, 2.2 ms for the
all-services server; one Python process), so the ratios depend on how much CPU the
machine has free.

pgstac: ``--pg-n`` items are loaded into a pgstac database (Debian PostgreSQL + PostGIS
on 127.0.0.1) by :func:`~eoextract.stac.publish.load_into_pgstac`, which reads the
catalogue from disk; the baseline is pypgstac's own loader reading the same items from
an NDJSON file (the floor). Goal: ≤60 s for 100k items. Then ``--api-n`` items through
stac-fastapi-pgstac with transactions: bulk upserts against one request per item.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "stac"))

from publish_fixtures import (  # noqa: E402
    free_port,
    pgstac_database,
    postgis_cluster,
    stac_fastapi_server,
)

PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


def items(n: int, out: Path, *, assets: int, write_files: bool, size: int = 1500) -> Iterator[dict]:
    """Synthetic extraction items (dicts), their asset files written under ``out``."""
    rng = random.Random(42)
    for i in range(n):
        zone = 31 + i % 5
        lon = -3.0 + 6.0 * (zone - 31) + (i * 7919 % 1000) / 200.0
        lat = 46.0 + (i * 104729 % 1200) / 100.0
        when = dt.datetime(2021, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i % 730)
        folder = out / f"{zone}U" / f"{i // 1000:03d}" / f"{i:07d}"
        item_assets = {}
        for a in range(assets):
            path = folder / f"part-{a}.nc"
            entry = {"href": str(path), "type": "application/x-netcdf", "roles": ["data"]}
            if write_files:
                data = rng.randbytes(size + i % 500)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                entry["file:size"] = len(data)
                entry["file:checksum"] = "1220" + hashlib.sha256(data).hexdigest()
            item_assets[f"data-{a}"] = entry
        yield {
            "type": "Feature", "stac_version": "1.1.0", "stac_extensions": [PROJ, FILE],
            "id": f"S2-L2A_{zone}U_{i:07d}",
            "geometry": {"type": "Polygon", "coordinates": [[
                [lon, lat], [lon + 0.006, lat], [lon + 0.006, lat + 0.006], [lon, lat + 0.006],
                [lon, lat]]]},
            "bbox": [lon, lat, lon + 0.006, lat + 0.006],
            "properties": {"datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "proj:code": f"EPSG:{32600 + zone}", "proj:shape": [64, 64],
                           "proj:transform": [10.0, 0.0, 400000.0 + i, 0.0, -10.0, 5100000.0]},
            "links": [],
            "assets": item_assets,
        }


def build(n: int, out: Path, *, assets: int, write_files: bool) -> Path:
    from eoextract.stac import build_collection

    started = time.perf_counter()
    root = build_collection(items(n, out, assets=assets, write_files=write_files), out / "stac",
                            collection_id="bench", description="Publishing benchmark")
    print(f"  catalogue of {n} items built in {time.perf_counter() - started:.1f} s")
    return root


# --------------------------------------------------------------------------- S3


#: moto's S3 application alone on werkzeug's threaded server. ``python -m moto.server``
#: serves every AWS service behind one dispatcher that looks up the service of each
#: request (listing moto's ~175 service folders twice per request); that adds about
#: 0.7 ms of CPU to moto's 1.5 ms per PUT and, moto being one Python process, caps any
#: client near 450 PUT/s on this machine. ``--moto all`` measures on that server instead.
_MOTO_S3_ONLY = (
    "import sys; from moto.server import create_backend_app; "
    "from werkzeug.serving import run_simple; "
    "run_simple('127.0.0.1', int(sys.argv[1]), create_backend_app('s3'), threaded=True)"
)


def moto_process(mode: str = "s3") -> tuple[subprocess.Popen, str]:
    """A moto server in its own process: ``"s3"`` (the S3 app alone) or ``"all"`` services."""
    port = free_port()
    cmd = ([sys.executable, "-c", _MOTO_S3_ONLY, str(port)] if mode == "s3" else
           [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def bench_s3(n: int, assets: int, workers: int, baseline_modes: list[str], moto: str = "s3") -> None:
    import boto3

    from eoextract.stac.publish import publish_to_s3

    server = "moto's S3 app alone" if moto == "s3" else "moto's all-services server"
    print(f"S3: {n} items, {assets} asset file(s) each, {server} on 127.0.0.1")
    tmp = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    proc, endpoint = moto_process(moto)
    try:
        out = tmp / "out"
        root = build(n, out, assets=assets, write_files=True)
        files = sum(1 for p in out.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        print(f"  tree: {files} files, {size / 2**20:.1f} MiB")
        creds = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds)
        client.create_bucket(Bucket="bench")
        baselines: dict[str, float] = {}
        if baseline_modes:
            import s3fs

            fs = s3fs.S3FileSystem(key="bench", secret="bench",
                                   client_kwargs={"endpoint_url": endpoint,
                                                  "region_name": "us-east-1"})
            for mode in baseline_modes:
                batch = 1 if mode == "sequential" else None  # None: fsspec's default (128)
                started = time.perf_counter()
                fs.put(str(out) + "/", f"bench/s3fs-{mode}/", recursive=True, batch_size=batch)
                baselines[mode] = time.perf_counter() - started
                label = f"s3fs put(recursive=True) {mode}:"
                print(f"  baseline {label:<36} {baselines[mode]:7.1f} s  "
                      f"({files / baselines[mode]:6.0f} files/s)")
        def publish() -> tuple[Any, float]:
            started = time.perf_counter()
            result = publish_to_s3(root, "s3://bench/ours", endpoint_url=endpoint,
                                   access_key_id="bench", secret_access_key="bench", workers=workers)
            assert result.ok, result.errors[:5]
            return result, time.perf_counter() - started

        result, ours = publish()
        label = f"eoextract publish_to_s3 (x{workers}):"
        print(f"  {label:<45} {ours:7.1f} s  "
              f"({result.n_written / ours:6.0f} objects/s, {result.n_written} objects, verified)")
        again, rerun = publish()
        assert again.n_written == 0
        print(f"  {'rerun (nothing changed):':<45} {rerun:7.1f} s  "
              f"({again.n_unchanged} objects checked)")
        for mode, seconds in baselines.items():
            ratio = seconds / ours
            goal = (f"  (goal >= 3x: {'met' if ratio >= 3 else 'NOT met'})"
                    if mode == "sequential" else "")
            print(f"  ratio s3fs {mode}/ours: {ratio:.2f}x{goal}")
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- pgstac


def bench_api(cluster: dict, n: int, folder: Path) -> None:
    """The same through stac-fastapi-pgstac: bulk upserts against one POST per item."""
    from eoextract.stac.publish import publish_to_stac_api

    root = build(n, folder, assets=1, write_files=False)
    pgstac_database(cluster, "api")
    with stac_fastapi_server(cluster, "api") as url:
        import requests as http

        class NoBulk(http.adapters.HTTPAdapter):
            def send(self, request, **kwargs):  # type: ignore[override]
                if "bulk_items" in request.url:
                    response = http.Response()
                    response.status_code, response.request = 404, request
                    return response
                return super().send(request, **kwargs)

        session = http.Session()
        session.mount("http://", NoBulk())
        started = time.perf_counter()
        publish_to_stac_api(root, url, session=session, upsert=False)
        single = time.perf_counter() - started
        print(f"  {'baseline: one POST per item (new items):':<45} {single:7.1f} s  "
              f"({n / single:6.0f} items/s)")
        started = time.perf_counter()
        result = publish_to_stac_api(root, url, batch_size=500)
        bulk = time.perf_counter() - started
        assert result.ok, result.errors[:3]
        label = f"bulk_items upsert of the same {n} items:"
        print(f"  {label:<45} {bulk:7.1f} s  ({n / bulk:6.0f} items/s)")
        print(f"  ratio one-by-one/bulk: {single / bulk:.1f}x")


def bench_pgstac(n: int, api_n: int) -> None:
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    from eoextract.stac.publish import load_into_pgstac
    from eoextract.stac.publish._walk import api_documents

    print(f"pgstac: {n} items, Debian PostgreSQL + PostGIS on 127.0.0.1")
    tmp = Path(tempfile.mkdtemp(prefix="bench-pgstac-"))
    try:
        with postgis_cluster() as cluster:
            out = tmp / "out"
            root = build(n, out, assets=1, write_files=False)
            dsn = pgstac_database(cluster, "ours")
            started = time.perf_counter()
            result = load_into_pgstac(root, dsn, method="upsert")
            ours = time.perf_counter() - started
            print(f"  {'eoextract load_into_pgstac:':<45} {ours:7.1f} s  "
                  f"({result.n_items / ours:6.0f} items/s; goal <= 60 s for 100k: "
                  f"{'met' if ours <= 60 * n / 100_000 else 'NOT met'})")
            # the floor: pypgstac's loader on NDJSON already prepared
            collection, docs = api_documents(root)
            ndjson = tmp / "items.ndjson"
            with open(ndjson, "wb") as fh:
                for doc in docs:
                    fh.write(orjson.dumps(doc) + b"\n")
            base_dsn = pgstac_database(cluster, "baseline")
            with PgstacDB(dsn=base_dsn) as db:
                loader = Loader(db=db)
                loader.load_collections(iter([collection]), insert_mode=Methods.upsert)
                started = time.perf_counter()
                loader.load_items(str(ndjson), insert_mode=Methods.upsert)
                floor = time.perf_counter() - started
            print(f"  {'baseline pypgstac load of NDJSON:':<45} {floor:7.1f} s  "
                  f"({n / floor:6.0f} items/s)")
            print(f"  ratio ours/baseline: {ours / floor:.2f}x (reading {n} item files from the "
                  "catalogue included)")
            started = time.perf_counter()
            load_into_pgstac(root, dsn, method="upsert")
            print(f"  {'reload (upsert, nothing changed):':<45} "
                  f"{time.perf_counter() - started:7.1f} s")
            if api_n:
                bench_api(cluster, api_n, tmp / "api")
    except RuntimeError as exc:
        print(f"  skipped: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="items uploaded to S3")
    parser.add_argument("--assets", type=int, default=1, help="asset files per item (S3)")
    parser.add_argument("--workers", type=int, default=64, help="parallel uploads")
    parser.add_argument("--pg-n", type=int, default=100_000, help="items loaded into pgstac")
    parser.add_argument("--api-n", type=int, default=1000,
                        help="items published through stac-fastapi-pgstac (0: skip)")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--baseline", choices=["both", "sequential", "default", "none"],
                        default="both", help="s3fs runs: batch_size=1 (sequential, the goal's "
                        "baseline), fsspec's default batches, both or none")
    parser.add_argument("--moto", choices=["s3", "all"], default="s3",
                        help="moto's S3 app alone (default) or its all-services server")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    print(f"bench_publish {uuid.uuid4().hex[:6]}: python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpu(s)")
    if not args.skip_s3:
        modes = {"both": ["sequential", "default"], "none": []}.get(args.baseline, [args.baseline])
        bench_s3(args.n, args.assets, args.workers, modes, args.moto)
    if not args.skip_pg:
        bench_pgstac(args.pg_n, args.api_n)


if __name__ == "__main__":
    main()
