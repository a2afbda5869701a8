"""Tables of the SQL job database (SQLAlchemy 2 typed declarative mapping).

* ``jobs``: one row per job, every managed column typed, the user's columns in one JSON
  column ``data`` (their dtypes are described in ``meta``, key ``user_columns``).
* ``job_status_changes``: the status history, one row per transition.
* ``meta``: key/value settings of the database (schema version, key column, user column
  dtypes, geometry column and CRS, ...).
* ``backends``: registered backends (name and root URL only, never credentials).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from eoextract.jobs.db._sql_types import JSONType, UTCDateTime
from eoextract.jobs.status import JobStatus


#: Version of the table layout; bumped on every change (see :mod:`~eoextract.jobs.db._migrations`).
#: 1: first layout; 2: indexes for status counts, active slots and claims at scale;
#: 3: the ``usage`` column; 4: indexes for summaries (error classes, publication, history);
#: 5: fewer index entries to move on each status change (costs in the status index, partial
#: indexes for errors and requeues).
SCHEMA_VERSION = 5
#: The rows of the partial index ``ix_jobs_status_error``: jobs with an error (queries that
#: read it say so in their ``WHERE``).
JOBS_WITH_ERROR = "error_class IS NOT NULL"
#: The rows of the partial index ``ix_job_status_changes_new_old``: changes back to
#: ``not_started`` (queries that read it compare ``new`` with this literal, not a parameter).
REQUEUES = "new = 'not_started' AND old IS NOT NULL"
#: Value of ``meta.created_by``; marks a database as ours.
CREATED_BY = "eoextract"


class Base(DeclarativeBase):
    """Declarative base of the job database tables."""

    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


class Job(Base):
    """One job: managed columns plus the user's row in ``data``."""

    __tablename__ = "jobs"

    #: Internal primary key; insertion order is dataframe order.
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: Stable unique key (dataframe index or ``key_column`` value, as text).
    job_key: Mapped[str] = mapped_column(String(255), unique=True)
    #: The backend's job id (column ``id``, openeo's name).
    backend_job_id: Mapped[str | None] = mapped_column("id", String(255))
    backend_name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default=JobStatus.NOT_STARTED.value)
    #: Raw status reported by the backend.
    backend_status: Mapped[str | None] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    create_tag: Mapped[str | None] = mapped_column(String(255))
    error_class: Mapped[str | None] = mapped_column(String(255))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None]
    start_time: Mapped[datetime | None]
    running_start_time: Mapped[datetime | None]
    end_time: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
    #: Usage as openeo writes it, e.g. ``"1234 cpu-seconds"``.
    cpu: Mapped[str | None] = mapped_column(String(255))
    memory: Mapped[str | None] = mapped_column(String(255))
    duration: Mapped[str | None] = mapped_column(String(255))
    costs: Mapped[float | None] = mapped_column(Float)
    #: Every usage key the backend reported, as JSON (``{"cpu": {"value": 12, "unit": ...}}``).
    usage: Mapped[str | None] = mapped_column(Text)
    output_dir: Mapped[str | None] = mapped_column(Text)
    input_published_at: Mapped[datetime | None]
    output_published_at: Mapped[datetime | None]
    #: Lease: manager id holding the job until ``lease_until``.
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    lease_until: Mapped[datetime | None]
    #: The user's columns, encoded as described by ``meta['user_columns']``.
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        # count_by_status, active_counts (few active rows), slots claimed per backend
        # (claim with max_active) and lease adoption, all from the index alone; cost_totals:
        # credits spent (per backend), ended jobs without costs
        Index("ix_jobs_status_backend", "status", "backend_name", "lease_until", "costs"),
        # claim: the next due not_started jobs in order, without sorting
        Index("ix_jobs_due", "status", "next_attempt_at", "pk"),
        # renew_leases / release
        Index("ix_jobs_lease", "claimed_by", "lease_until"),
        # summaries: failures and retries per error class (jobs with an error only: the
        # others' status changes leave it alone), published jobs
        Index("ix_jobs_status_error", "status", "error_class", "attempt",
              sqlite_where=text(JOBS_WITH_ERROR), postgresql_where=text(JOBS_WITH_ERROR)),
        Index("ix_jobs_published", "output_published_at", "input_published_at"),
    )


class JobStatusChange(Base):
    """One status transition of one job."""

    __tablename__ = "job_status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"))
    old: Mapped[str | None] = mapped_column(String(32))
    new: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    manager_id: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    #: The backend job id at the time of the change (earlier attempts stay visible).
    backend_job_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_job_status_changes_job", "job_pk", "id"),
        # summaries: first launch (new = 'creating'), latest change (max per status)
        Index("ix_job_status_changes_new_at", "new", "at"),
        # summaries: retries and requeues (new = 'not_started' after another status; only
        # those changes are in it)
        Index("ix_job_status_changes_new_old", "new", "old",
              sqlite_where=text(REQUEUES), postgresql_where=text(REQUEUES)),
    )


class Meta(Base):
    """Key/value settings of the database; values are JSON."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONType)


class Backend(Base):
    """A registered backend: name and root URL, never credentials."""

    __tablename__ = "backends"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    url: Mapped[str | None] = mapped_column(Text)
    registered_at: Mapped[datetime | None]
