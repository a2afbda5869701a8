"""Which jobs run when: claims per backend and free slot, retries after failures, backends
paused after repeated failures, finished jobs whose results are due for (re)processing."""

from __future__ import annotations

import collections
import functools
import logging
import math
import statistics
import time
import uuid
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from eoextract._util.retry import RetryPolicy
from eoextract._util.utc import utc_now
from eoextract.errors import InvalidTransition, RetryableBackendError
from eoextract.jobs._backends import BackendSpec, make_tag
from eoextract.jobs._classify import ErrorInfo
from eoextract.jobs.db import JobDatabase, JobRecord
from eoextract.jobs.db import StatusChange, Transition
from eoextract.jobs.status import JobStatus

_log = logging.getLogger("eoextract.jobs.manager")
S = JobStatus

#: Jobs that wait on (or for) their backend: what ``queueing_limit`` bounds.
_WAITING = (S.CREATING, S.CREATED, S.QUEUED)
#: A backend is paused after this many retryable failures in a row.
PAUSE_AFTER_FAILURES = 3
#: Seconds after a backend refused a start for its job limit before one more running job is
#: tried (additive increase; a refusal sets the limit to the jobs it runs).
CAPACITY_PROBE_S = 600.0
#: Created jobs kept ready to start on a backend at its learned limit, per running place
#: (at least one): when a place frees, the start is a single request, not a creation first.
READY_PER_PLACE = 0.25
#: Run times of the last ended jobs kept for the typical run time (which sets the polls).
RUN_TIMES_KEPT = 25


class RunClock:
    """The run's clock: seconds that advance with real time and with the run's own sleeps.

    The loop waits through :meth:`sleep` (``time.sleep``, counting what it asked for) or,
    while tasks are in flight, on their results; :meth:`now` is the larger of the real
    time elapsed and the sleeping done. So pauses, retries and polls come due after the
    waits they need whether time really passes or ``time.sleep`` is patched (as openeo's
    tests do): no decision waits on the wall clock alone.
    """

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._slept = 0.0

    def now(self) -> float:
        """Seconds since the clock was made."""
        return max(time.monotonic() - self._t0, self._slept)

    def utc(self) -> datetime:
        """The UTC time, ahead of the wall clock by the sleeping that did not really pass
        (so a retry's ``next_attempt_at`` comes due after the run slept that long)."""
        ahead = max(0.0, self._slept - (time.monotonic() - self._t0))
        return utc_now() + timedelta(seconds=ahead)

    def sleep(self, seconds: float, *, slice_s: float | None = None,
              stop: Callable[[], bool] = lambda: False) -> None:
        """Sleep ``seconds`` with ``time.sleep``: in one call, or in slices of ``slice_s``
        seconds, returning early once ``stop()`` is true."""
        start = self.now()
        slept = 0.0
        while slept < seconds and not stop():
            step = seconds - slept if slice_s is None else min(slice_s, seconds - slept)
            time.sleep(step)
            slept += step
        self._slept = max(self._slept, start + slept)


