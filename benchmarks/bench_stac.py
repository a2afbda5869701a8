"""Catalogue building, validation and stac-geoparquet export: eoextract against plain pystac.

Usage::

    python benchmarks/bench_stac.py                  # 10k items, with the pystac baseline
    python benchmarks/bench_stac.py 20000            # another size
    python benchmarks/bench_stac.py --items 200000   # build, validate, export N items
    python benchmarks/bench_stac.py --full           # the same at 1,000,000 items (by hand)
    python benchmarks/bench_stac.py --full --workdir /var/tmp   # where the catalogue goes

Each item is a realistic extraction item (projection, eo, raster and file fields, two
assets). The baseline is pystac's ``Collection.add_items`` + ``normalize_hrefs`` +
``save()`` on a flat collection, which grows quadratically, so it only runs up to
``--baseline-max`` items. Builds, validations and exports run in child processes
(items generated lazily, as a catalogue rebuilt from items persisted per job would be),
each reporting its peak RSS.

Goals: ≥5× faster than pystac at 10k; 1,000,000 items (2 assets each) built in ≤200 s
with ≤256 MiB peak RSS, validated in ≤10 min on one core, exported to stac-geoparquet
in ≤120 s. Writing a million small files is bound by the file system: run on a quiet disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]


def make_item(i: int, data_root: str):
    """One synthetic extraction item as a pystac object."""
    import pystac
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.file import FileExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    zone = 31 + i % 5
    lon = -3.0 + 6.0 * (zone - 31) + (i * 7919 % 1000) / 200.0
    lat = 46.0 + (i * 104729 % 1200) / 100.0
    d = 0.006
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
        ],
    }
    start = dt.datetime(2021, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i % 730)
    item = pystac.Item(
        f"S2-L2A_{zone}U_{i:07d}",
        geometry,
        [lon, lat, lon + d, lat + d],
        None,
        {},
        start_datetime=start,
        end_datetime=start + dt.timedelta(days=90),
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = f"EPSG:{32600 + zone}"
    proj.shape = [64, 64]
    x0, y0 = 400000 + 10 * (i % 5000), 5100000 + 10 * (i % 7000)
    proj.transform = [10.0, 0.0, float(x0), 0.0, -10.0, float(y0)]
    proj.bbox = [float(x0), float(y0 - 640), float(x0 + 640), float(y0)]
    base = f"{data_root}/{zone}U/{i:07d}"
    data = pystac.Asset(
        f"{base}/S2-L2A_{i:07d}.nc",
        title="Sentinel-2 L2A",
        media_type="application/x-netcdf",
        roles=["data"],
    )
    item.add_asset("S2-L2A", data)
    EOExtension.ext(data, add_if_missing=True).bands = [Band.create(name=b) for b in BANDS]
    RasterExtension.ext(data, add_if_missing=True).bands = [
        RasterBand.create(data_type=DataType.UINT16, nodata=65535) for _ in BANDS
    ]
    fe = FileExtension.ext(data, add_if_missing=True)
    fe.size = 1_000_000 + i
    fe.checksum = "1220" + f"{i:064x}"
    aux = pystac.Asset(
        f"{base}/croptype_{i:07d}.nc",
        title="Crop type label",
        media_type="application/x-netcdf",
        roles=["auxiliary"],
    )
    item.add_asset("auxiliary", aux)
    FileExtension.ext(aux).size = 5000 + i
    return item


_EXTENSIONS = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
]


def item_dict(i: int, data_root: str) -> dict:
    """The same item as :func:`make_item`, built directly as a dict (cheap to generate)."""
    zone = 31 + i % 5
    lon = -3.0 + 6.0 * (zone - 31) + (i * 7919 % 1000) / 200.0
    lat = 46.0 + (i * 104729 % 1200) / 100.0
    d = 0.006
    start = dt.datetime(2021, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=i % 730)
    end = start + dt.timedelta(days=90)
    x0, y0 = 400000 + 10 * (i % 5000), 5100000 + 10 * (i % 7000)
    base = f"{data_root}/{zone}U/{i:07d}"
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": list(_EXTENSIONS),
        "id": f"S2-L2A_{zone}U_{i:07d}",
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
            ],
        },
        "bbox": [lon, lat, lon + d, lat + d],
        "properties": {
            "start_datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end_datetime": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "proj:code": f"EPSG:{32600 + zone}",
            "proj:shape": [64, 64],
            "proj:transform": [10.0, 0.0, float(x0), 0.0, -10.0, float(y0)],
            "proj:bbox": [float(x0), float(y0 - 640), float(x0 + 640), float(y0)],
            "datetime": None,
        },
        "links": [],
        "assets": {
            "S2-L2A": {
                "href": f"{base}/S2-L2A_{i:07d}.nc",
                "type": "application/x-netcdf",
                "title": "Sentinel-2 L2A",
                "eo:bands": [{"name": b} for b in BANDS],
                "raster:bands": [{"data_type": "uint16", "nodata": 65535} for _ in BANDS],
                "file:size": 1_000_000 + i,
                "file:checksum": "1220" + f"{i:064x}",
                "roles": ["data"],
            },
            "auxiliary": {
                "href": f"{base}/croptype_{i:07d}.nc",
                "type": "application/x-netcdf",
                "title": "Crop type label",
                "file:size": 5000 + i,
                "roles": ["auxiliary"],
            },
        },
    }


def item_dicts(n: int, data_root: str) -> Iterator[dict]:
    """Lazily generated item dicts (what a rebuild from persisted item JSON reads)."""
    for i in range(n):
        yield item_dict(i, data_root)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children (worker pools)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited on fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- child runs


def child_build(n: int, root: Path) -> dict:
    import eoextract.stac._validate_schemas  # noqa: F401 - same imports as a real run
    from eoextract.stac import build_collection

    base_rss = peak_rss_mib()
    t0, c0 = time.perf_counter(), cpu_seconds()
    for _ in item_dicts(n, str(root / "data")):
        pass
    generate, generate_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    t0, c0 = time.perf_counter(), cpu_seconds()
    build_collection(
        item_dicts(n, str(root / "data")),
        root / "stac",
        collection_id="bench",
        description="benchmark",
    )
    total = time.perf_counter() - t0
    return {
        "seconds": total - generate,
        "cpu_seconds": cpu_seconds() - c0 - generate_cpu,
        "generate_seconds": generate,
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_mib": base_rss,
    }


def child_validate(root: Path) -> dict:
    from eoextract.stac import validate_catalog

    t0, c0 = time.perf_counter(), cpu_seconds()
    report = validate_catalog(root / "stac")
    return {
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": cpu_seconds() - c0,
        "items": report.n_items,
        "ok": report.ok,
        "errors": report.messages()[:5],
        "peak_rss_mib": peak_rss_mib(),
    }


def child_export(root: Path) -> dict:
    import pyarrow.parquet as pq

    from eoextract.stac.publish import export_geoparquet

    t0, c0 = time.perf_counter(), cpu_seconds()
    result = export_geoparquet(root / "stac", root / "items.parquet")
    seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    rows = pq.ParquetFile(root / "items.parquet").metadata.num_rows
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "items": result.n_items,
        "rows": rows,
        "mib": result.n_bytes / 2**20,
        "peak_rss_mib": peak_rss_mib(),
        "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0,
    }


def measure_build(n: int, root: str) -> dict:
    """:func:`child_build` for a child process started by ``benchmarks/run_all.py``."""
    return child_build(n, Path(root))


def measure_validate(root: str) -> dict:
    """:func:`child_validate` for a child process started by ``benchmarks/run_all.py``."""
    return child_validate(Path(root))


def measure_export(root: str) -> dict:
    """:func:`child_export` for a child process started by ``benchmarks/run_all.py``."""
    return child_export(Path(root))


def pystac_validate(root: str, schemas: str) -> dict:
    """Validate the catalogue written by :func:`pystac_build` with pystac's ``validate_all``.

    pystac fetches JSON schemas from the network; here they are read from the bundle in
    ``schemas`` (``map.json`` maps URLs to files) and cached by pystac as usual.
    """
    import pystac
    from pystac.stac_io import DefaultStacIO

    folder = Path(schemas)
    url_map = json.loads((folder / "map.json").read_text())

    class LocalSchemas(DefaultStacIO):
        def read_text(self, source, *args, **kwargs):
            if str(source) in url_map:
                return (folder / url_map[str(source)]).read_text()
            return super().read_text(source, *args, **kwargs)

    pystac.StacIO.set_default(LocalSchemas)
    t0 = time.perf_counter()
    collection = pystac.read_file(str(Path(root) / "stac" / "collection.json"))
    collection.validate_all()
    n = sum(1 for _ in collection.get_items(recursive=True))
    return {"seconds": time.perf_counter() - t0, "items": n, "peak_rss_mib": peak_rss_mib()}


def run_child(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- comparisons


def compare_with_pystac(n: int, work: Path) -> tuple[float, float]:
    """Same pystac items through both writers; returns (ours, pystac) seconds."""

    from eoextract.stac import build_collection

    items = [make_item(i, str(work / "data")) for i in range(n)]
    t0 = time.perf_counter()
    build_collection(items, work / "stac_ours", collection_id="bench", description="b")
    ours = time.perf_counter() - t0

    theirs = pystac_build(n, str(work / "pystac"))["seconds"]
    return ours, theirs


def pystac_build(n: int, root: str, per_catalog: int = 0) -> dict:
    """Build ``n`` items with plain pystac; time and peak RSS of this process.

    The items are created first (untimed), then ``add_items`` + ``update_extent_from_items``
    + ``normalize_hrefs`` + ``save``: into one flat collection, or with ``per_catalog`` > 0
    into sub-catalogues of that many items (pystac's answer to its quadratic flat case).
    Needs only pystac, so it also runs in the pystac peer's virtualenv.
    """
    import pystac

    work = Path(root)
    items = [make_item(i, str(work / "data")) for i in range(n)]
    t0 = time.perf_counter()
    extent = pystac.Extent(
        pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])
    )
    collection = pystac.Collection("bench", "b", extent)
    if per_catalog > 0:
        for start in range(0, n, per_catalog):
            sub = pystac.Catalog(f"part-{start // per_catalog:04d}", "part")
            sub.add_items(items[start:start + per_catalog])
            collection.add_child(sub)
    else:
        collection.add_items(items)
    collection.update_extent_from_items()
    collection.normalize_hrefs(str(work / "stac"))
    collection.save(pystac.CatalogType.SELF_CONTAINED)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}


FULL_ITEMS = 1_000_000


def run_size(size: int, root: Path) -> None:
    """Build, validate and export ``size`` items in child processes; print the figures."""
    goal = size >= FULL_ITEMS
    b = run_child("build", str(size), str(root))
    print(
        f"build {size:,} items (streamed dicts, child process): {b['seconds']:.1f} s "
        f"(CPU {b['cpu_seconds']:.1f} s; +{b['generate_seconds']:.1f} s generating them), "
        f"{size / b['seconds']:,.0f} items/s, peak RSS {b['peak_rss_mib']:.0f} MiB "
        f"(after imports {b['rss_before_mib']:.0f} MiB)"
        + (" (goal at 1M: <= 200 s, <= 256 MiB)" if goal else "")
    )
    v = run_child("validate", str(root))
    status = "all valid" if v["ok"] else f"INVALID: {v['errors']}"
    print(
        f"validate {v['items']:,} items (one core): {v['seconds']:.1f} s (CPU {v['cpu_seconds']:.1f} s), "
        f"{1000 * v['seconds'] / max(v['items'], 1):.3f} ms/item, "
        f"{v['items'] / v['seconds']:,.0f} items/s, peak RSS {v['peak_rss_mib']:.0f} MiB, {status}"
        + (" (goal at 1M: <= 600 s)" if goal else "")
    )
    e = run_child("export", str(root))
    print(
        f"stac-geoparquet export of {e['items']:,} items: {e['seconds']:.1f} s "
        f"(CPU {e['cpu_seconds']:.1f} s, all processes: "
        f"{1e6 * e['cpu_seconds'] / max(e['items'], 1):.0f} µs/item), "
        f"{e['rows']:,} rows, {e['mib']:.0f} MiB, peak RSS {e['peak_rss_mib']:.0f} MiB "
        f"(largest worker {e['worker_peak_rss_mib']:.0f} MiB)"
        + (" (goal at 1M: <= 120 s)" if goal else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=10_000, help="items to compare")
    parser.add_argument("--items", type=int, default=None,
                        help="build, validate and export this many items (no pystac baseline)")
    parser.add_argument("--full", action="store_true",
                        help=f"build, validate and export {FULL_ITEMS:,} items")
    parser.add_argument("--workdir", default=None, help="folder for the catalogues (default: temp)")
    parser.add_argument(
        "--baseline-max",
        type=int,
        default=20_000,
        help="largest N for the (quadratic) pystac baseline",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "build":
            result = child_build(int(rest[0]), Path(rest[1]))
        elif kind == "validate":
            result = child_validate(Path(rest[0]))
        else:
            result = child_export(Path(rest[0]))
        print(json.dumps(result))
        return

    work = Path(tempfile.mkdtemp(prefix="bench_stac_", dir=args.workdir))
    try:
        if args.items or args.full:
            run_size(args.items or FULL_ITEMS, work / "big")
            return
        n = args.n
        if n <= args.baseline_max:
            ours, theirs = compare_with_pystac(n, work / "cmp")
            print(
                f"build {n:,} items (same pystac items): eoextract {ours:.2f} s, "
                f"pystac flat add_items+normalize_hrefs+save {theirs:.2f} s "
                f"-> {theirs / ours:.1f}x faster (goal >= 5x at 10k)"
            )
        else:
            print(f"pystac baseline skipped above {args.baseline_max:,} items (quadratic)")
        shutil.rmtree(work / "cmp", ignore_errors=True)
        run_size(n, work / f"n{n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
