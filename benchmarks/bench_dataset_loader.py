"""Per-EPSG split and lazy patch loading against the number of patches.

Writes N NetCDF patches (``--px`` pixels a side, 13 bands, 20 dates, half in each of two
UTM zones), catalogues them with ``build_collection``, then times, for a small and a large N
in one process: ``split_by_epsg`` (with validation and stac-geoparquet), ``open_patches``
(items and file headers only) and ``.compute()`` of every pixel. Prints per-patch costs and
the large/small ratio of each (linear: about the ratio of N), and how much cheaper opening
is than reading.

Usage::

    python benchmarks/bench_dataset_loader.py [--sizes 50 500] [--px 32]
"""

from __future__ import annotations

import argparse
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


def _run(n: int, px: int) -> dict[str, float]:
    from eoextract.dataset import open_patches, split_by_epsg

    folder = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        catalogue = _catalogue(folder, n, px)
        t0 = time.perf_counter()
        split_by_epsg(catalogue, folder / "split")
        t1 = time.perf_counter()
        ds = open_patches(folder / "split" / "B-EPSG-32631.parquet", labels=["croptype"])
        t2 = time.perf_counter()
        ds["patches"].compute(scheduler="synchronous")
        t3 = time.perf_counter()
        half = ds.sizes["sample"]
        return {"split": (t1 - t0) / n, "open": (t2 - t1) / half, "compute": (t3 - t2) / half}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(50, 500))
    parser.add_argument("--px", type=int, default=32)
    args = parser.parse_args(argv)
    _run(10, args.px)  # imports and first-use costs out of the figures
    small, large = (_run(n, args.px) for n in args.sizes)
    ratio_n = args.sizes[1] / args.sizes[0]
    print(f"patches {args.sizes[0]} / {args.sizes[1]}, {args.px}x{args.px} px, 13 bands, 20 dates")
    for key in ("split", "open", "compute"):
        total_ratio = large[key] / small[key] * ratio_n
        print(f"{key:8s} {small[key] * 1e3:7.2f} / {large[key] * 1e3:7.2f} ms per patch; "
              f"total time ratio {total_ratio:5.1f} for {ratio_n:.0f}x the patches")
    print(f"open/compute per patch: {large['open'] / large['compute']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
