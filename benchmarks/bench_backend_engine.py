"""Execution engine: a seed-004-sized job versus plain numpy on the same cube.

The job: 3 features of 64x64 px (640 m squares in UTM, a few km apart), SENTINEL2_L2A with
all 13 bands, 20 dates, NetCDF, ``sample_by_feature=True`` (so 3 files), run in-process with
``Engine.execute``. Baselines from the same run:

* ``numpy``: filling the same cube (3 x 20 x 13 x 64 x 64 uint16) with a vectorised
  arithmetic expression of the coordinates, nothing written: the floor for computing it;
* ``direct``: the collection generator plus ``xarray.Dataset.to_netcdf`` per feature,
  without process-graph parsing, the registry or metadata: what the engine itself adds.

Printed: median and min of ``--repeat`` runs, and ratios engine / baseline. Goal: job <= 5 s.

    python benchmarks/bench_backend_engine.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

CENTRES = [(600020.0, 5700020.0), (603500.0, 5702480.0), (607020.0, 5698020.0)]
HALF = 320.0  # 64 px of 10 m
TEMPORAL = ["2023-03-01", "2023-06-09"]  # 20 dates every 5 days


def job_graph() -> dict:
    def feature(x: float, y: float) -> dict:
        ring = [[x - HALF, y - HALF], [x + HALF, y - HALF], [x + HALF, y + HALF], [x - HALF, y + HALF],
                [x - HALF, y - HALF]]
        return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}

    fc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "EPSG:32631"}},
          "features": [feature(x, y) for x, y in CENTRES]}
    return {
        "load": {"process_id": "load_collection", "arguments": {
            "id": "SENTINEL2_L2A", "spatial_extent": fc, "temporal_extent": TEMPORAL, "bands": None}},
        "save": {"process_id": "save_result", "arguments": {
            "data": {"from_node": "load"}, "format": "netCDF", "options": {"sample_by_feature": True}},
            "result": True},
    }


def grids() -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for x, y in CENTRES:
        xs = np.arange(x - HALF + 5, x + HALF, 10.0)
        ys = np.arange(y + HALF - 5, y - HALF, -10.0)
        out.append((xs, ys))
    return out


def numpy_baseline() -> np.ndarray:
    """Fill the cube from coordinates with plain vectorised arithmetic."""
    cubes = []
    t = np.arange(20, dtype=np.float64)[:, None, None, None]
    b = np.arange(13, dtype=np.float64)[None, :, None, None]
    for xs, ys in grids():
        field = np.sin(xs[None, :] / 300.0) * np.cos(ys[:, None] / 300.0)
        v = 1500.0 + 800.0 * field[None, None] + 50.0 * b + 10.0 * np.sin(t / 3.0)
        cubes.append(v.astype(np.uint16))
    return np.stack(cubes)


def direct_baseline(out_dir: Path) -> None:
    """Collection generator + plain xarray NetCDF write, no engine."""
    from eoextract.backend import _synthetic_collections as colls
    from eoextract.backend._synthetic_pixels import generate

    spec = colls.get_collection("SENTINEL2_L2A")
    dates = colls.collection_dates(spec, datetime(2023, 3, 1, tzinfo=timezone.utc),
                                   datetime(2023, 6, 9, tzinfo=timezone.utc))
    for i, (xs, ys) in enumerate(grids()):
        values = generate(spec, 32631, xs, ys, dates, spec.band_names)
        ds = xr.Dataset({name: (("t", "y", "x"), values[:, k]) for k, name in enumerate(spec.band_names)},
                        coords={"t": np.array([d.replace(tzinfo=None) for d in dates], dtype="datetime64[ns]"),
                                "y": ys, "x": xs})
        ds.to_netcdf(out_dir / f"direct_{i}.nc", engine="netcdf4",
                     encoding={n: {"zlib": True, "complevel": 4} for n in spec.band_names})


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    t0 = time.perf_counter()
    from eoextract.backend._execution import Engine

    engine = Engine()
    build = time.perf_counter() - t0
    graph = job_graph()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        counter = iter(range(10**6))
        assets = engine.execute(graph, root / "warmup")  # first run pays lazy imports and caches
        shape = xr.open_dataset(assets[0].path).sizes
        engine_t = timed(lambda: engine.execute(graph, root / f"run{next(counter)}"), args.repeat)
        numpy_t = timed(numpy_baseline, args.repeat)
        direct_t = timed(lambda: direct_baseline(root), args.repeat)

    med = statistics.median
    print(f"job: {len(assets)} files, each t={shape['t']} x 13 bands x {shape['y']}x{shape['x']} px, NetCDF, "
          f"sample_by_feature; {args.repeat} runs")
    print(f"engine build (once per worker): {build:.2f} s")
    print(f"{'':22}{'median s':>10}{'min s':>10}")
    for name, ts in (("engine.execute", engine_t), ("baseline numpy", numpy_t), ("baseline direct", direct_t)):
        print(f"{name:22}{med(ts):10.3f}{min(ts):10.3f}")
    print(f"ratio engine / numpy : {med(engine_t) / med(numpy_t):8.1f}x")
    print(f"ratio engine / direct: {med(engine_t) / med(direct_t):8.2f}x")
    print(f"goal <= 5 s: {'met' if med(engine_t) <= 5.0 else 'NOT met'} ({med(engine_t):.2f} s)")


if __name__ == "__main__":
    main()
