"""The claim, lease and adoption rules select the same rows as SQL and as pandas."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from eoextract.jobs.db import _rules as rules
from eoextract.jobs.db._file_table import FrameColumns
from eoextract.jobs.db._models import Base
from eoextract.jobs.db._sql_claims import _SqlColumns
from eoextract.jobs.db._sql_rows import JOBS
from eoextract.jobs.status import JobStatus

NOW = datetime(2025, 1, 1, tzinfo=UTC)
PAST, FUTURE = NOW - timedelta(minutes=5), NOW + timedelta(minutes=5)


@pytest.fixture(scope="module")
def rows():
    """One row per combination of status, holder, lease, due time and backend (nulls too)."""
    combos = itertools.product([s.value for s in JobStatus], [None, "me", "other"],
                               [None, PAST, NOW, FUTURE], [None, PAST, FUTURE], [None, "b1", "b2"])
    return [dict(pk=i + 1, job_key=str(i), status=s, claimed_by=owner, lease_until=lease,
                 next_attempt_at=due, backend_name=backend, attempt=0, data={})
            for i, (s, owner, lease, due, backend) in enumerate(combos)]


@pytest.fixture(scope="module")
def engine(rows):
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(JOBS), rows)
    return engine


@pytest.fixture(scope="module")
def frame(rows):
    df = pd.DataFrame(rows).set_index("job_key")
    for name in ("lease_until", "next_attempt_at"):
        df[name] = pd.to_datetime(df[name], utc=True)
    return df


def _same(engine, frame, sql_condition, frame_condition):
    with engine.connect() as conn:
        by_sql = set(conn.scalars(sa.select(JOBS.c.job_key).where(sql_condition)))
    by_frame = set(frame.index[frame_condition])
    assert by_sql == by_frame
    return by_sql


@pytest.mark.parametrize("registered", [[], ["b1"], ["b1", "b2"]])
def test_claim_rules(engine, frame, registered):
    s, f = _SqlColumns(), FrameColumns(frame)
    for rule in (lambda t: rules.claimable(t, "me", NOW), rules.never_due,
                 lambda t: rules.due(t, NOW), lambda t: rules.active_on(t, "b1"),
                 lambda t: rules.claimed_for(t, "b1", NOW)):
        assert _same(engine, frame, rule(s), rule(f))
    none_other = all(n == "b1" for n in registered)
    sql_registered = sa.select(sa.literal_column("'x'")).where(sa.false())
    if registered:
        sql_registered = sa.union_all(*(sa.select(sa.literal(n)) for n in registered))
    pinned = _same(engine, frame,
                   ~rules.pinned_elsewhere(s, "b1", sql_registered, sa.literal(none_other)),
                   ~rules.pinned_elsewhere(f, "b1", registered, none_other))
    assert pinned


def test_lease_rules(engine, frame):
    s, f = _SqlColumns(), FrameColumns(frame)
    for rule in (lambda t: rules.adoptable(t, "me", NOW), lambda t: rules.adoptable(t, "me", NOW, ["b2"]),
                 lambda t: rules.renewable(t, "me"), lambda t: rules.held_by(t, "me")):
        assert _same(engine, frame, rule(s), rule(f))