class BackendHealth:
    """Consecutive retryable failures per backend, and the pauses they cause, so that a
    failing backend is not hammered.

    Args:
        backoff: The pause after the n-th failure beyond :data:`PAUSE_AFTER_FAILURES` - 1
            is ``backoff.delay(n)`` (a server's ``Retry-After`` honoured).
    """

    def __init__(self, backoff: RetryPolicy, clock: RunClock | None = None) -> None:
        self.backoff = backoff
        self.clock = clock or RunClock()
        self.failures: collections.Counter[str] = collections.Counter()
        self.paused_until: dict[str, float] = {}
        self.down_since: dict[str, float] = {}
        self.last_failure: dict[str, ErrorInfo] = {}
        self.finished: collections.Counter[str] = collections.Counter()
        self.run_times: collections.deque[float] = collections.deque(maxlen=RUN_TIMES_KEPT)
        self.failed_jobs: collections.Counter[str] = collections.Counter()
        self.capacity: dict[str, int] = {}
        self.probe_at: dict[str, float] = {}
        self.racing: dict[str, set[str]] = {}
        self._kept: dict[str, int] = {}

    def failed(self, name: str, info: ErrorInfo) -> bool:
        """Count a failure of backend ``name``; True when it pauses the backend."""
        if not info.retryable or info.lost:
            return False
        self.down_since.setdefault(name, self.clock.now())
        self.last_failure[name] = info
        self.failures[name] += 1
        n = self.failures[name]
        if n >= PAUSE_AFTER_FAILURES:
            delay = self.backoff.delay(n - PAUSE_AFTER_FAILURES + 1, info.retry_after)
            self.paused_until[name] = self.clock.now() + delay
            _log.warning("backend %r failed %d times in a row; pausing it for %.0f s", name, n, delay)
            return True
        if info.retry_after:
            self.paused_until[name] = self.clock.now() + info.retry_after
        return False

    def ok(self, name: str) -> None:
        """Backend ``name`` answered: its failures start over."""
        self.failures.pop(name, None)
        self.down_since.pop(name, None)
        self.last_failure.pop(name, None)

    def job_ended(self, name: str, ok: bool, running_since: datetime | None = None) -> None:
        """A job of backend ``name`` finished (``ok``) or failed there, running since
        ``running_since`` (when known: the mean run time sets the polls while jobs wait)."""
        (self.finished if ok else self.failed_jobs)[name] += 1
        if running_since is not None:
            self.run_times.append(max(0.0, (utc_now() - running_since).total_seconds()))

    @property
    def typical_run_s(self) -> float | None:
        """The median run time of the jobs that ended last (None before any did): a few
        jobs slowed by a backend's warm-up or an odd input do not move it."""
        return statistics.median(self.run_times) if self.run_times else None

    def poll_interval(self, poll_sleep: float, jobs_wait: bool) -> float:
        """Seconds to the next poll: ``poll_sleep``; while created jobs wait for a place on a
        backend at its limit, down to 3 % of the jobs' typical run time (at least a quarter
        of ``poll_sleep``), so a place is taken soon after it frees."""
        typical = self.typical_run_s
        if not jobs_wait or typical is None:
            return poll_sleep
        return max(poll_sleep / 4, min(poll_sleep, 0.03 * typical))

    def full(self, name: str, started: int, racing: Iterable[str] = ()) -> None:
        """Backend ``name`` refused a start while running ``started`` of our jobs: that is
        its limit for now (one more is tried after :data:`CAPACITY_PROBE_S`). ``racing``:
        the jobs whose starts there were in flight, which may have run before the refusal."""
        capacity = max(1, started)
        if self.capacity.get(name) != capacity:
            _log.info("backend %r refused a job start at %d running job(s): running at most %d "
                      "until it allows more", name, started, capacity)
        self.capacity[name] = capacity
        self.probe_at[name] = self.clock.now() + CAPACITY_PROBE_S
        self.racing[name] = set(racing)

    def started(self, name: str, started: int, job_key: str) -> None:
        """A start of job ``job_key`` on backend ``name`` succeeded with ``started`` of our
        jobs running. Only a start that raced the last refusal raises the learned limit: any
        later count may still hold jobs that ended on the backend since the last poll."""
        racing = self.racing.get(name)
        if racing is None or job_key not in racing:
            return
        racing.discard(job_key)
        if name in self.capacity and started > self.capacity[name]:
            self.capacity[name] = started

    def slots(self, name: str, parallel_jobs: int) -> int:
        """Jobs backend ``name`` may hold now: ``parallel_jobs``, or the limit learned from
        its refusals (raised by one after each quiet :data:`CAPACITY_PROBE_S`)."""
        capacity = self.capacity.get(name)
        if capacity is None:
            return parallel_jobs
        if self.clock.now() >= self.probe_at[name]:
            capacity += 1
            self.probe_at[name] = self.clock.now() + CAPACITY_PROBE_S
            if capacity >= parallel_jobs:
                del self.capacity[name], self.probe_at[name]
                return parallel_jobs
            self.capacity[name] = capacity
        return min(parallel_jobs, capacity)

    def held(self, name: str, parallel_jobs: int) -> int:
        """Jobs backend ``name`` may hold, started or created: :meth:`slots`, plus, at a
        learned limit, created jobs kept ready to start (:data:`READY_PER_PLACE`), all
        within ``parallel_jobs``."""
        slots = self.slots(name, parallel_jobs)
        if name not in self.capacity:
            return slots
        return min(parallel_jobs, slots + max(1, math.ceil(READY_PER_PLACE * slots)))

    def restore(self, db: JobDatabase, names: Iterable[str]) -> None:
        """Start from the limits an earlier run learned (kept in the job database)."""
        kept = db.backend_state().get("capacity") or {}
        for name in names:
            if isinstance(kept.get(name), int) and kept[name] >= 1:
                self.capacity[name] = kept[name]
                self.probe_at[name] = self.clock.now() + CAPACITY_PROBE_S
        self._kept = dict(self.capacity)

    def keep(self, db: JobDatabase) -> None:
        """Save the learned limits in the job database when they changed."""
        if self.capacity != self._kept:
            db.save_backend_state({**db.backend_state(), "capacity": dict(self.capacity)})
            self._kept = dict(self.capacity)

    def down_for(self, name: str) -> float:
        """Seconds since backend ``name`` last answered, when it fails since (else 0)."""
        since = self.down_since.get(name)
        return 0.0 if since is None else self.clock.now() - since

    def paused(self, name: str) -> bool:
        """Whether backend ``name`` is to be left alone for now."""
        return self.paused_until.get(name, 0.0) > self.clock.now()


