"""Test data and servers for the publishing tests (imported by them and the benchmark).

* :func:`make_output`: an extraction output folder as the extraction manager leaves it
  (asset files, per-job item files under ``.eoextract/items``) with its catalogue.
* :func:`moto_server`: a local S3 (moto) on 127.0.0.1.
* :func:`postgis_cluster`, :func:`pgstac_database`, :func:`stac_fastapi_server`: a
  PostgreSQL cluster from Debian's packages (with PostGIS) on 127.0.0.1 and a random
  port, a pgstac database in it, and stac-fastapi-pgstac with transactions in front.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


# --------------------------------------------------------------------------- extraction output


def make_item(job: str, k: int, i: int, output_dir: Path, *, size: int = 200,
              big: int = 0) -> dict[str, Any]:
    """One item with a data and an auxiliary asset, files written under ``output_dir``."""
    item_id = f"{job}_{k:03d}"
    folder = output_dir / "31UFS" / job / item_id
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(i)
    data = rng.randbytes(big or size + i % 97)
    (folder / "S2.nc").write_bytes(data)
    aux = orjson.dumps({"label": i % 7, "sample": item_id})
    (folder / "label.json").write_bytes(aux)
    lon, lat = 3.0 + (i % 40) * 0.05, 50.0 + (i // 40 % 40) * 0.05
    rel = f"31UFS/{job}/{item_id}"
    # half the items carry an integer transform, the others a float one (as real files do)
    transform = ([10, 0, 500000, 0, -10, 5600000] if i % 2 else
                 [10.0, 0.0, 500000.5, 0.0, -10.0, 5600000.0])
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [PROJ, FILE],
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[
            [lon, lat], [lon + 0.01, lat], [lon + 0.01, lat + 0.01], [lon, lat + 0.01],
            [lon, lat]]]},
        "bbox": [lon, lat, lon + 0.01, lat + 0.01],
        "properties": {
            "datetime": f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}T10:30:00Z",
            "proj:code": "EPSG:32631",
            "proj:shape": [64, 64],
            "proj:transform": transform,
            "sample_id": item_id,
        },
        "links": [],
        "assets": {
            "S2-L2A": {"href": f"{rel}/S2.nc", "type": "application/x-netcdf", "roles": ["data"],
                       "file:size": len(data),
                       "file:checksum": "1220" + hashlib.sha256(data).hexdigest()},
            "label": {"href": f"{rel}/label.json", "type": "application/json",
                      "roles": ["auxiliary"], "file:size": len(aux)},
        },
    }


def write_job_items(output_dir: Path, job: str, items: list[dict[str, Any]]) -> None:
    """The per-job item file the extraction manager writes."""
    folder = output_dir / ".eoextract" / "items"
    folder.mkdir(parents=True, exist_ok=True)
    document = {"version": 1, "job_key": job, "backend_job_id": f"j-{job}", "items": items}
    (folder / f"{job}.json").write_bytes(orjson.dumps(document))


def make_output(output_dir: Path, n_jobs: int = 4, items_per_job: int = 3, *,
                max_links: int = 2000, big: dict[int, int] | None = None,
                collection_id: str = "extraction", size: int = 200) -> Path:
    """Write an extraction output folder and its catalogue; return ``collection.json``.

    Args:
        output_dir: The folder.
        n_jobs: Jobs (keys ``job-000``, ...).
        items_per_job: Items per job.
        max_links: Most links per catalogue file (small values make sub-catalogues).
        big: Item number -> size in bytes of its data file, for large files.
        collection_id: Id of the collection.
        size: Approximate size of the data files.
    """
    from eoextract.extract import build_catalogue

    i = 0
    for j in range(n_jobs):
        job = f"job-{j:03d}"
        items = []
        for k in range(items_per_job):
            items.append(make_item(job, k, i, output_dir, size=size, big=(big or {}).get(i, 0)))
            i += 1
        write_job_items(output_dir, job, items)
    root = build_catalogue(
        output_dir, collection_id=collection_id, description="Test extraction",
        max_links_per_catalog=max_links, validate=False)
    return root


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- S3


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server in this process on 127.0.0.1; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the moto server (any credentials do)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def download_prefix(client: Any, bucket: str, prefix: str, target: Path) -> dict[str, bytes]:
    """Copy every object under ``prefix`` into ``target``; return key -> bytes."""
    out: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"]] = body
            path = target / obj["Key"][len(prefix):].lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
    return out


# --------------------------------------------------------------------------- PostgreSQL + PostGIS


def postgres_bin() -> Path | None:
    """``bin`` folder of a Debian PostgreSQL whose version has PostGIS installed."""
    for control in sorted(glob.glob("/usr/share/postgresql/*/extension/postgis.control"),
                          reverse=True):
        version = Path(control).parts[4]
        bin_dir = Path(f"/usr/lib/postgresql/{version}/bin")
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return bin_dir
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str]) -> list[str]:
    """Run as ``postgres`` when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextlib.contextmanager
def postgis_cluster() -> Iterator[dict[str, Any]]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with PostGIS available.

    Yields ``{"host", "port", "user"}``. Raises ``RuntimeError`` with the reason when it
    cannot be started (callers skip).
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("no Debian PostgreSQL with PostGIS (apt-get install postgresql "
                           "postgresql-postgis)")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        raise RuntimeError("running as root without runuser: cannot start PostgreSQL")
    # not under pytest's temporary folder: it is mode 0700 and owned by the caller
    folder = Path(tempfile.mkdtemp(prefix="eoextract-pgstac-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    try:
        subprocess.run(_as_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                                 "-A", "trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")
        subprocess.run(_as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                                 str(folder / "server.log"), "-o", options, "-w", "-t", "60",
                                 "start"]), check=True, capture_output=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = folder / "server.log"
        detail = log.read_text()[-500:] if log.exists() else getattr(exc, "stderr", b"")
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {exc}: {detail!r}") from exc
    try:
        yield {"host": "127.0.0.1", "port": port, "user": "postgres"}
    finally:
        subprocess.run(_as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                 "-w", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def pgstac_database(cluster: dict[str, Any], name: str, password: str = "unused") -> str:
    """Create database ``name`` and migrate it to pgstac; return its DSN (with password)."""
    import psycopg
    from pypgstac.db import PgstacDB
    from pypgstac.migrate import Migrate

    admin = f"postgresql://{cluster['user']}@{cluster['host']}:{cluster['port']}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = (f"postgresql://{cluster['user']}:{password}@{cluster['host']}:{cluster['port']}"
           f"/{name}")
    with PgstacDB(dsn=dsn) as db:
        Migrate(db).run_migration()
    return dsn


@contextlib.contextmanager
def stac_fastapi_server(cluster: dict[str, Any], database: str) -> Iterator[str]:
    """stac-fastapi-pgstac with transactions on 127.0.0.1 (a uvicorn child process)."""
    import requests

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_"))}
    env.update(PGUSER=cluster["user"], PGPASSWORD="unused", PGHOST=cluster["host"],
               PGPORT=str(cluster["port"]), PGDATABASE=database,
               ENABLE_TRANSACTIONS_EXTENSIONS="true", DB_MIN_CONN_SIZE="1",
               DB_MAX_CONN_SIZE="4", PYTHONUNBUFFERED="1")
    workdir = tempfile.mkdtemp(prefix="eoextract-stac-api-")  # no stray .env is read
    log = open(Path(workdir) / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("stac-fastapi-pgstac exited: "
                                   + (Path(workdir) / "server.log").read_text()[-800:])
            try:
                if requests.get(f"{url}/_mgmt/ping", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("stac-fastapi-pgstac did not answer within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
