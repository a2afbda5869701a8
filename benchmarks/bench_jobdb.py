"""Job database cost per status change, against openeo's CSV/Parquet ``persist``.

Measures, for job tables of several sizes:

* one status transition (row update + history row, one SQLite transaction, WAL,
  ``synchronous=NORMAL``) in :class:`~eoextract.jobs.db.SqlJobDatabase`;
* claiming the next batch of jobs (``claim``) and the transitions that follow;
* a save of :class:`~eoextract.jobs.db.FileJobDatabase` (one whole-file atomic rewrite,
  done once per batch of changes);
* openeo's ``CsvJobDatabase.persist`` / ``ParquetJobDatabase.persist`` of one changed row
  (each rewrites the whole file).

Usage::

    python benchmarks/bench_jobdb.py [--sizes 1000 100000] [--transitions 2000]

Prints absolute times and the ratios the targets are stated in: transition time at the
largest size ≤ 1 ms, t(largest)/t(smallest) ≤ 2, and openeo's persist / our transition.
:func:`measure` returns one side's figures per size (``benchmarks/run_all.py`` runs the
openeo side in the openeo peer's virtualenv).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd


def job_frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "title": [f"job-{i}" for i in range(n)],
        "tile": rng.choice(["31UFS", "31UES", "32ULB"], n),
        "start_date": pd.date_range("2020-01-01", periods=n, freq="h"),
        "n_polygons": rng.integers(1, 50, n),
    })


def bench_sql(folder: Path, n: int, transitions: int) -> dict[str, float]:
    from eoextract.jobs.db import create_job_db
    from eoextract.jobs.status import JobStatus

    t0 = time.perf_counter()
    db = create_job_db(folder / f"jobs-{n}.db", job_frame(n))
    create_s = time.perf_counter() - t0
    # random rows from the second half; claims below take the first half in order
    keys = random.Random(1).sample(range(n // 2, n), min(transitions, n // 2))
    times = []
    for k in keys:
        start = time.perf_counter()
        db.transition(str(k), JobStatus.CREATING, manager_id="bench", message="bench")
        times.append(time.perf_counter() - start)
    # claim the next batch of 100 and move each on
    now = datetime.now(UTC)
    claim_times, batch_times = [], []
    for _ in range(10):
        start = time.perf_counter()
        batch = db.claim(100, manager_id="bench", now=now)
        claim_times.append(time.perf_counter() - start)
        for rec in batch:
            db.transition(rec.job_key, JobStatus.CREATING, manager_id="bench")
        batch_times.append(time.perf_counter() - start)
    db.close()
    return {
        "create_s": create_s,
        "transition_ms": statistics.median(times) * 1e3,
        "transition_mean_ms": statistics.fmean(times) * 1e3,
        "transition_p99_ms": float(np.percentile(times, 99)) * 1e3,
        "claim100_ms": statistics.median(claim_times) * 1e3,
        "claim100_and_transition_ms": statistics.median(batch_times) * 1e3,
    }


def bench_files(folder: Path, n: int, repeat: int) -> dict[str, float]:
    from eoextract.jobs.db import create_job_db
    from eoextract.jobs.status import JobStatus

    out = {}
    for suffix in (".csv", ".parquet"):
        db = create_job_db(folder / f"ours-{n}{suffix}", job_frame(n))
        db.flush_interval = 3600
        times = []
        for k in range(repeat):
            db.transition(str(k), JobStatus.CREATING)
            start = time.perf_counter()
            db.flush()
            times.append(time.perf_counter() - start)
        out[f"ours{suffix}_save_ms"] = statistics.median(times) * 1e3
    return out


def bench_openeo(folder: Path, n: int, repeat: int) -> dict[str, float]:
    from openeo.extra.job_management import CsvJobDatabase, ParquetJobDatabase

    out = {}
    for cls, suffix in ((CsvJobDatabase, ".csv"), (ParquetJobDatabase, ".parquet")):
        db = cls(folder / f"openeo-{n}{suffix}").initialize_from_df(job_frame(n))
        db.read()
        times = []
        for k in range(repeat):
            row = db.df.loc[[k]].copy()
            row["status"] = "queued"
            start = time.perf_counter()
            db.persist(row)
            times.append(time.perf_counter() - start)
        out[f"openeo{suffix}_persist_ms"] = statistics.median(times) * 1e3
    return out


def measure(sizes: list[int], transitions: int = 2000, repeat: int = 5, side: str = "eoextract") -> dict:
    """Figures of one side (``"eoextract"``: SQLite and our file saves; ``"openeo"``: its
    CSV/Parquet ``persist``) for each size, keyed by the size as a string."""
    warnings.simplefilter("ignore", FutureWarning)
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            if side == "eoextract":
                out[str(n)] = bench_sql(Path(tmp), n, transitions) | bench_files(Path(tmp), n, repeat)
            else:
                out[str(n)] = bench_openeo(Path(tmp), n, repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--transitions", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5, help="file saves timed per size")
    args = parser.parse_args()
    warnings.simplefilter("ignore", FutureWarning)
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in args.sizes:
            res = bench_sql(folder, n, args.transitions)
            res |= bench_files(folder, n, args.repeat)
            res |= bench_openeo(folder, n, args.repeat)
            results[n] = res
            print(f"N={n:>7}: " + ", ".join(f"{k}={v:.3f}" for k, v in res.items()), flush=True)
    small, large = min(results), max(results)
    big = results[large]
    t = big["transition_ms"]
    print()
    print(f"SQLite transition at N={large}: {t:.3f} ms median "
          f"(mean {big['transition_mean_ms']:.3f}, p99 {big['transition_p99_ms']:.3f}) "
          f"[target <= 1 ms: {'ok' if t <= 1 else 'MISSED'}]")
    ratio = t / results[small]["transition_ms"]
    print(f"t({large})/t({small}) = {ratio:.2f} [target <= 2: {'ok' if ratio <= 2 else 'MISSED'}]")
    print(f"claim next 100 at N={large}: {big['claim100_ms']:.2f} ms; "
          f"claim 100 + 100 transitions: {big['claim100_and_transition_ms']:.1f} ms")
    for name in ("openeo.csv_persist_ms", "openeo.parquet_persist_ms",
                 "ours.csv_save_ms", "ours.parquet_save_ms"):
        print(f"{name.replace('_ms', '')} at N={large}: {big[name]:.1f} ms = "
              f"{big[name] / t:.0f}x one SQLite transition")


if __name__ == "__main__":
    main()