def started_counts(db: JobDatabase) -> collections.Counter[str]:
    """Jobs of the database started and not ended yet (``queued``/``running``) per backend:
    what a backend's job limit counts (one cheap query for every backend)."""
    started = db.get_by_status([S.QUEUED.value, S.RUNNING.value])
    if started.empty or "backend_name" not in started:
        return collections.Counter()
    return collections.Counter({str(k): int(v) for k, v in started["backend_name"].value_counts().items()})


def started_on(db: JobDatabase, backend: str) -> int:
    """Jobs of the database started on ``backend`` and not ended yet (see :func:`started_counts`)."""
    return started_counts(db)[backend]


def outage_ending_run(db: JobDatabase, backends: Mapping[str, BackendSpec], health: BackendHealth,
                      limit_s: float | None) -> tuple[str, ErrorInfo] | None:
    """The backend whose outage ends the run, with its last failure, or None.

    The run gives up once backends have failed without a single success for longer than
    ``limit_s`` and no backend that still answers has work to do: jobs of its own, or
    ``not_started`` jobs it could take.
    """
    if limit_s is None:
        return None
    down = [n for n in backends if health.down_for(n) > limit_s]
    if not down:
        return None
    up = [n for n in backends if n not in down]
    active = db.active_counts()
    if any(active.get(n, 0) for n in up) or (up and db.any_with_status((S.NOT_STARTED,))):
        return None
    name = max(down, key=health.down_for)
    return name, health.last_failure[name]


def start_room(started: Mapping[str, int], spec: BackendSpec, health: BackendHealth,
               starting: Mapping[str, str]) -> int:
    """Free running places of a backend at its learned limit: its slots less the jobs
    started there (``started``: :func:`started_counts`) and the starts in flight
    (``starting``: key → backend)."""
    busy = started.get(spec.name, 0) + sum(b == spec.name for b in starting.values())
    return health.slots(spec.name, spec.parallel_jobs) - busy


def starts_with_room(db: JobDatabase, backends: Mapping[str, BackendSpec], health: BackendHealth,
                     waiting: dict[str, JobRecord], starting: dict[str, str]) -> list[tuple[JobRecord, BackendSpec]]:
    """The created jobs of ``waiting`` to start now (taken out of it): all of them on backends
    with no learned limit, elsewhere as many as the backend has free places (``starting``:
    starts in flight there, key → backend, updated)."""
    room: dict[str, int] = {}
    started: Mapping[str, int] | None = None
    due = []
    for key, rec in list(waiting.items()):
        spec = backends.get(rec.backend_name or "")
        if spec is None:
            del waiting[key]
            continue
        if spec.name in health.capacity:  # at its limit: start only into a free place
            if spec.name not in room:
                started = started_counts(db) if started is None else started
                room[spec.name] = start_room(started, spec, health, starting)
            if room[spec.name] <= 0:
                continue
            room[spec.name] -= 1
        starting[key] = spec.name
        del waiting[key]
        due.append((rec, spec))
    return due


