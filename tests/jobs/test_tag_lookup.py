"""Creation tags are found at any depth of a backend's job history, reading only the jobs
created since the attempt when the listing is ordered newest first, and the whole listing
when it is not."""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from eoextract._util.utc import utc_now
from eoextract.backend import BackendProfile, LocalBackend
from eoextract.jobs._backends import BackendSpec, add_tag, find_tagged_jobs, make_tag
from eoextract.jobs.db import get_job_db

SCRIPT = Path(__file__).with_name("crash_run.py")
#: Historical jobs of the account (20,000 as a long production history; set lower to save memory).
HISTORY = int(os.environ.get("EOEXTRACT_TEST_HISTORY_JOBS", "20000"))
#: Jobs created after the crashed attempt: more than the 50 pages of 100 an older lookup read.
BURIED_UNDER = 6_000
PROCESS = {"process_graph": {"load": {
    "process_id": "load_collection", "result": True,
    "arguments": {"id": "SENTINEL2_L2A", "bands": ["B04"],
                  "spatial_extent": {"west": 5.0, "south": 51.0, "east": 5.01, "north": 51.01},
                  "temporal_extent": ["2021-06-01", "2021-06-10"]}}}}


def _bury(backend: LocalBackend, count: int) -> None:
    """``count`` jobs created now by someone else on the same account."""
    store = backend.app.state.backend.jobs.store
    assert store.seed_historical(backend.user, count, PROCESS, recent=True) == count


class _CountingSpec(BackendSpec):
    """A backend spec that counts the listing pages and job descriptions it asks for."""

    def __init__(self, backend: LocalBackend) -> None:
        self.requests: collections.Counter[str] = collections.Counter()

        def connect():
            con = backend.connect()
            con.session.hooks["response"].append(self._count)
            return con

        super().__init__("local", connect)

    def _count(self, response, *args, **kwargs):
        path = response.request.path_url.split("?")[0].rstrip("/")
        self.requests["listing" if path.endswith("/jobs") else "other"] += 1


def _tagged_job(backend: LocalBackend, tag: str) -> str:
    response = backend.connect().post("/jobs", json={"process": PROCESS, "description": add_tag("mine", tag)},
                                      expected_status=201)
    return response.headers["OpenEO-Identifier"]


def _run(url: str, db_path: Path, prefix: str, *crash: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), url, str(db_path), prefix, "3", *crash],
                          capture_output=True, text=True, timeout=180)


def _titles(backend: LocalBackend, prefix: str) -> collections.Counter:
    return collections.Counter(j["title"] for j in backend.connect().list_jobs(limit=None)
                               if str(j.get("title", "")).startswith(prefix + "-"))


@pytest.mark.slow
@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_crashed_creation_buried_under_newer_jobs_is_adopted(tmp_path, order):
    """A run dies right after the backend created a job; thousands of jobs are created
    after it on the same account, which has a long history; the next run adopts the job
    instead of creating it again, whatever order the backend lists its jobs in."""
    prefix = f"buried{uuid.uuid4().hex[:6]}"
    db_path, marker = tmp_path / "jobs.db", tmp_path / "crashed"
    with LocalBackend(historical_jobs=HISTORY, workers=1,
                      profile=BackendProfile(job_listing_order=order)) as backend:
        first = _run(backend.url, db_path, prefix, "0", str(marker))
        assert first.returncode == 9, first.stderr
        with get_job_db(db_path) as db:
            assert db.count_by_status(["creating"]).get("creating", 0) >= 1
        _bury(backend, BURIED_UNDER)

        second = _run(backend.url, db_path, prefix)
        assert second.returncode == 0, second.stderr
        assert "{'finished': 3}" in second.stdout
        assert int(second.stdout.split()[-1]) >= 1  # adopted
        titles = _titles(backend, prefix)
        assert len(titles) == 3 and set(titles.values()) == {1}, titles  # none created twice


