"""Output paths are registered per job before bytes are written: no job replaces another's file
or one of the manager's own."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from eoextract.errors import OutputPathConflict, UnsafeAssetPath
from eoextract.extract import ItemStore
from eoextract.extract._output_registry import OutputRegistry, database_files
from eoextract.jobs.db import create_job_db, get_job_db

sys.path.insert(0, str(Path(__file__).parent))
from instant_jobs import create_instant_job, instant_jobs, instant_manager  # noqa: E402


# --------------------------------------------------------------------------- the registry


def test_a_path_belongs_to_the_first_job_that_registers_it(tmp_path):
    registry = OutputRegistry(tmp_path)
    placed = registry.register("a/b.nc", "job-1", asset="openEO_0.nc")
    assert placed == (tmp_path / "a" / "b.nc").resolve()
    assert registry.register(tmp_path / "a" / "b.nc", "job-1") == placed  # the same job: fine
    with pytest.raises(OutputPathConflict) as caught:
        registry.register("a/./b.nc", "job-2", asset="openEO_3.nc")
    err = caught.value
    assert "'job-1'" in str(err) and "'job-2'" in str(err) and "a/b.nc" in str(err)
    assert (err.owner, err.job_key, err.path, err.asset) == ("job-1", "job-2", "a/b.nc", "openEO_3.nc")
    assert isinstance(err, UnsafeAssetPath)  # fatal for the job, as unsafe paths are
    # persisted: another manager (or a restarted one) sees the same owner
    assert OutputRegistry(tmp_path).owner("a/b.nc") == "job-1"
    with pytest.raises(OutputPathConflict):
        OutputRegistry(tmp_path).register("a/b.nc", "job-3")
    assert OutputRegistry(tmp_path).register("a/c.nc", "job-2").name == "c.nc"


def test_concurrent_registrations_have_one_winner(tmp_path):
    winners, conflicts = [], []
    barrier = threading.Barrier(8)

    def race(key: str) -> None:
        registry = OutputRegistry(tmp_path)  # one per "manager"
        barrier.wait()
        try:
            registry.register("same.nc", key)
            winners.append(key)
        except OutputPathConflict as exc:
            conflicts.append(exc.owner)

    threads = [threading.Thread(target=race, args=(f"job-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(conflicts) == 7 and set(conflicts) == set(winners)
    assert not [p for p in (tmp_path / ".eoextract" / "paths").rglob("*") if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("path", [".eoextract/items/x.json", ".eoextract/extraction.json",
                                  "stac/collection.json", "stac/items/a.json",
                                  "jobs.db", "jobs.db-wal", "jobs.db-shm", "jobs.db-journal",
                                  "db/jobs.csv", "db/jobs.csv.meta.json", "db/jobs.csv.history.csv"])
def test_the_managers_own_files_are_refused(tmp_path, path):
    registry = OutputRegistry(tmp_path, reserved_files=[tmp_path / "jobs.db", tmp_path / "db" / "jobs.csv"])
    with pytest.raises(UnsafeAssetPath, match="manager's|job database") as caught:
        registry.register(path, "job-1")
    assert not isinstance(caught.value, OutputPathConflict)
    assert not (tmp_path / ".eoextract" / "paths").exists()
    # names that merely look alike are fine
    assert registry.register("jobs.dbx", "job-1").name == "jobs.dbx"
    assert registry.register("other/jobs.db", "job-1").name == "jobs.db"


def test_database_files_of_every_kind_of_job_database(tmp_path):
    df = pd.DataFrame({"title": ["a"]})
    sqlite = create_job_db(tmp_path / "jobs.db", df)
    csv = create_job_db(tmp_path / "jobs.csv", df)
    assert database_files(sqlite) == [tmp_path / "jobs.db"]
    assert database_files(csv) == [tmp_path / "jobs.csv"]
    assert database_files(str(tmp_path / "x.parquet")) == [tmp_path / "x.parquet"]
    assert database_files(f"sqlite:///{tmp_path}/u.db") == [tmp_path / "u.db"]
    assert database_files("postgresql://user:pw@host/db") == []
    assert database_files("sqlite://") == []
    assert database_files(None) == []


# --------------------------------------------------------------------------- end to end


def _same_path(root_dir, idx, row, asset_id):
    return root_dir / "shared" / "result.nc"


def test_a_second_job_aiming_at_a_taken_path_fails_and_leaves_the_file(local_backend, tmp_path):
    out, db_path = tmp_path / "out", tmp_path / "jobs.db"
    both = instant_jobs(2)
    stats = instant_manager(out, local_backend, _same_path).run_jobs(both.iloc[:1], create_instant_job, db_path)
    assert stats["status_counts"] == {"finished": 1}
    placed = out / "shared" / "result.nc"
    before = (placed.stat().st_ino, placed.stat().st_mtime_ns, placed.read_bytes())
    # a record being written when a manager was killed is removed once stale
    stale = next((out / ".eoextract" / "paths").glob("??")) / ".tmp-killed"
    stale.write_bytes(b"{")
    os.utime(stale, (1, 1))
    # a new manager (a restart), the second job aiming at the same file
    stats = instant_manager(out, local_backend, _same_path).run_jobs(both, create_instant_job, db_path)
    assert stats["status_counts"] == {"finished": 1, "error": 1}
    db = get_job_db(db_path)
    failed = db.get("1")
    assert failed.fields["error_class"] == "UnsafeAssetPath"
    assert "'0'" in failed.fields["error_message"] and "'1'" in failed.fields["error_message"]
    assert "shared/result.nc" in failed.fields["error_message"]
    assert (placed.stat().st_ino, placed.stat().st_mtime_ns, placed.read_bytes()) == before
    # one item for the one file, with its true checksum
    items = list(ItemStore(out).iter_items())
    assert len(items) == 1 and items[0]["properties"]["eoextract:job_key"] == "0"
    assert items[0]["assets"]["data"]["file:size"] == len(before[2])
    assert not list((out / ".eoextract" / "tmp").glob("*"))  # the refused download is gone
    assert not stale.exists()


def test_a_generator_aiming_at_the_job_database_fails_its_job_only(local_backend, tmp_path):
    out = tmp_path / "out"
    db_path = out / "jobs.db"
    out.mkdir()

    def into_the_database(root_dir, idx, row, asset_id):
        return root_dir / ("jobs.db-wal" if row["title"].endswith("-0") else f"{row['title']}.nc")

    stats = instant_manager(out, local_backend, into_the_database).run_jobs(
        instant_jobs(2), create_instant_job, db_path)
    assert stats["status_counts"] == {"error": 1, "finished": 1}
    failed = get_job_db(db_path).get("0")
    assert failed.fields["error_class"] == "UnsafeAssetPath"
    assert "job database" in failed.fields["error_message"]
    assert get_job_db(db_path).get("1").status == "finished"  # the database is intact


def test_a_job_placing_its_own_files_again_is_fine(local_backend, tmp_path):
    out, db_path = tmp_path / "out", tmp_path / "jobs.db"
    calls = []

    def fails_once(job_items, row):
        calls.append(row.name)
        if len(calls) == 1:
            raise RuntimeError("label file missing")
        return job_items

    df = instant_jobs(1)
    manager = instant_manager(out, local_backend, post_job_action=fails_once)
    assert manager.run_jobs(df, create_instant_job, db_path)["status_counts"] == {"error": 1}
    placed = [p for p in out.rglob("*.nc") if ".eoextract" not in p.parts]
    assert len(placed) == 1
    # forget the download records: the retried job downloads and places its file again
    for record in (out / ".eoextract" / "downloads").glob("*"):
        record.unlink()
    from eoextract.jobs import retry_jobs

    retry_jobs(get_job_db(db_path), keys=["0"])
    stats = instant_manager(out, local_backend, post_job_action=fails_once).run_jobs(
        None, create_instant_job, db_path)
    assert stats["status_counts"] == {"finished": 1} and calls == ["0", "0"]
    assert OutputRegistry(out).owner(placed[0]) == "0"
