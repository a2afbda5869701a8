"""The rules every job database follows: status changes, claims, leases and adoption.

Each rule is written once, here, and both kinds of job database apply it:

* :func:`plan_transition` checks a status change (with
  :func:`~eoextract.jobs.status.check_transition`) and gives the values the job's row
  receives and its history entry; the databases only read the current row and write.
* Which rows a claim, an adoption, a lease renewal or a release touches is written as
  predicates over a :class:`Columns` view of the jobs table. The SQL databases evaluate
  them as SQLAlchemy expressions (built into their statements once), the file databases as
  boolean pandas series over the in-memory table. Both support ``==``, ``!=``, ``<=``,
  ``>``, ``&``, ``|`` and ``~``. Missing values are tested with :meth:`Columns.is_null`,
  and ``!=`` and ``~`` only meet values that are known (or are guarded by such a test),
  so SQL's three-valued logic and pandas' missing values select the same rows.
* What a claim, an adoption, a renewal or a release writes: :func:`lease_values`,
  :func:`renewed_lease`, :data:`RELEASED`. :class:`Claim` and :class:`Adoption` carry a
  request, with the values its rows receive, from the
  :class:`~eoextract.jobs.db.JobDatabase` method to the database's implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from eoextract.errors import InvalidTransition
from eoextract.jobs.db._records import StatusChange, Transition
from eoextract.jobs.status import ACTIVE, TERMINAL, JobStatus, check_transition

#: Statuses in which one manager looks after a job under its lease (the job is on the
#: backend or its results are being fetched): another manager adopts such a job once the
#: lease has expired (:meth:`~eoextract.jobs.db.JobDatabase.adopt_expired`).
ADOPTABLE: frozenset[JobStatus] = ACTIVE | {JobStatus.DOWNLOADING, JobStatus.POSTPROCESSING}

_NOT_STARTED = JobStatus.NOT_STARTED.value
_ACTIVE = sorted(s.value for s in ACTIVE)
_TERMINAL = sorted(s.value for s in TERMINAL)
_ADOPTABLE = sorted(s.value for s in ADOPTABLE)

#: The values :meth:`~eoextract.jobs.db.JobDatabase.release` writes.
RELEASED: Mapping[str, None] = {"claimed_by": None, "lease_until": None}


class Columns(Protocol):
    """The columns of the jobs table as a job database evaluates conditions on them.

    A column (and a condition built from columns) is whatever the database computes with:
    a SQLAlchemy column expression, or a pandas series aligned with the table.
    """

    def __getitem__(self, name: str) -> Any:
        """The column ``name`` (a managed column, e.g. ``status``, ``lease_until``)."""

    def is_null(self, column: Any) -> Any:
        """Where ``column`` holds no value."""

    def is_in(self, column: Any, values: Any) -> Any:
        """Where ``column`` holds one of ``values``."""


# -- status changes ---------------------------------------------------------------------------
def plan_transition(
    change: Transition,
    old: JobStatus,
    backend_job_id: str | None,
    *,
    manager_id: str | None,
    user_retry: bool,
    now: datetime,
) -> tuple[dict[str, Any], StatusChange]:
    """Check a status change of a job now in ``old`` and plan it: the values its row
    receives and its history entry.

    ``change.fields`` (coerced managed fields) are completed: moving to ``not_started`` or a
    final status drops the lease unless ``claimed_by`` / ``lease_until`` are given; a job
    that finishes drops the error of an earlier attempt (kept in its history) unless
    ``error_class`` / ``error_message`` are given; ``status`` and ``updated_at`` are set. ``backend_job_id`` is the row's ``id`` before the change (a
    new ``id`` wins).

    Raises:
        InvalidTransition: the status is not ``change.expect`` (another manager moved the
            job), or the status model forbids the change.
    """
    new = change.new
    if change.expect is not None and old is not change.expect:
        raise InvalidTransition(f"job {change.job_key!r} is {old.value!r}, expected "
                                f"{change.expect.value!r} (changed elsewhere)", job_key=change.job_key)
    check_transition(old, new, user_retry=user_retry, job_key=change.job_key)
    values = dict(change.fields)
    if new is JobStatus.NOT_STARTED or new in TERMINAL:
        for name in RELEASED:
            values.setdefault(name, None)
    if new is JobStatus.FINISHED:  # earlier attempts' errors stay in the history only
        values.setdefault("error_class", None)
        values.setdefault("error_message", None)
    values["status"] = new.value
    values["updated_at"] = now
    return values, StatusChange(job_key=change.job_key, old=old, new=new, at=now,
                                manager_id=manager_id, message=change.message,
                                backend_job_id=values.get("id", backend_job_id))


# -- claims -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """A claim as :meth:`~eoextract.jobs.db.JobDatabase.claim` asks a database to carry it out.

    Attributes:
        limit: at most this many jobs (before the slot cap).
        manager_id: the claiming manager.
        now: the time of the claim (aware UTC).
        backend_name: the backend claiming; jobs pinned elsewhere are skipped.
        max_active: the cap on the backend's slots (only with ``backend_name``).
        values: what each claimed row receives (:func:`lease_values`).
    """

    limit: int
    manager_id: str
    now: datetime
    backend_name: str | None
    max_active: int | None
    values: Mapping[str, Any]

    @classmethod
    def of(cls, limit: int, manager_id: str, now: datetime, lease_seconds: float,
           backend_name: str | None, max_active: int | None) -> Claim:
        """The claim of :meth:`~eoextract.jobs.db.JobDatabase.claim`'s arguments."""
        capped = max_active is not None and backend_name is not None
        return cls(limit, manager_id, now, backend_name, max_active if capped else None,
                   lease_values(manager_id, now, lease_seconds, backend_name if capped else None))

    def capped_limit(self, slots_used: int) -> int:
        """How many jobs the claim may take with ``slots_used`` of the backend's slots taken."""
        return self.limit if self.max_active is None else min(self.limit, self.max_active - slots_used)