def stop_on_outage(db: JobDatabase, backends: Mapping[str, BackendSpec], health: BackendHealth,
                   limit_s: float | None) -> None:
    """Raise the last error of a backend whose outage ends the run (see
    :func:`outage_ending_run`); the jobs stay as they are, for the next run."""
    if (outage := outage_ending_run(db, backends, health, limit_s)) is None:
        return
    name, info = outage
    note = (f"backend {name!r} failed every request for {health.down_for(name):.0f} s and no "
            "other backend has work: the run stops; run it again to go on")
    _log.error("%s (last error: %s)", note, info.message)
    exc = info.exception or RetryableBackendError(info.message, backend_name=name)
    exc.add_note(note)
    raise exc


@dataclass(frozen=True)
class BackendLoad:
    """What the run saw of one backend, for choosing which backend takes unpinned jobs first.

    Attributes:
        name: The backend.
        free_slots: Jobs it may take now.
        finished: Its jobs that finished in this run.
        failed: Its jobs that failed there in this run.
        hours: How long the run has gone on.
    """

    name: str
    free_slots: int
    finished: int
    failed: int
    hours: float

    @property
    def success_rate(self) -> float:
        """Finished among ended jobs (smoothed: 0.5 before any ended)."""
        return (self.finished + 1) / (self.finished + self.failed + 2)

    @property
    def throughput_per_hour(self) -> float:
        """Jobs finished per hour of the run."""
        return self.finished / max(self.hours, 1 / 60)


def default_backend_order(loads: Sequence[BackendLoad]) -> list[str]:
    """Backends by good jobs per hour (throughput × success rate), best first; backends not
    yet seen finishing rank by success rate; registration order breaks ties."""
    ranked = sorted(enumerate(loads), key=lambda p: (-(p[1].throughput_per_hour + 1) * p[1].success_rate, p[0]))
    return [load.name for _, load in ranked]


@dataclass(frozen=True)
class Launch:
    """A claimed job to create on a backend: its record as claimed, its ``creating`` change
    and what applying it gave, and whether to start it once created (else it is kept ready
    until a place frees)."""

    record: JobRecord
    backend: BackendSpec
    change: Transition
    outcome: StatusChange | InvalidTransition
    start: bool = True

    @property
    def tag(self) -> str:
        """The creation tag carried in the backend job's description."""
        return self.change.fields["create_tag"]


def creating(rec: JobRecord, backend_name: str) -> Transition:
    """The change that marks a claimed job ``creating`` on ``backend_name``: its next
    attempt, with a new creation tag."""
    attempt = rec.attempt + 1
    tag = make_tag(rec.job_key, attempt, uuid.uuid4().hex[:10])
    return Transition(rec.job_key, S.CREATING, expect=S.NOT_STARTED, message=f"attempt {attempt} on {backend_name}",
                      fields=dict(backend_name=backend_name, attempt=attempt, create_tag=tag, id=None,
                                  backend_status=None, next_attempt_at=None, start_time=utc_now()))


