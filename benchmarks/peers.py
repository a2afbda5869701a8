"""Peer tools in their own virtualenvs, and running benchmark functions in child processes.

The benchmarks compare eoextract with the tools users would otherwise pick. Each peer lives in
a virtualenv of its own under ``benchmarks/.peers/<name>`` (git-ignored), created with ``uv``
on first use and reused while its requirements do not change:

* ``openeo``: the latest ``openeo`` (its ``MultiBackendJobManager`` and CSV/Parquet job
  databases), with ``pyarrow`` for Parquet;
* ``gfmap``: ``openeo-gfmap==0.4.7`` (the last release with ``GFMAPJobManager``) with the
  ``openeo<=0.35`` it pins, and ``pystac[validation]``, without which its per-job
  ``validate_all()`` fails;
* ``pystac``: plain ``pystac[validation]`` for writing (and validating) catalogues.

Benchmark code runs in child processes of either the peer's interpreter or this project's
own (:func:`call`), so every measure starts from a fresh process (CPU time and peak memory of
that process only) and peer code never imports eoextract. This module imports only the
standard library at the top, so any of the interpreters can run it::

    python benchmarks/peers.py setup            # create or update every peer virtualenv
    python benchmarks/peers.py versions         # what is installed
    python benchmarks/peers.py call MODULE FUNCTION '{"kwarg": 1}'   # (used by run_all.py)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / ".peers"
RESULT_TAG = "@@result "


@dataclass(frozen=True)
class Peer:
    """A peer tool and the requirements of its virtualenv."""

    name: str
    requirements: tuple[str, ...]
    label: str

    @property
    def folder(self) -> Path:
        return PEERS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"

    def fingerprint(self) -> str:
        """Changes when the requirements or the base interpreter change."""
        text = "\n".join([*self.requirements, sys.version, os.path.realpath(sys.executable)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


PEERS: dict[str, Peer] = {
    "openeo": Peer("openeo", ("openeo", "pyarrow"), "openeo MultiBackendJobManager (latest openeo)"),
    "gfmap": Peer("gfmap", ("openeo-gfmap==0.4.7", "openeo<=0.35", "pystac[validation]"),
                  "openeo-gfmap 0.4.7 GFMAPJobManager (openeo<=0.35)"),
    "pystac": Peer("pystac", ("pystac[validation]",), "plain pystac"),
}


def _uv() -> str | None:
    for candidate in (Path(sys.executable).parent / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def ensure(name: str, *, refresh: bool = False, log: Any = print) -> Path:
    """Create (or reuse) the virtualenv of peer ``name``; returns its interpreter.

    Args:
        name: A key of :data:`PEERS`.
        refresh: Recreate it even when cached (picks up newer "latest" releases).
        log: Where progress lines go.

    Raises:
        RuntimeError: When the virtualenv cannot be created or installed.
    """
    peer = PEERS[name]
    marker = peer.folder / ".fingerprint"
    if not refresh and peer.python.exists() and marker.exists() and marker.read_text() == peer.fingerprint():
        return peer.python
    shutil.rmtree(peer.folder, ignore_errors=True)
    peer.folder.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    uv = _uv()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    try:
        if uv:
            subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(peer.folder)],
                           check=True, env=env, capture_output=True, text=True)
            subprocess.run([uv, "pip", "install", "-q", "--python", str(peer.python), *peer.requirements],
                           check=True, env=env, capture_output=True, text=True)
        else:
            subprocess.run([sys.executable, "-m", "venv", str(peer.folder)], check=True, env=env)
            subprocess.run([str(peer.python), "-m", "pip", "install", "-q", *peer.requirements],
                           check=True, env=env, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(peer.folder, ignore_errors=True)
        raise RuntimeError(f"could not install peer {name!r} ({' '.join(peer.requirements)}): "
                           f"{(exc.stderr or '').strip()[-800:]}") from exc
    marker.write_text(peer.fingerprint())
    log(f"peer virtualenv {name!r} ready in {time.perf_counter() - t0:.1f} s "
        f"({', '.join(f'{k} {v}' for k, v in versions(name).items())})")
    return peer.python


def versions(name: str) -> dict[str, str]:
    """Versions of the main packages installed in a peer's virtualenv."""
    peer = PEERS[name]
    wanted = ["openeo", "openeo-gfmap", "pystac", "pandas", "pyarrow", "jsonschema"]
    code = ("import importlib.metadata as m, json, sys\n"
            "out = {}\n"
            f"for d in {wanted!r}:\n"
            "    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    out = subprocess.run([str(peer.python), "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- peer-side measures


def _local_schemas(schemas: str) -> None:
    """Make pystac read JSON schemas from eoextract's bundle (``map.json``) instead of the
    network; URLs missing from the bundle are still fetched (and fail offline)."""
    import pystac
    from pystac.stac_io import DefaultStacIO

    folder = Path(schemas)
    url_map = json.loads((folder / "map.json").read_text())

    def read_text(self, source, *args, **kwargs):
        if str(source) in url_map:
            return (folder / url_map[str(source)]).read_text()
        return DefaultStacIO.read_text(self, source, *args, **kwargs)

    # a module-level name: GFMAPJobManager pickles the collection, and with it its StacIO
    cls = type("_LocalSchemas", (DefaultStacIO,), {"read_text": read_text, "__module__": __name__})
    globals()["_LocalSchemas"] = cls
    pystac.StacIO.set_default(cls)


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def gfmap_extract(url: str, n: int, workdir: str, schemas: str, slots: int = 10, poll_sleep: float = 0.2,
                  job_seconds: float = 0.3) -> dict:
    """An extraction of ``n`` one-asset jobs with openeo-gfmap 0.4.7's ``GFMAPJobManager``.

    Runs in the ``gfmap`` virtualenv (``openeo<=0.35``) against the embedded backend with
    CDSE-style results. How it has to be set up to run at all:

    * the STAC collection is created beforehand with an extent (the manager's own fresh
      collection has ``extent=None`` and fails on the first ``validate_all()``);
    * jobs run ``job_seconds`` on the backend: with openeo 0.35 a job already finished when
      it is launched is never tracked, so its ``on_job_done`` (downloads, STAC) never runs;
    * the post-job action makes item ids unique per job (every job's item is called after
      its asset, ``openEO.nc``; the manager silently drops items whose id it already has);
    * pystac validates against eoextract's bundled schemas (it would fetch them online).

    Returns:
        ``wall``/``cpu`` seconds of ``run_jobs`` (which also writes the catalogue),
        ``peak_rss_mib``, final status counts, files downloaded, items in the catalogue, and
        the time of the per-job catalogue update (``validate_all`` + pickle of the whole
        collection) over the first and the last tenth of the jobs.
    """
    import logging

    import openeo
    import pandas as pd
    import pystac
    from openeo_gfmap.manager.job_manager import GFMAPJobManager

    logging.basicConfig(level=logging.ERROR)
    for name in ("openeo_gfmap", "openeo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _local_schemas(schemas)
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    extent = pystac.Extent(pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
                           pystac.TemporalExtent([[None, None]]))
    collection = pystac.Collection("bench-gfmap", "benchmark extraction", extent)
    collection.normalize_hrefs(str(out / "stac"))
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    graph = {
        "load": {"process_id": "load_collection", "arguments": {
            "id": "SENTINEL2_L2A", "spatial_extent": {"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
            "temporal_extent": ["2021-06-01", "2021-06-10"], "bands": ["B04"]}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"},
                                                              "format": "netCDF"}, "result": True},
    }
    options = {"eoextract_mode": "instant", "eoextract_fault": "slow", "eoextract_fault_delay_s": job_seconds}

    def start_job(row, connection, **kwargs):
        return connection.create_job(graph, title=str(row["title"]), additional=options)

    def output_path(output_dir, idx, row, asset_id):
        return Path(output_dir) / "data" / str(row["title"]) / asset_id

    def post_job_action(job_items, row):
        for item in job_items:
            item.id = f"{row['title']}_{item.id}"
        return job_items

    update_times: list[float] = []

    class Timed(GFMAPJobManager):
        def _update_stac(self, job_id, job_items):
            t0 = time.perf_counter()
            try:
                return super()._update_stac(job_id, job_items)
            finally:
                update_times.append(time.perf_counter() - t0)

    connection = openeo.connect(url, auto_validate=False).authenticate_basic("eoextract", "eoextract")
    manager = Timed(out, output_path, collection_id="bench-gfmap", stac=out / "stac" / "collection.json",
                    post_job_action=post_job_action, poll_sleep=poll_sleep, n_threads=2)
    manager.add_backend("local", connection, parallel_jobs=slots)
    prefix = f"gf{time.time_ns()}"
    frame = pd.DataFrame({"title": [f"{prefix}-{i}" for i in range(n)], "backend_name": "local"})
    t0, c0 = time.perf_counter(), time.process_time()
    manager.run_jobs(frame, start_job, out / "jobs.csv")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tracker = pd.read_csv(out / "jobs.csv")
    written = pystac.read_file(str(out / "stac" / "collection.json"))
    tenth = max(1, len(update_times) // 10)
    return {
        "n": n, "wall": wall, "cpu": cpu, "peak_rss_mib": _vm_hwm_mib(),
        "status_counts": {str(k): int(v) for k, v in tracker["status"].value_counts().items()},
        "files": sum(1 for p in (out / "data").rglob("*") if p.is_file()) if (out / "data").exists() else 0,
        "items": sum(1 for _ in written.get_items(recursive=True)),
        "stac_updates": len(update_times),
        "stac_update_first_ms": 1000 * sum(update_times[:tenth]) / tenth if update_times else None,
        "stac_update_last_ms": 1000 * sum(update_times[-tenth:]) / tenth if update_times else None,
    }


# --------------------------------------------------------------------------- child processes


class ChildFailed(RuntimeError):
    """A benchmark function failed in its child process."""


def call(python: str | Path, module: str, function: str, *, timeout: float = 3600.0,
         env: dict[str, str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run ``module.function(**kwargs)`` (a module of ``benchmarks/``) in a child process.

    Args:
        python: The interpreter (a peer's, or ``sys.executable`` for eoextract).
        module: Module name inside ``benchmarks/``.
        function: Its function returning a JSON-ready dict.
        timeout: Seconds before the child is killed.
        env: Extra environment variables.
        **kwargs: JSON-ready keyword arguments.

    Returns:
        What the function returned.

    Raises:
        ChildFailed: With the end of the child's error output.
    """
    child_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    child_env.update({"PYTHONUNBUFFERED": "1", "NO_PROXY": "127.0.0.1,localhost"}, **(env or {}))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        child_env.pop(var, None)
    cmd = [str(python), str(Path(__file__).resolve()), "call", module, function, json.dumps(kwargs)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                              env=child_env)
    except subprocess.TimeoutExpired as exc:
        raise ChildFailed(f"{module}.{function} timed out after {timeout:.0f} s") from exc
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
    raise ChildFailed(f"{module}.{function} failed (exit {proc.returncode}):\n{tail}")


def _child_main(module: str, function: str, kwargs_json: str) -> int:
    sys.path.insert(0, str(HERE))
    fn = getattr(importlib.import_module(module), function)
    result = fn(**json.loads(kwargs_json))
    sys.stdout.flush()
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 1 and argv[0] == "call":
        return _child_main(*argv[1:4])
    if argv[:1] == ["setup"]:
        for name in PEERS:
            ensure(name, refresh="--refresh" in argv)
        return 0
    if argv[:1] == ["versions"]:
        for name, spec in PEERS.items():
            print(name, versions(name) if spec.python.exists() else "(not installed)")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
