"""Overhead of a UDF job on the embedded backend against the same function applied in-process.

At the size of the GFMAP notebook (seed 004): jobs of ``--features`` 64x64 px samples
(``sample_by_feature``), the SCL band over three months (18 dates), and a distance-to-cloud
UDF called through ``apply_neighborhood`` (256 px chunks, 16 px overlap), as the notebook
does. Measured in one process, on one embedded backend (one worker, warmed up):

* ``udf_job``: the job with the UDF (load, UDF per feature, NetCDF per feature);
* ``base_job``: the same job without the UDF (load, NetCDF per feature);
* ``in_process``: the UDF's function applied with numpy/scipy, here, to the base job's
  arrays (what the UDF computes, without a separate process or chunking).

The ratio is ``udf_job / (base_job + in_process)``: what running the function as a UDF costs
against computing it next to the job (target ≤ 2). Medians of ``--rounds``.

Usage::

    python benchmarks/bench_udf.py [--features 5] [--rounds 3]

:func:`measure` returns the figures (``benchmarks/run_all.py``, section ``udf``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

GOAL = 2.0
EPSG = 32631
DATES = ["2021-05-01", "2021-07-30"]  # 90 days: 18 acquisitions, as the notebook's example

UDF_CODE = textwrap.dedent('''
    import numpy as np
    import xarray
    from scipy import ndimage

    CLOUDS = [3, 8, 9, 10]

    def distance_to_cloud(scl: np.ndarray) -> np.ndarray:
        """Metres to the nearest cloud or shadow pixel (10 m pixels), per date, at most 2550."""
        out = np.full(scl.shape, 2550.0, dtype="float32")
        cloud = np.isin(scl, CLOUDS)
        for idx in np.ndindex(scl.shape[:-2]):
            if cloud[idx].any():
                out[idx] = np.minimum(ndimage.distance_transform_edt(~cloud[idx]) * 10.0, 2550.0)
        return out

    def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
        return cube.copy(data=distance_to_cloud(cube.values))
''')


def _features(n: int) -> dict:
    """``n`` squares of 64x64 px (640 m) on the UTM grid, 2 km apart, with a ``crs`` member."""
    x0, y0 = 640_000.0, 5_652_000.0
    features = []
    for i in range(n):
        w, s = x0 + (i % 5) * 2000.0, y0 + (i // 5) * 2000.0
        ring = [[w, s], [w + 640, s], [w + 640, s + 640], [w, s + 640], [w, s]]
        features.append({"type": "Feature", "properties": {"id": i},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return {"type": "FeatureCollection", "features": features,
            "crs": {"type": "name", "properties": {"name": f"EPSG:{EPSG}"}}}


def _cube(con, n: int, with_udf: bool):
    import openeo

    cube = con.load_collection("SENTINEL2_L2A", temporal_extent=DATES, bands=["SCL"])
    cube = cube.filter_spatial(_features(n))
    if with_udf:
        px = [{"dimension": d, "unit": "px", "value": v} for d, v in (("x", 256), ("y", 256))]
        ov = [{"dimension": d, "unit": "px", "value": 16} for d in ("x", "y")]
        cube = cube.apply_neighborhood(process=openeo.UDF(UDF_CODE, runtime="Python"), size=px,
                                       overlap=ov)
    return cube


def _run_job(cube, title: str, out_dir: Path | None = None) -> float:
    job = cube.create_job(out_format="NetCDF", title=title, sample_by_feature=True)
    t0 = time.perf_counter()
    job.start()
    while (status := job.status()) not in ("finished", "error", "canceled"):
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if status != "finished":
        raise RuntimeError(f"{title}: job {status}: {[e['message'] for e in job.logs(level='error')]}")
    if out_dir is not None:
        job.get_results().download_files(out_dir)
    return wall


def _in_process(files: list[Path]) -> tuple[float, int]:
    """Seconds to apply the UDF's function to the SCL arrays of ``files`` here; pixels done."""
    import xarray as xr

    namespace: dict = {}
    exec(compile(UDF_CODE, "<udf>", "exec"), namespace)  # the very same function
    arrays = []
    for f in files:
        with xr.open_dataset(f) as ds:
            arrays.append(ds["SCL"].fillna(0).values.astype("uint16"))
    t0 = time.perf_counter()
    for a in arrays:
        namespace["distance_to_cloud"](a)
    return time.perf_counter() - t0, sum(a.size for a in arrays)


def measure(features: int = 5, rounds: int = 3, url: str | None = None) -> dict:
    """The figures (seconds, medians of ``rounds``) and the ratio; starts a backend unless
    ``url`` is given (one worker)."""
    import contextlib

    import openeo

    from _common import backend_process

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="eoextract-bench-udf-")))
        if url is None:
            url = stack.enter_context(backend_process(tmp / "backend", workers=1))
        con = openeo.connect(url, auto_validate=False).authenticate_basic("eoextract", "eoextract")
        _run_job(_cube(con, 1, True), "warm-up")  # engine, fork server
        udf, base, local = [], [], []
        for r in range(rounds):
            out = tmp / f"base-{r}"
            base.append(_run_job(_cube(con, features, False), f"base-{r}", out))
            udf.append(_run_job(_cube(con, features, True), f"udf-{r}"))
            seconds, pixels = _in_process(sorted(out.glob("*.nc")))
            local.append(seconds)
    udf_s, base_s, local_s = (statistics.median(x) for x in (udf, base, local))
    return {"features": features, "rounds": rounds, "dates": 18, "pixels": pixels,
            "udf_job_s": udf_s, "base_job_s": base_s, "in_process_s": local_s,
            "ratio": udf_s / (base_s + local_s), "udf_overhead_per_feature_s":
            (udf_s - base_s - local_s) / features, "goal": GOAL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=5, help="samples per job (notebook: ~5)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="an already running backend (default: start one)")
    args = parser.parse_args()
    r = measure(args.features, args.rounds, args.url)
    print(json.dumps(r, indent=1))
    print(f"UDF job {r['udf_job_s']:.2f} s, same job without UDF {r['base_job_s']:.2f} s + function "
          f"in-process {r['in_process_s']:.3f} s -> ratio {r['ratio']:.2f} (goal <= {GOAL:g}); "
          f"UDF overhead {r['udf_overhead_per_feature_s'] * 1000:.0f} ms per feature")


if __name__ == "__main__":
    main()
