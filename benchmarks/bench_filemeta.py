"""File metadata of one job's items against the number of files of the job.

A job of ``sample_by_feature`` results has one NetCDF file per sampled feature. After the
files are in place, the extraction manager builds one item per file from the file itself
and, after the post-job action, brings the items' ``file:size``/``file:checksum`` up to
date (:func:`eoextract.extract._stac_item.refresh_file_metadata`, given the job's download
records so that unchanged files are not hashed again). This measures that work — the steps
:meth:`eoextract.extract.ExtractionManager.process_finished_job` runs for one job, without
the network — for a small and a large job, in one process, and prints the ratio of their
CPU times: a cost linear in the job's files gives about the ratio of the file counts (goal:
4,000 files at most 12 times the time of 400, i.e. 1.2 times the file ratio).

The files are copies of one small NetCDF in the layout CDSE writes (dims ``t, y, x``,
one variable per band, a ``crs`` grid-mapping variable with ``crs_wkt``/``spatial_ref``).

Usage::

    python benchmarks/bench_filemeta.py [--sizes 400 4000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

#: ``(small, large)`` job sizes (files) of the goal.
SIZES = (400, 4000)
#: Goal: the time ratio at most this many times the file ratio (4,000 files ≤ 12x 400).
GOAL_FACTOR = 1.2


def _template(path: Path) -> None:
    import xarray as xr

    x = 600_000.0 + 10.0 * np.arange(8) + 5.0
    y = 5_700_000.0 - 10.0 * np.arange(8) - 5.0
    t = np.array(["2024-01-01", "2024-02-01"], dtype="datetime64[ns]")
    data = {f"S2-L2A-B0{i}": (("t", "y", "x"), np.ones((2, 8, 8), dtype="uint16"), {"grid_mapping": "crs"})
            for i in (2, 3, 4)}
    ds = xr.Dataset(data, coords={"t": t, "y": y, "x": x})
    from pyproj import CRS

    wkt = CRS.from_epsg(32631).to_wkt()
    ds["crs"] = xr.DataArray(np.int8(0), attrs={"crs_wkt": wkt, "spatial_ref": wkt})
    ds.to_netcdf(path)


def _job(folder: Path, n: int, template: Path) -> list:
    """``n`` placed and verified files of one job, as the download records them."""
    from eoextract._util.checksum import file_checksum
    from eoextract.jobs._download import DownloadedAsset, RemoteAsset

    checksum, size = file_checksum(template)
    old = time.time_ns() - 10 * 10**9  # verified a while ago: trusted by size and time
    done = []
    for i in range(n):
        path = folder / f"{i // 500:03d}" / f"openEO_{i}.nc"
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, path)
        os.utime(path, ns=(old, old))
        asset = RemoteAsset(name=f"openEO_{i}.nc", href=f"http://127.0.0.1:1/assets/openEO_{i}.nc",
                            media_type="application/x-netcdf", roles=("data",), epsg=32631)
        done.append(DownloadedAsset(asset=asset, path=path.resolve(), size=size, checksum=checksum,
                                    mtime_ns=old))
    return done


def _describe(folder: Path, done: list) -> tuple[float, float]:
    """CPU and wall seconds of the extraction's metadata steps for one job: items from the
    files, then their file metadata refreshed against the download records, then stored form."""
    from eoextract.extract._filemeta import FileIndex
    from eoextract.extract._stac_item import build_item, make_item_id, read_file_metadata, refresh_file_metadata
    from eoextract.extract._store import ItemStore

    cpu, wall = time.process_time(), time.perf_counter()
    items = [build_item(d.asset, read_file_metadata(d.path, checksum=d.checksum),
                        item_id=make_item_id("job", d.asset.name, d.path), collection_id="bench",
                        asset_key="data") for d in done]
    store = ItemStore(folder)
    known = FileIndex(done)
    for item in items:
        refresh_file_metadata(item, folder, known=known)
        store.stored_item(item, "job")
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(sizes: list[int] | tuple[int, ...] = SIZES) -> dict:
    """CPU seconds (and wall seconds) per job size (files), and the ratio of the CPU times
    of the largest and the smallest job.

    CPU time, not wall time, is compared: it is what grows with a quadratic step, and the
    load of other processes on a shared machine sways it far less. The smaller jobs also
    run before and after the largest one, and their times are averaged.
    """
    sizes = sorted(set(sizes))
    out: dict = {"sizes": sizes}
    with tempfile.TemporaryDirectory(prefix="eoextract-bench-filemeta-") as tmp:
        template = Path(tmp) / "template.nc"
        _template(template)
        _describe(Path(tmp) / "warm", _job(Path(tmp) / "warm", 20, template))  # imports, caches
        runs: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
        for n in [*sizes, *sizes[-2::-1]]:
            folder = Path(tmp) / f"job-{n}"
            done = _job(folder, n, template)
            runs[n].append(_describe(folder, done))
            shutil.rmtree(folder)
        for n in sizes:
            cpu = sum(c for c, _ in runs[n]) / len(runs[n])
            wall = sum(w for _, w in runs[n]) / len(runs[n])
            out[str(n)] = {"seconds": cpu, "wall_seconds": wall, "ms_per_file": 1000 * cpu / n,
                           "runs": [c for c, _ in runs[n]]}
    small, large = sizes[0], sizes[-1]
    out["ratio"] = out[str(large)]["seconds"] / out[str(small)]["seconds"]
    out["wall_ratio"] = out[str(large)]["wall_seconds"] / out[str(small)]["wall_seconds"]
    out["size_ratio"] = large / small
    out["load_average"] = os.getloadavg()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args()
    res = measure(args.sizes)
    for n in res["sizes"]:
        r = res[str(n)]
        runs = ", ".join(f"{t:.2f}" for t in r["runs"])
        print(f"{n:>6} files: {r['seconds']:8.2f} s CPU ({r['ms_per_file']:.2f} ms per file; runs {runs} s), "
              f"{r['wall_seconds']:.2f} s wall")
    small, large = min(res["sizes"]), max(res["sizes"])
    print(f"CPU time ratio {large} / {small} files: {res['ratio']:.2f} (wall {res['wall_ratio']:.2f}) "
          f"(file ratio {res['size_ratio']:.0f}; goal ≤ {GOAL_FACTOR * res['size_ratio']:.0f}; "
          f"load average {res['load_average']:.1f})")


if __name__ == "__main__":
    main()
