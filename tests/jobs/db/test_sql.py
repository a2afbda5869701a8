"""SqlJobDatabase: transitions, history, claims, leases, schema checks, dtypes.

Tests taking ``sql_location`` (or ``db``) run on SQLite and on PostgreSQL (marked ``pg``).
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from eoextract.errors import InvalidTransition, JobDatabaseError, JobError, SchemaVersionError
from eoextract.jobs.db import SqlJobDatabase, create_job_db
from eoextract.jobs.db._models import SCHEMA_VERSION
from eoextract.jobs.status import JobStatus

from history_faults import failing_history_writes  # noqa: I001 - a helper module beside the tests

S = JobStatus
NOW = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture()
def db(sql_location):
    df = pd.DataFrame({"title": [f"t{i}" for i in range(5)], "n": range(5)})
    database = create_job_db(sql_location, df)
    yield database
    database.close()


def test_transition_updates_row_and_writes_history(db):
    change = db.transition("0", S.CREATING, message="go", manager_id="m1", create_tag="tag-0")
    assert (change.old, change.new, change.manager_id) == (S.NOT_STARTED, S.CREATING, "m1")
    db.transition("0", "created", id="j-1", manager_id="m1")
    rec = db.get("0")
    assert rec.status is S.CREATED
    assert rec.backend_job_id == "j-1"
    assert rec.fields["create_tag"] == "tag-0"
    assert rec.row == {"title": "t0", "n": 0}
    hist = db.history("0")
    assert [(h.old, h.new) for h in hist] == [
        (None, S.NOT_STARTED), (S.NOT_STARTED, S.CREATING), (S.CREATING, S.CREATED)]
    assert hist[-1].backend_job_id == "j-1" and hist[1].message == "go"
    assert all(h.at.tzinfo is not None for h in hist)


def test_invalid_transition_and_expect_mismatch_raise(db):
    with pytest.raises(InvalidTransition):
        db.transition("0", S.RUNNING)
    db.transition("1", S.SKIPPED)
    with pytest.raises(InvalidTransition):
        db.transition("1", S.NOT_STARTED)
    db.transition("1", S.NOT_STARTED, user_retry=True, attempt=1)
    assert db.get("1").attempt == 1
    with pytest.raises(InvalidTransition, match="expected"):
        db.transition("2", S.CREATING, expect=S.CREATED)
    assert db.get("2").status is S.NOT_STARTED
    with pytest.raises(JobError):
        db.transition("nope", S.CREATING)
    with pytest.raises(ValueError):
        db.transition("2", S.CREATING, no_such_field=1)
    with pytest.raises(ValueError):
        db.update("2", status="running")


def test_failure_inside_transition_writes_nothing(db):
    with failing_history_writes(db), pytest.raises(RuntimeError):
        db.transition("0", S.CREATING, create_tag="x")
    rec = db.get("0")
    assert rec.status is S.NOT_STARTED and rec.fields["create_tag"] is None
    assert len(db.history("0")) == 1


def test_update_touches_only_given_fields(db):
    db.update("3", backend_status="queued", cpu="12 cpu-seconds", costs=1.5)
    rec = db.get("3")
    assert (rec.fields["backend_status"], rec.fields["cpu"], rec.fields["costs"]) == (
        "queued", "12 cpu-seconds", 1.5)
    assert db.get("4").fields["cpu"] is None
    with pytest.raises(JobError):
        db.update("nope", cpu="1")


def test_claim_respects_due_time_leases_and_order(db):
    db.update("0", next_attempt_at=NOW + timedelta(minutes=5))
    first = db.claim(2, manager_id="a", now=NOW, lease_seconds=60)
    assert [r.job_key for r in first] == ["1", "2"]
    assert first[0].fields["claimed_by"] == "a"
    # held by "a": "b" gets the rest only
    assert [r.job_key for r in db.claim(10, manager_id="b", now=NOW, lease_seconds=1000)] == ["3", "4"]
    assert db.claim(10, manager_id="c", now=NOW) == []
    # the due job becomes claimable, and expired leases can be taken over
    later = NOW + timedelta(minutes=6)
    keys = [r.job_key for r in db.claim(10, manager_id="c", now=later, lease_seconds=600)]
    assert keys[0] == "1" and set(keys) == {"0", "1", "2"}  # b's lease still holds 3, 4


def test_renew_and_release_leases(db):
    db.claim(5, manager_id="a", now=NOW, lease_seconds=10)
    assert db.renew_leases("a", now=NOW, lease_seconds=1000) == 5
    assert db.claim(5, manager_id="b", now=NOW + timedelta(seconds=100)) == []
    db.release("a")
    assert len(db.claim(5, manager_id="b", now=NOW)) == 5


def test_retry_to_not_started_drops_the_lease(db):
    db.claim(1, manager_id="a", now=NOW, lease_seconds=1000)
    db.transition("0", S.CREATING)
    db.transition("0", S.NOT_STARTED, attempt=1, next_attempt_at=NOW)
    assert db.get("0").fields["claimed_by"] is None
    assert "0" in [r.job_key for r in db.claim(5, manager_id="b", now=NOW)]


def test_claim_backend_pinning(sql_location):
    df = pd.DataFrame({"backend_name": [None, "vito", "cdse", "label"]})
    db = create_job_db(sql_location, df)
    # nothing registered: any other name pins the row
    assert [r.job_key for r in db.claim(9, manager_id="m", now=NOW, backend_name="vito")] == ["0", "1"]
    db.release("m")
    db.register_backend("vito", "https://vito.test")
    db.register_backend("cdse", None)
    # registered: a label that is no registered backend does not pin
    got = [r.job_key for r in db.claim(9, manager_id="m", now=NOW, backend_name="vito")]
    assert got == ["0", "1", "3"]
    db.release("m")
    assert [r.job_key for r in db.claim(9, manager_id="m", now=NOW, backend_name="cdse")] == ["0", "2", "3"]


def _claim_worker(path, manager_id, queue):
    db = SqlJobDatabase(path, busy_timeout=30)
    got = []
    while True:
        batch = db.claim(3, manager_id=manager_id, now=datetime.now(UTC), lease_seconds=600)
        if not batch:
            break
        for rec in batch:
            db.transition(rec.job_key, S.CREATING, manager_id=manager_id, expect=S.NOT_STARTED)
            got.append(rec.job_key)
    db.close()
    queue.put(got)


def test_two_processes_never_claim_the_same_job(tmp_path):
    path = tmp_path / "shared.db"
    create_job_db(path, pd.DataFrame({"x": range(60)})).close()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim_worker, args=(str(path), f"m{i}", queue)) for i in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert not set(results[0]) & set(results[1])
    assert sorted(results[0] + results[1], key=int) == [str(i) for i in range(60)]


def test_history_survives_reopen_and_backends_have_no_credentials(tmp_path):
    path = tmp_path / "jobs.db"
    db = create_job_db(path, pd.DataFrame({"x": [1]}))
    db.register_backend("b1", "https://user:secret@example.test/openeo/1.2")
    db.transition("0", S.CREATING)
    db.close()
    again = SqlJobDatabase(path)
    assert again.backends() == {"b1": "https://example.test/openeo/1.2"}
    assert [h.new for h in again.history("0")] == [S.NOT_STARTED, S.CREATING]
    raw = path.read_bytes()
    assert b"secret" not in raw


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "jobs.db"
    create_job_db(path, pd.DataFrame({"x": [1]})).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(SchemaVersionError):
        SqlJobDatabase(path)


def test_other_tools_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(JobDatabaseError, match="not an eoextract job database"):
        SqlJobDatabase(path)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(JobDatabaseError):
        SqlJobDatabase(garbage)


def test_missing_folder_is_refused_before_writing(tmp_path):
    with pytest.raises(JobDatabaseError, match="does not exist"):
        create_job_db(tmp_path / "nope" / "jobs.db", pd.DataFrame({"x": [1]}))
    assert not (tmp_path / "nope").exists()


def test_persist_updates_given_rows_and_adds_new_ones(db):
    df = db.read().loc[["1", "2"]].copy()
    df["status"] = ["queued_for_start", "running"]
    df["id"] = ["j-1", "j-2"]
    df.loc["2", "n"] = 20
    db.persist(df)
    out = db.read()
    assert out.loc["1", "status"] == "queued" and out.loc["2", "status"] == "running"
    assert out.loc["2", "n"] == 20 and out["n"].dtype == np.int64
    assert db.history("2")[-1].message == "persist"
    assert out.loc["0", "status"] == "not_started"
    db.persist(pd.DataFrame({"title": ["new"], "n": [9]}, index=["new"]))
    assert db.get("new").row == {"title": "new", "n": 9}
    assert db.count_by_status() == {"not_started": 4, "queued": 1, "running": 1}
    assert set(db.get_by_status(["queued_for_start", "running"]).index) == {"1", "2"}
    assert list(db.get_by_indices([0, "new"]).index) == ["0", "new"]
    assert len(db.get_by_status(["not_started"], max=2)) == 2


def test_active_counts(db):
    db.transition("0", S.CREATING, backend_name="a")
    db.transition("1", S.CREATING, backend_name="a")
    db.transition("2", S.CREATING, backend_name="b")
    db.transition("2", S.ERROR)
    assert db.active_counts() == {"a": 2}


def test_geometry_and_dates_round_trip(sql_location):
    gdf = gpd.GeoDataFrame(
        {"d": pd.to_datetime(["2024-01-01", "2024-06-30"]),
         "tz": pd.to_datetime(["2024-01-01T10:00", "2024-06-30T23:59"]).tz_localize("Europe/Brussels"),
         "i": np.array([1, 2], dtype="int32"), "b": [True, False], "s": ["a", None]},
        geometry=[Point(500000, 5600000), None], crs=32631, index=["x", "y"])
    db = create_job_db(sql_location, gdf)
    out = SqlJobDatabase(sql_location).read()
    assert isinstance(out, gpd.GeoDataFrame) and out.crs.to_epsg() == 32631
    pd.testing.assert_frame_equal(out[gdf.columns], gdf.rename_axis("job_key"), check_index_type=False)
    assert db.get("x").row["geometry"].equals(Point(500000, 5600000))


_columns = st.fixed_dictionaries({
    "i": st.lists(st.integers(-2**62, 2**62), min_size=1, max_size=1),
    "f": st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=1),
    "b": st.lists(st.booleans(), min_size=1, max_size=1),
    "s": st.lists(st.text(max_size=8) | st.none(), min_size=1, max_size=1),
    "t": st.lists(st.datetimes(min_value=datetime(1700, 1, 1), max_value=datetime(2200, 1, 1)),
                  min_size=1, max_size=1),
})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(_columns, min_size=0, max_size=6))
def test_dtype_round_trip_property(rows):
    data = {k: [r[k][0] for r in rows] for k in ("i", "f", "b", "s", "t")}
    df = pd.DataFrame({
        "i": pd.Series(data["i"], dtype="int64"), "f": pd.Series(data["f"], dtype="float64"),
        "b": pd.Series(data["b"], dtype="bool"), "s": pd.Series(data["s"], dtype=object),
        "t": pd.Series(data["t"], dtype="datetime64[ns]" if rows else "datetime64[ns]"),
    })
    if len(df) and df["s"].isna().all():
        df["s"] = df["s"].astype(object)
    db = SqlJobDatabase("sqlite://").initialize_from_df(df)
    out = db.read()[df.columns]
    pd.testing.assert_frame_equal(out, df.set_axis(df.index.astype(str).rename("job_key")),
                                  check_index_type=False)


def test_threads_transition_concurrently(db):
    from concurrent.futures import ThreadPoolExecutor

    def walk(key):
        for status in (S.CREATING, S.CREATED, S.QUEUED, S.RUNNING, S.FINISHED):
            db.transition(key, status, manager_id="threads")
        return key

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(walk, ["0", "1", "2", "3", "4"])) == ["0", "1", "2", "3", "4"]
    assert db.count_by_status() == {"finished": 5}
    assert all(len(db.history(k)) == 6 for k in "01234")


def _create_concurrently(path, barrier):
    import pandas as pd

    from eoextract.jobs.db import create_job_db

    barrier.wait()
    db = create_job_db(path, pd.DataFrame({"v": range(50)}), on_exists="append")
    return sorted(db.read().index)


def test_concurrent_creation_of_one_sqlite_db(tmp_path):
    """Processes creating the same database at once: one creates, the others append nothing.

    Several rounds, because the race (e.g. two processes switching a new file to WAL at
    the same moment) shows only now and then.
    """
    import multiprocessing as mp

    from eoextract.jobs.db import get_job_db

    ctx = mp.get_context("spawn")
    n = 4
    with ctx.Manager() as manager, ctx.Pool(n) as pool:
        for round_ in range(8):
            barrier = manager.Barrier(n)
            path = tmp_path / f"jobs{round_}.db"
            results = [pool.apply_async(_create_concurrently, (path, barrier)) for _ in range(n)]
            keys = [r.get(120) for r in results]
            assert all(k == sorted(str(i) for i in range(50)) for k in keys)
            with get_job_db(path) as db:
                assert db.count_by_status() == {"not_started": 50}


def test_switch_to_wal_waits_for_a_busy_database():
    """SQLite may refuse the switch to WAL at once while another process makes it; it is retried."""
    import sqlite3

    from eoextract.jobs.db._connection import _enable_wal

    class Cursor:
        def __init__(self, failures, message="database is locked"):
            self.failures, self.message, self.calls = failures, message, 0

        def execute(self, sql):
            self.calls += 1
            if self.calls <= self.failures:
                raise sqlite3.OperationalError(self.message)

    cursor = Cursor(3)
    _enable_wal(cursor, timeout=5)
    assert cursor.calls == 4
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _enable_wal(Cursor(1, "disk I/O error"), timeout=5)  # other errors at once
    stuck = Cursor(10**6)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _enable_wal(stuck, timeout=0.2)  # and not forever
    assert 2 <= stuck.calls < 50


def test_rows_added_in_several_insert_batches_keep_values_and_history(tmp_path):
    from eoextract.jobs.db import create_job_db
    from eoextract.jobs.db._sql_rows import _INSERT_BATCH

    n = 2 * _INSERT_BATCH + 7
    df = pd.DataFrame({"n": range(n), "backend_name": ["b" if i % 3 == 0 else None for i in range(n)]})
    db = create_job_db(str(tmp_path / "jobs.db"), df)
    jobs = {r.job_key: r for r in db.jobs()}
    assert len(jobs) == n and db.count_by_status() == {"not_started": n}
    assert jobs[str(n - 1)].backend_name == ("b" if (n - 1) % 3 == 0 else None)
    assert jobs[str(_INSERT_BATCH)].row["n"] == _INSERT_BATCH
    assert [h.new for h in db.history(str(n - 1))] == [JobStatus.NOT_STARTED]
    db.close()
