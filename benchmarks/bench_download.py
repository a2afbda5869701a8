"""Download throughput of verified downloads against a plain streamed copy.

A loopback HTTP server (its own process, ``sendfile`` from disk) serves N files of
S MB. The same files are then fetched in several ways, in alternating rounds:

* **baseline** — plain ``requests`` streaming into files, same number of threads,
  no hashing, no fsync, no rename;
* **baseline+fsync** — the same, each file flushed to disk (``fdatasync``) after
  its last byte: the durability of eoextract's default;
* **baseline+sha256** — the baseline with an inline SHA-256 check, the least a
  download verified against a backend's SHA-256 has to do;
* **baseline+sha256+fsync** — the same, each file flushed to disk after its last byte:
  the least eoextract's default download (SHA-256, flushed) has to do;
* **baseline+blake3** — the baseline with an inline BLAKE3 hash, the least a download
  that records a checksum has to do (it bounds eoextract's ratio without fsync);
* **eoextract** — :func:`eoextract.jobs._download.download_job_assets` on assets
  announced with their size only, as CDSE's results are: SHA-256 (the default) while
  streaming, size verified, fsync, atomic placement, download record written (and once
  more with ``fsync=False``, as the plain baselines do not flush);
* **eoextract blake3** — the same without fsync, hashed with BLAKE3
  (``checksum_algorithm="blake3"``);
* **eoextract sha256** — the same on assets announced with a SHA-256
  ``file:checksum``, which is then verified with SHA-256.

Usage::

    python benchmarks/bench_download.py [--files 20] [--mb 20] [--workers 1 4] [--rounds 3]

The ways run in alternating order (forward, then backward), each copy deleted as soon
as it is timed so that its unwritten pages are not written back during the next run.
Prints, per worker count, MB/s and client CPU time per MB of each way's best round, and
the ratios of like with like: eoextract without fsync / baseline+sha256 (the same hash,
target ≥ 0.90), eoextract / baseline+sha256+fsync (both hash and flush, target ≥ 0.80),
eoextract blake3 / baseline+blake3, also against the plain baseline; each ratio is the
median over the rounds of the ratio within one round, which a lucky or unlucky round does
not sway. The speed of SHA-256 alone on this machine and the baseline+sha256 / baseline
ratio bound what any verified download reaches when the client is short of CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from eoextract._util.checksum import DEFAULT_ALGORITHM, multihash, new_hasher
from eoextract.jobs._download import RemoteAsset, download_job_assets


def _serve(folder: str, port_queue: mp.Queue) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802
            path = Path(folder) / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            size = path.stat().st_size
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(size - start))
            self.end_headers()
            self.wfile.flush()
            with open(path, "rb") as fh:
                self.connection.sendfile(fh, offset=start)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


def baseline(session: requests.Session, assets: list[RemoteAsset], out: Path, workers: int,
             *, algorithm: str | None = None, fsync: bool = False) -> None:
    """Plain streamed copies; with ``algorithm`` each file is hashed inline (and checked when
    it is SHA-256: the least a verified download must do); with ``fsync`` each file is
    flushed (``fdatasync``) after its last byte."""

    def fetch(asset: RemoteAsset) -> None:
        digest = new_hasher(algorithm) if algorithm else None
        with session.get(asset.href, stream=True, headers={"Accept-Encoding": "identity"}) as resp:
            resp.raise_for_status()
            with open(out / asset.name, "wb") as fh:
                for chunk in resp.iter_content(chunk_size=1 << 20):
                    fh.write(chunk)
                    if digest is not None:
                        digest.update(chunk)
                if fsync:
                    fh.flush()
                    os.fdatasync(fh.fileno())
        if algorithm == "sha2-256" and multihash(algorithm, digest.hexdigest()) != asset.checksum:
            raise RuntimeError(f"checksum mismatch for {asset.name}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fetch, assets))


def ours(session: requests.Session, assets: list[RemoteAsset], out: Path, workers: int, *,
         announced: bool = False, fsync: bool = True, algorithm: str = DEFAULT_ALGORITHM) -> None:
    """:func:`download_job_assets`; the assets announced with their size only, as CDSE's
    are (hashed with ``algorithm``), unless ``announced`` (then with their SHA-256
    ``file:checksum``)."""
    if not announced:
        assets = [dataclasses.replace(a, checksum=None) for a in assets]
    done = download_job_assets(
        session, assets, out, lambda a, tmp: out / a.name, max_workers=workers, skip_verified=False,
        job_key="bench", fsync=fsync, checksum_algorithm=algorithm,
    )
    if algorithm == "sha2-256" and any(d.checksum != a.checksum for d, a in zip(done, remote_of(assets))):
        raise RuntimeError("checksum mismatch")


#: The assets as served (with their SHA-256), by name, to check the unannounced downloads.
_SERVED: dict[str, RemoteAsset] = {}


def remote_of(assets: list[RemoteAsset]) -> list[RemoteAsset]:
    return [_SERVED[a.name] for a in assets]


def measure(files: int = 20, mb: int = 20, workers: list[int] | tuple[int, ...] = (1, 4),
            rounds: int = 3) -> dict:
    """Serve ``files`` random files of ``mb`` MB on loopback and fetch them every way, ``rounds`` times.

    Returns:
        ``sha256_mb_s`` (hashing alone), ``total_mb``, ``load_average`` and per worker count
        (key ``"workers=<n>"``) the best ``mb_s`` and ``cpu_ms_per_mb`` of each way plus the
        speed ratios, each the median over the rounds of the ratio within one round:
        ``ratio`` (eoextract / baseline), ``ratio_nosync``, ``ratio_synced``,
        ``ratio_synced_vs_sha256`` (eoextract / baseline+sha256+fsync), ``ratio_sha256``,
        ``ratio_nosync_vs_sha256`` (eoextract without fsync / baseline+sha256),
        ``ratio_sha256_bound`` (baseline+sha256 / baseline), ``ratio_blake3_bound``
        (baseline+blake3 / baseline) and ``ratio_vs_blake3`` (eoextract blake3 / baseline+blake3); and
        ``ratio_nosync_best``, the same as ``ratio_nosync`` from the best round of each way.
    """
    work = Path(tempfile.mkdtemp(prefix="bench-download-"))
    served = work / "served"
    served.mkdir()
    assets = []
    for i in range(files):
        data = os.urandom(mb << 20)
        (served / f"openEO_{i}.nc").write_bytes(data)
        assets.append((f"openEO_{i}.nc", len(data), hashlib.sha256(data).hexdigest()))

    queue: mp.Queue = mp.get_context("spawn").Queue()
    server = mp.get_context("spawn").Process(target=_serve, args=(str(served), queue), daemon=True)
    server.start()
    port = queue.get(timeout=30)
    remote = [
        RemoteAsset(name=name, href=f"http://127.0.0.1:{port}/{name}", size=size, checksum="1220" + sha)
        for name, size, sha in assets
    ]
    _SERVED.update((a.name, a) for a in remote)
    total_mb = files * mb
    result: dict = {"total_mb": total_mb, "files": files, "mb": mb, "rounds": rounds,
                    "load_average": os.getloadavg()[0]}
    try:
        with requests.Session() as session:
            session.trust_env = False
            session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=max(workers)))
            sample = os.urandom(64 << 20)
            t0, c0 = time.perf_counter(), time.process_time()
            hashlib.sha256(sample).digest()
            result["sha256_mb_s"] = 64 / (time.perf_counter() - t0)
            result["sha256_cpu_ms_per_mb"] = 1000 * (time.process_time() - c0) / 64
            for n_workers in workers:
                runs = {"baseline": baseline, "baseline+fsync": functools.partial(baseline, fsync=True),
                        "baseline+sha256": functools.partial(baseline, algorithm="sha2-256"),
                        "baseline+sha256+fsync": functools.partial(baseline, algorithm="sha2-256", fsync=True),
                        "baseline+blake3": functools.partial(baseline, algorithm="blake3"), "eoextract": ours,
                        "eoextract nosync": functools.partial(ours, fsync=False),
                        "eoextract blake3": functools.partial(ours, fsync=False, algorithm="blake3"),
                        "eoextract sha256": functools.partial(ours, announced=True)}
                walls: dict[str, list[float]] = {label: [] for label in runs}
                cpus: dict[str, list[float]] = {label: [] for label in runs}
                for round_no in range(rounds):
                    # alternate the order, so that no way always runs after the same other one
                    order = list(runs) if round_no % 2 == 0 else list(reversed(runs))
                    for label in order:
                        out = work / f"out-{label}"
                        out.mkdir()
                        t0, c0 = time.perf_counter(), time.process_time()
                        runs[label](session, remote, out, n_workers)
                        walls[label].append(time.perf_counter() - t0)
                        cpus[label].append(time.process_time() - c0)
                        # drop the copy at once: its unwritten pages would otherwise be
                        # written back to disk during the next ways' runs
                        shutil.rmtree(out)
                entry = {label: {"mb_s": total_mb / min(walls[label]),
                                 "cpu_ms_per_mb": 1000 * min(cpus[label]) / total_mb} for label in runs}

                def paired(ours_label: str, base_label: str) -> float:
                    """Median over the rounds of the speed ratio within each round."""
                    return statistics.median(b / o for o, b in zip(walls[ours_label], walls[base_label]))

                entry["ratio"] = paired("eoextract", "baseline")
                entry["ratio_synced"] = paired("eoextract", "baseline+fsync")
                entry["ratio_synced_vs_sha256"] = paired("eoextract", "baseline+sha256+fsync")
                entry["ratio_nosync"] = paired("eoextract nosync", "baseline")
                entry["ratio_sha256"] = paired("eoextract sha256", "baseline+sha256")
                entry["ratio_nosync_vs_sha256"] = paired("eoextract nosync", "baseline+sha256")
                entry["ratio_sha256_bound"] = paired("baseline+sha256", "baseline")
                entry["ratio_blake3_bound"] = paired("baseline+blake3", "baseline")
                entry["ratio_vs_blake3"] = paired("eoextract blake3", "baseline+blake3")
                entry["ratio_nosync_best"] = entry["eoextract nosync"]["mb_s"] / entry["baseline"]["mb_s"]
                result[f"workers={n_workers}"] = entry
    finally:
        server.terminate()
        server.join(5)
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    res = measure(args.files, args.mb, args.workers, args.rounds)
    print(
        f"{args.files} files x {args.mb} MB = {res['total_mb']} MB over loopback, best of {args.rounds} rounds "
        f"(load average {res['load_average']:.1f} on {os.cpu_count()} cores)"
    )
    print(f"sha256 alone: {res['sha256_mb_s']:.0f} MB/s wall, {res['sha256_cpu_ms_per_mb']:.2f} ms CPU per MB")
    for workers in args.workers:
        entry = res[f"workers={workers}"]
        print(f"workers={workers}:")
        for label in ("baseline", "baseline+fsync", "baseline+sha256", "baseline+sha256+fsync", "baseline+blake3",
                      "eoextract", "eoextract nosync", "eoextract blake3", "eoextract sha256"):
            print(f"  {label:21s} {entry[label]['mb_s']:7.1f} MB/s  {entry[label]['cpu_ms_per_mb']:.2f} ms CPU/MB")
        print(
            f"  SHA-256, eoextract without fsync / baseline+sha256 {entry['ratio_nosync_vs_sha256']:.2f} "
            f"(target >= 0.90; baseline+sha256 / baseline {entry['ratio_sha256_bound']:.2f})\n"
            f"  eoextract without fsync / baseline {entry['ratio_nosync']:.2f}; "
            f"with fsync / baseline+sha256+fsync {entry['ratio_synced_vs_sha256']:.2f} (target >= 0.80), "
            f"/ baseline+fsync {entry['ratio_synced']:.2f}, "
            f"/ baseline {entry['ratio']:.2f}; "
            f"SHA-256 announced: eoextract/baseline+sha256 {entry['ratio_sha256']:.2f}\n"
            f"  BLAKE3: baseline+blake3 / baseline {entry['ratio_blake3_bound']:.2f}, "
            f"eoextract blake3 without fsync / baseline+blake3 {entry['ratio_vs_blake3']:.2f}"
        )


if __name__ == "__main__":
    main()
