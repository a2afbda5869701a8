"""Cost of the one redaction, against work done on the same texts anyway.

Usage::

    python benchmarks/bench_redact.py          # 20k log lines, 5k items

Prints microseconds per call of ``redact`` for an ordinary log line and for a failed
download's error (a signed S3 URL twice), next to formatting the same log record
(``logging.Formatter.format``); and ``redact_data`` per catalogue item next to
``orjson.dumps`` of the item and to writing it with the streaming catalogue builder.

Goals: a few microseconds per ordinary log line (of the order of formatting it; each
record is redacted once, and only records that pass the logger's level are made);
redacting an item costs under a tenth of writing it to the catalogue.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from eoextract._util.redact import redact, redact_data

PLAIN = "job 42 on backend-a: HTTP 500 from http://127.0.0.1:8080/jobs/j-1/results, retry in 30.0 s"
SIGNED = ("Download of asset 'openEO_0.nc' from https://b.s3.amazonaws.com/openEO_0.nc?... failed after 6 "
          "tries: HTTPSConnectionPool(host='b.s3.amazonaws.com', port=443): Max retries exceeded with url: "
          "/openEO_0.nc?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101"
          "%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600"
          "&X-Amz-Signature=0a1b2c3d4e5f (Caused by NewConnectionError('Connection refused'))")


def per_call_us(fn, args: list) -> float:
    started = time.perf_counter()
    for a in args:
        fn(a)
    return (time.perf_counter() - started) / len(args) * 1e6


def item(i: int) -> dict:
    return {
        "type": "Feature", "stac_version": "1.1.0", "id": f"S2_10m_sample{i:06d}_32631",
        "geometry": {"type": "Polygon", "coordinates": [[[5.0, 51.0], [5.01, 51.0], [5.01, 51.01],
                                                         [5.0, 51.01], [5.0, 51.0]]]},
        "bbox": [5.0, 51.0, 5.01, 51.01],
        "properties": {"datetime": None, "start_datetime": "2021-06-01T00:00:00Z",
                       "end_datetime": "2021-06-11T00:00:00Z", "proj:code": "EPSG:32631",
                       "proj:shape": [32, 32], "sample_id": f"sample{i:06d}", "ref_id": "2021_EUR_DEMO"},
        "links": [],
        "assets": {"data": {
            "href": f"/data/out/2021_EUR_DEMO/32631/sample{i:06d}/S2_10m_sample{i:06d}.nc",
            "type": "application/x-netcdf", "roles": ["data"], "file:size": 123456 + i,
            "file:checksum": f"1220{i:064x}",
            "eo:bands": [{"name": f"S2-L2A-B{b:02d}", "common_name": "red"} for b in range(1, 13)]}},
        "stac_extensions": ["https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                            "https://stac-extensions.github.io/file/v2.1.0/schema.json",
                            "https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
    }


def main(n_lines: int = 20_000, n_items: int = 5_000) -> None:
    logging.getLogger("eoextract").setLevel(logging.ERROR)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    lines = [f"{PLAIN} (attempt {i})" for i in range(n_lines)]  # all different: no cache hits
    records = [logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (line,), None) for line in lines]
    fmt_us = per_call_us(formatter.format, records)
    plain_us = per_call_us(redact, lines)
    signed_us = per_call_us(redact, [f"{SIGNED} #{i}" for i in range(n_lines // 4)])
    print(f"log line: format {fmt_us:.1f} µs, redact {plain_us:.1f} µs "
          f"(ratio {plain_us / fmt_us:.2f}); signed error line: redact {signed_us:.1f} µs")

    items = [item(i) for i in range(n_items)]
    started = time.perf_counter()
    for d in items:
        redact_data(d)
    redact_ms = (time.perf_counter() - started) / n_items * 1e3
    started = time.perf_counter()
    for d in items:
        orjson.dumps(d)
    dumps_ms = (time.perf_counter() - started) / n_items * 1e3
    from eoextract.stac import build_collection

    folder = Path(tempfile.mkdtemp())
    try:
        started = time.perf_counter()
        build_collection(items, folder / "stac", collection_id="bench", description="bench")
        build_ms = (time.perf_counter() - started) / n_items * 1e3
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"item: redact_data {redact_ms * 1e3:.1f} µs, orjson.dumps {dumps_ms * 1e3:.1f} µs, "
          f"catalogue write (redaction included) {build_ms * 1e3:.1f} µs; "
          f"redaction share of the write {redact_ms / build_ms:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