def test_lookup_reads_only_the_jobs_created_since_the_attempt():
    with LocalBackend(historical_jobs=HISTORY, workers=1) as backend:
        attempt = utc_now()
        tag = make_tag("k1", 1, uuid.uuid4().hex[:10])
        job_id = _tagged_job(backend, tag)
        _bury(backend, BURIED_UNDER)
        spec = _CountingSpec(backend)

        found = find_tagged_jobs(spec, {tag: attempt})
        assert found[tag]["id"] == job_id
        # the job lies under 6,000 newer ones: 61 pages, not the 261 of the whole listing
        assert spec.requests["listing"] == BURIED_UNDER // 100 + 1
        assert spec.requests["other"] == 0

        # a tag that is not there: read back to the attempt (less the margin) and no further
        spec.requests.clear()
        assert find_tagged_jobs(spec, {make_tag("k2", 1, "absent"): attempt}) == {}
        assert spec.requests["listing"] <= BURIED_UNDER // 100 + 2
        # the attempt's time unknown: the whole listing, however long
        spec.requests.clear()
        assert find_tagged_jobs(spec, [make_tag("k2", 1, "absent")]) == {}
        assert spec.requests["listing"] == -(-(HISTORY + BURIED_UNDER + 1) // 100)


def test_lookup_reads_the_whole_listing_when_it_is_not_newest_first(caplog):
    with LocalBackend(historical_jobs=2_000, workers=1,
                      profile=BackendProfile(job_listing_order="oldest_first")) as backend:
        attempt = utc_now()
        tag = make_tag("k1", 1, uuid.uuid4().hex[:10])
        job_id = _tagged_job(backend, tag)
        _bury(backend, 500)
        spec = _CountingSpec(backend)
        with caplog.at_level(logging.WARNING, logger="eoextract"):
            found = find_tagged_jobs(spec, {tag: attempt})
        assert found[tag]["id"] == job_id
        assert spec.requests["listing"] == 21  # up to the job: 2,000 older jobs, then it
        assert "does not list its jobs newest first" in caplog.text


def test_clock_skew_within_the_margin_is_tolerated():
    """The manager's clock runs 10 minutes ahead of the backend's: the job still counts."""
    with LocalBackend(historical_jobs=500, workers=1) as backend:
        tag = make_tag("k1", 1, uuid.uuid4().hex[:10])
        job_id = _tagged_job(backend, tag)
        _bury(backend, 300)
        spec = _CountingSpec(backend)
        ahead = utc_now() + dt.timedelta(minutes=10)
        assert find_tagged_jobs(spec, {tag: ahead})[tag]["id"] == job_id
        assert find_tagged_jobs(spec, {tag: ahead}, margin=dt.timedelta(0)) == {}


def _whole_listing(backend: LocalBackend, limit: int) -> list[dict]:
    con = backend.connect()
    response, jobs = con.get("/jobs", params={"limit": limit}).json(), []
    while True:
        jobs += response["jobs"]
        following = [link["href"] for link in response["links"] if link["rel"] == "next"]
        if not following:
            return jobs
        response = con.get(following[0]).json()


@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_embedded_listing_is_ordered_by_created_across_restarts(tmp_path, order):
    """Jobs kept in the data folder stay newer than the seeded history after a restart."""
    profile = BackendProfile(job_listing_order=order)
    with LocalBackend(data_dir=tmp_path, workers=1, profile=profile) as backend:
        kept = _tagged_job(backend, make_tag("kept", 1, "n"))
    with LocalBackend(data_dir=tmp_path, workers=1, profile=profile, historical_jobs=250) as backend:
        new = _tagged_job(backend, make_tag("new", 1, "n"))
        jobs = _whole_listing(backend, limit=40)
    ids = [j["id"] for j in jobs]
    assert len(ids) == len(set(ids)) == 252
    created = [j["created"] for j in jobs]
    newest_first = order == "newest_first"
    assert created == sorted(created, reverse=newest_first)
    assert ids[:2] == ([new, kept] if newest_first else ["j-hist-00000000", "j-hist-00000001"])
    assert ids[-1] == ("j-hist-00000000" if newest_first else new)