def claimable(t: Columns, manager_id: Any, now: Any) -> Any:
    """``not_started`` jobs whose lease is free: none, expired, or ``manager_id``'s own."""
    owner, lease = t["claimed_by"], t["lease_until"]
    free = t.is_null(owner) | (owner == manager_id) | t.is_null(lease) | (lease <= now)
    return (t["status"] == _NOT_STARTED) & free


def never_due(t: Columns) -> Any:
    """Jobs never given a ``next_attempt_at``: claimed first, in table order."""
    return t.is_null(t["next_attempt_at"])


def due(t: Columns, now: Any) -> Any:
    """Jobs whose ``next_attempt_at`` has come: claimed after the never-due ones, by
    ``next_attempt_at`` and then in table order."""
    return t["next_attempt_at"] <= now


def pinned_elsewhere(t: Columns, backend_name: Any, registered: Any, none_other: Any) -> Any:
    """Jobs pinned to a backend other than ``backend_name``, which a claim for it skips.

    A job is pinned by a ``backend_name`` that names another registered backend or, while
    no other backend is registered, by any other name.

    Args:
        t: the jobs table.
        backend_name: the backend claiming.
        registered: the names of the registered backends.
        none_other: whether no backend but ``backend_name`` is registered.
    """
    name = t["backend_name"]
    return ~t.is_null(name) & (name != backend_name) & (t.is_in(name, registered) | none_other)


def active_on(t: Columns, backend_name: Any) -> Any:
    """Jobs holding a slot of ``backend_name`` by their status."""
    return t.is_in(t["status"], _ACTIVE) & (t["backend_name"] == backend_name)


def claimed_for(t: Columns, backend_name: Any, now: Any) -> Any:
    """``not_started`` jobs claimed for ``backend_name`` under a valid lease: they hold one
    of its slots too (:meth:`~eoextract.jobs.db.JobDatabase.claim` with ``max_active``)."""
    return ((t["status"] == _NOT_STARTED) & (t["backend_name"] == backend_name)
            & (t["lease_until"] > now))


def lease_values(manager_id: str, now: datetime, lease_seconds: float,
                 backend_name: str | None = None) -> dict[str, Any]:
    """What a claim or an adoption writes: the new lease (and, for a claim capped per
    backend, the backend the job is claimed for)."""
    values: dict[str, Any] = {"claimed_by": manager_id,
                              "lease_until": now + timedelta(seconds=lease_seconds),
                              "updated_at": now}
    if backend_name is not None:
        values["backend_name"] = backend_name
    return values


# -- leases ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Adoption:
    """An adoption as :meth:`~eoextract.jobs.db.JobDatabase.adopt_expired` asks a database
    to carry it out.

    Attributes:
        manager_id: the adopting manager.
        now: the time of the adoption (aware UTC).
        limit: at most this many jobs (``None``: no limit).
        backend_names: only jobs on these backends (``None``: any).
        values: what each adopted row receives (:func:`lease_values`).
    """

    manager_id: str
    now: datetime
    limit: int | None
    backend_names: tuple[str, ...] | None
    values: Mapping[str, Any]

    @classmethod
    def of(cls, manager_id: str, now: datetime, lease_seconds: float, limit: int | None,
           backend_names: Iterable[str] | None) -> Adoption:
        """The adoption of :meth:`~eoextract.jobs.db.JobDatabase.adopt_expired`'s arguments."""
        return cls(manager_id, now, limit, None if backend_names is None else tuple(backend_names),
                   lease_values(manager_id, now, lease_seconds))


def adoptable(t: Columns, manager_id: Any, now: Any,
              backend_names: Iterable[str] | None = None) -> Any:
    """Jobs another manager may take over: in an :data:`~eoextract.jobs.db.ADOPTABLE`
    status, with an expired lease or none, not already ``manager_id``'s (and on one of
    ``backend_names`` when given)."""
    owner, lease = t["claimed_by"], t["lease_until"]
    found = (t.is_in(t["status"], _ADOPTABLE) & (t.is_null(lease) | (lease <= now))
             & (t.is_null(owner) | (owner != manager_id)))
    if backend_names is not None:
        found = found & t.is_in(t["backend_name"], list(backend_names))
    return found


def renewable(t: Columns, manager_id: Any) -> Any:
    """Jobs whose lease ``manager_id`` renews: its own, not in a final status."""
    return (t["claimed_by"] == manager_id) & ~t.is_in(t["status"], _TERMINAL)


def renewed_lease(now: datetime, lease_seconds: float) -> dict[str, Any]:
    """What a lease renewal writes."""
    return {"lease_until": now + timedelta(seconds=lease_seconds)}


def held_by(t: Columns, manager_id: Any) -> Any:
    """Jobs whose lease ``manager_id`` holds (what a release drops)."""
    return t["claimed_by"] == manager_id