def claim_launches(db: JobDatabase, backends: Mapping[str, BackendSpec], health: BackendHealth, *,
                   manager_id: str, lease_seconds: float, max_new: int | None = None,
                   order: Callable[[list[BackendLoad]], Sequence[str]] | None = None,
                   starting: dict[str, str] | None = None) -> Iterator[list[Launch]]:
    """Claim due jobs for every backend that is not paused, up to its free slots (and, when
    given, up to ``max_new`` jobs in all), and mark them ``creating`` there (in the claim's
    transaction: :meth:`~eoextract.jobs.db.JobDatabase.claim_and_transition`).

    On a backend at its learned limit, jobs are also claimed to be kept ready (created, not
    started: :meth:`BackendHealth.held`); only those that fit its free running places are
    started when created, and their starts are counted in ``starting`` (key → backend).

    Yields:
        Per backend with free slots, its launches (a refused change's launch holds the
        :class:`~eoextract.errors.InvalidTransition`); the next backend's jobs are claimed
        once the caller took these.
    """
    active = db.active_counts()
    free_of = {n: health.held(n, s.parallel_jobs) - active.get(n, 0) for n, s in backends.items()}
    starting = {} if starting is None else starting
    names: list[str] = list(backends)
    if order is not None and len(backends) > 1:  # who takes unpinned jobs first
        hours = health.clock.now() / 3600
        chosen = order([BackendLoad(n, max(0, free_of[n]), health.finished[n], health.failed_jobs[n], hours)
                        for n in backends])
        names = [n for n in dict.fromkeys(chosen) if n in backends]
        names += [n for n in backends if n not in names]
    for name in names:
        spec = backends[name]
        if health.paused(name):
            continue
        free = free_of[name]
        if max_new is not None:
            free = min(free, max_new)
        if spec.queueing_limit is not None and free > 0:
            free = min(free, spec.queueing_limit - len(db.jobs(_WAITING, backend_name=name)))
        if free <= 0:
            continue
        # max_active: the slot cap holds atomically across all managers of the database
        claimed = db.claim_and_transition(free, functools.partial(creating, backend_name=name),
                                          manager_id=manager_id, now=health.clock.utc(),
                                          lease_seconds=lease_seconds, backend_name=name,
                                          max_active=spec.parallel_jobs)
        room = start_room(started_counts(db), spec, health, starting) if name in health.capacity else None
        batch = []
        for rec, change, outcome in claimed:
            start = room is None or room > 0
            if isinstance(outcome, StatusChange) and start:
                if room is not None:
                    room -= 1
                starting[rec.job_key] = name
            batch.append(Launch(rec, spec, change, outcome, start))
        if max_new is not None:
            max_new -= len(batch)
        yield batch


def after_failure(current: JobRecord, info: ErrorInfo, *, stage: str, backend_job_id: str | None,
                  max_attempts: int, backoff: RetryPolicy) -> tuple[Transition, str]:
    """The change a failure leads to: back to ``not_started`` after a backoff (retryable,
    attempts left) or the final status; and the run statistic it counts.

    Args:
        current: The job as it is now (its attempt number).
        info: The failure.
        stage: ``"start"`` (a final failure is ``start_failed``), ``"run"`` or ``"results"``.
        backend_job_id: The backend job that failed, kept in the history message.
        max_attempts: Attempts per job.
        backoff: Delay before the next attempt.
    """
    where = f" (backend job {backend_job_id})" if backend_job_id else ""
    attempt = current.attempt
    if info.retryable and attempt < max_attempts:
        delay = backoff.delay(max(1, attempt), info.retry_after)
        return Transition(current.job_key, S.NOT_STARTED, message=info.history_message(
            stage, f"{where}; retry in {delay:.0f} s"), fields=dict(
            error_class=info.error_class, error_message=info.message, id=None,
            next_attempt_at=utc_now() + timedelta(seconds=delay), claimed_by=None, lease_until=None,
        )), f"{stage} retry"
    final = S.START_FAILED if stage == "start" else S.ERROR
    return Transition(current.job_key, final, message=info.history_message(stage, where), fields=dict(
        error_class=info.error_class, error_message=info.message, end_time=utc_now(),
        claimed_by=None, lease_until=None,
    )), f"{stage} error"


def due_for_results(finish_due: dict[str, float], inflight: Container[str], now: float) -> list[str]:
    """Jobs whose results are due for (re)processing at ``now`` (:meth:`RunClock.now`);
    they are taken off ``finish_due``."""
    if not finish_due:
        return []
    due = [key for key, when in finish_due.items() if key not in inflight and when <= now]
    for key in due:
        del finish_due[key]
    return due
