"""Patch to point against the number of patches.

Writes N NetCDF patches (``--px`` pixels a side, 13 bands, 20 dates, two UTM zones),
catalogues them, then runs ``patches_to_points`` (``--how``) with 1 and ``--processes``
worker processes for a small and a large N in one run. Prints patches/s per core, the
large/small time ratio (linear: about the ratio of N) and the peak RSS of this process and
of the largest worker.

Usage::

    python benchmarks/bench_patch_points.py [--sizes 40 160] [--px 64] [--how mean] [--processes 2]
        [--dask local|tcp://host:port]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "dataset"))

BANDS = tuple(f"B{i:02d}" for i in range(1, 13)) + ("SCL",)


def _catalogue(folder: Path, n: int, px: int) -> Path:
    from patch_catalogue import bench_catalogue

    return bench_catalogue(folder, n, px, BANDS)


def _run(folder: Path, catalogue: Path, how: str, processes: int, client=None) -> float:
    from eoextract.dataset import patches_to_points

    t0 = time.perf_counter()
    patches_to_points(catalogue, folder / f"out-{how}-{processes}.parquet", how=how,
                      labels=["croptype"], processes=processes, client=client)
    return time.perf_counter() - t0


def _on_cluster(folder: Path, cats: dict[int, Path], args: argparse.Namespace) -> None:
    from distributed import Client, LocalCluster

    cluster = (LocalCluster(n_workers=args.processes, threads_per_worker=1,
                            dashboard_address=None) if args.dask == "local" else None)
    with Client(cluster or args.dask) as client:
        threads = sum(client.nthreads().values())
        _run(folder, cats[args.sizes[0]], args.how, 1, client)  # workers warm
        small, large = (_run(folder, cats[n], args.how, 1, client) for n in args.sizes)
        print(f"dask ({threads} threads): {args.sizes[1] / large / threads:7.1f} patches/s per "
              f"thread; time ratio {large / small:4.1f} for "
              f"{args.sizes[1] / args.sizes[0]:.0f}x the patches")
    if cluster is not None:
        cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(40, 160))
    parser.add_argument("--px", type=int, default=64)
    parser.add_argument("--how", default="mean", choices=("centre", "mean", "all"))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--dask", default=None, help="also on this Dask scheduler address, or "
                        "'local' for a local cluster of --processes worker processes")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-p2p-"))
    try:
        cats = {n: _catalogue(folder / str(n), n, args.px) for n in args.sizes}
        _run(folder, cats[args.sizes[0]], args.how, 1)  # imports out of the figures
        print(f"patches {args.sizes[0]} / {args.sizes[1]}, {args.px}x{args.px} px, 13 bands, "
              f"20 dates, how={args.how}")
        for procs in sorted({1, args.processes}):
            small, large = (_run(folder, cats[n], args.how, procs) for n in args.sizes)
            rate = args.sizes[1] / large / procs
            print(f"processes {procs}: {rate:7.1f} patches/s per core; time ratio "
                  f"{large / small:4.1f} for {args.sizes[1] / args.sizes[0]:.0f}x the patches")
        if args.dask:
            _on_cluster(folder, cats, args)
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS: this process {own:.0f} MiB, largest worker {child:.0f} MiB")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
