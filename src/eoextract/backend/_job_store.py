"""Batch job records and their store: in memory, mirrored to JSON files so they survive restarts.

Layout under the store's root::

    jobs/<job id>/job.json      the job record (rewritten atomically on every change)
    jobs/<job id>/logs.jsonl    the job's log entries, appended
    jobs/<job id>/results/      result files

The lifecycle (start, cancel, workers, faults) lives in :mod:`eoextract.backend._job_lifecycle`.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import orjson

from eoextract._util.files import atomic_write
from eoextract._util.utc import format_utc, parse_utc, utc_now
from eoextract.backend._api_errors import (
    BadRequest,
    JobNotFound,
    ProcessGraphInvalid,
    ProcessGraphMissing,
)


logger = logging.getLogger(__name__)

CREATED, QUEUED, RUNNING, FINISHED, ERROR, CANCELED = (
    "created",
    "queued",
    "running",
    "finished",
    "error",
    "canceled",
)
ACTIVE = frozenset({QUEUED, RUNNING})
"""Statuses of jobs that are waiting for or using a worker."""

LOG_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
"""openEO log levels and their order."""

_EDITABLE = ("title", "description", "process", "plan", "budget", "log_level", "job_options")


def timestamp() -> str:
    """Now, as job records write it: RFC 3339 UTC to the second (``2024-05-01T12:00:00Z``)."""
    return format_utc(utc_now(), timespec="seconds")


def format_utc_seconds(epoch_s: float) -> str:
    """A POSIX time as job records write it (``2024-05-01T12:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def check_process(process: Any) -> dict[str, Any]:
    """Check the shape of a ``process`` object (nodes, ids, exactly one result node).

    Raises:
        ProcessGraphMissing, ProcessGraphInvalid: When it is missing or malformed.
    """
    if process is None:
        raise ProcessGraphMissing("The request has no 'process' with a 'process_graph'.")
    if not isinstance(process, dict) or "process_graph" not in process:
        raise ProcessGraphMissing("'process' must be an object with a 'process_graph'.")
    graph = process["process_graph"]
    if not isinstance(graph, dict) or not graph:
        raise ProcessGraphInvalid("'process_graph' must be a non-empty object of nodes.")
    results = 0
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("process_id"), str):
            raise ProcessGraphInvalid(f"Node {node_id!r} has no 'process_id'.")
        if not isinstance(node.get("arguments", {}), dict):
            raise ProcessGraphInvalid(f"Node {node_id!r}: 'arguments' must be an object.")
        results += bool(node.get("result"))
    if results != 1:
        raise ProcessGraphInvalid(
            f"A process graph needs exactly one result node, this one has {results}."
        )
    return process


def encode_record(record: JobRecord) -> bytes:
    """A job record as stored JSON.

    Raises:
        BadRequest: When the record cannot be stored as JSON (e.g. nested too deeply).
    """
    try:
        return orjson.dumps(record.to_dict())
    except (orjson.JSONEncodeError, RecursionError) as exc:
        raise BadRequest(f"The job cannot be stored: {exc}.") from None


def parse_job_body(body: Any, *, partial: bool = False) -> dict[str, Any]:
    """Check a ``POST /jobs`` (or ``PATCH``, with ``partial``) body and keep the known fields.

    Raises:
        BadRequest: When the body is not an object or a field has the wrong type.
        ProcessGraphMissing, ProcessGraphInvalid: On a missing or malformed process graph.
    """
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    out: dict[str, Any] = {}
    for key in ("title", "description", "plan", "log_level"):
        if key in body:
            if body[key] is not None and not isinstance(body[key], str):
                raise BadRequest(f"'{key}' must be a string.")
            out[key] = body[key]
    if "budget" in body:
        if body["budget"] is not None and not isinstance(body["budget"], int | float):
            raise BadRequest("'budget' must be a number.")
        out["budget"] = body["budget"]
    if "job_options" in body:
        if body["job_options"] is not None and not isinstance(body["job_options"], dict):
            raise BadRequest("'job_options' must be an object.")
        out["job_options"] = body["job_options"] or {}
    if "process" in body or not partial:
        out["process"] = check_process(body.get("process"))
    return out


@dataclass
class JobRecord:
    """One batch job.

    Attributes:
        id: Job id (``j-`` + hex).
        seq: Creation order, used for stable pagination.
        user: Owner.
        process: The process (``{"process_graph": ...}`` plus metadata) to run.
        title: User title.
        description: User description.
        plan: Billing plan (stored, unused).
        budget: Budget (stored, unused).
        log_level: Minimum level the user wants logged.
        job_options: Free-form options (``eoextract_mode``, ``eoextract_fault``, ...).
        status: openEO status: created, queued, running, finished, error, canceled.
        progress: Percent done (0–100).
        created: Creation time (RFC 3339).
        updated: Last change.
        started: When the current run started running.
        finished: When the current run ended.
        run: How many times the job was started.
        error: ``{"code", "message"}`` of the last failure.
        assets: Result assets of the last successful run (see
            :mod:`eoextract.backend._result_documents`).
        fault: Job fault applied to the current run, if any.
        progress_reported: Whether ``progress`` comes from the worker (else it is estimated).
        usage: ``usage`` of the last ended run (production profile), else None.
        costs: Credits of the last ended run (production profile), else None.
    """

    id: str
    seq: int
    user: str
    process: dict[str, Any]
    title: str | None = None
    description: str | None = None
    plan: str | None = None
    budget: float | None = None
    log_level: str | None = None
    job_options: dict[str, Any] = field(default_factory=dict)
    status: str = CREATED
    progress: float = 0.0
    created: str = field(default_factory=timestamp)
    updated: str = field(default_factory=timestamp)
    started: str | None = None
    finished: str | None = None
    run: int = 0
    error: dict[str, Any] | None = None
    assets: list[dict[str, Any]] = field(default_factory=list)
    fault: str | None = None
    progress_reported: bool = False
    usage: dict[str, Any] | None = None
    costs: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def current_progress(self) -> float:
        """Progress to report: exact when known, otherwise estimated from the elapsed time."""
        if self.status == FINISHED:
            return 100.0
        if self.status != RUNNING or self.progress_reported or not self.started:
            return round(self.progress, 1)
        elapsed = (utc_now() - parse_utc(self.started)).total_seconds()
        return round(min(95.0, 95.0 * elapsed / (elapsed + 10.0)), 1)

    def summary(self) -> dict[str, Any]:
        """The job as listed by ``GET /jobs``."""
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "status": self.status,
            "progress": self.current_progress(),
            "created": self.created,
            "updated": self.updated,
        }
        if self.plan is not None:
            out["plan"] = self.plan
        if self.budget is not None:
            out["budget"] = self.budget
        # ended jobs: usage and costs in listings too (as the openEO API allows), so a
        # client following many jobs needs no request per job
        if self.usage is not None and self.status in (FINISHED, ERROR, CANCELED):
            out["usage"] = self.usage
            if self.costs is not None:
                out["costs"] = self.costs
        elif self.started and self.finished and self.status in (FINISHED, ERROR, CANCELED):
            t0, t1 = parse_utc(self.started), parse_utc(self.finished)
            out["usage"] = {"duration": {"value": (t1 - t0).total_seconds(), "unit": "seconds"}}
        return out

    def describe(self) -> dict[str, Any]:
        """The job as described by ``GET /jobs/{id}``."""
        out = self.summary()
        out["process"] = self.process
        out["job_options"] = self.job_options
        if self.log_level is not None:
            out["log_level"] = self.log_level
        return out


class JobStore:
    """Thread-safe store of :class:`JobRecord` objects and their logs.

    Args:
        root: Directory holding ``jobs/``; created when missing.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self._jobs: dict[str, JobRecord] = {}
        self._by_user: dict[str, list[JobRecord]] = {}  # in creation (seq) order
        self._logs: dict[str, list[dict[str, Any]]] = {}
        self._log_seq = itertools.count(1)
        self._seq = itertools.count(1)
        self._load()

    # -- persistence -------------------------------------------------------------------
    def _load(self) -> None:
        top = 0
        for path in self.jobs_dir.glob("*/job.json"):
            try:
                record = JobRecord.from_dict(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError, TypeError) as exc:
                logger.warning("skipping unreadable job file %s: %s", path, exc)
                continue
            self._jobs[record.id] = record
            top = max(top, record.seq)
        for record in sorted(self._jobs.values(), key=lambda r: r.seq):
            self._by_user.setdefault(record.user, []).append(record)
        self._seq = itertools.count(top + 1)
        if self._jobs:
            logger.info("loaded %d jobs from %s", len(self._jobs), self.jobs_dir)

    def job_dir(self, job_id: str) -> Path:
        """Folder of a job."""
        return self.jobs_dir / job_id

    def results_dir(self, job_id: str) -> Path:
        """Folder of a job's result files."""
        return self.jobs_dir / job_id / "results"

    def save(self, record: JobRecord, data: bytes | None = None) -> None:
        """Write a record (or its :func:`encode_record` bytes) to disk atomically.

        Not fsynced: the store serves tests and trials.
        """
        path = self.job_dir(record.id) / "job.json"
        atomic_write(path, encode_record(record) if data is None else data, fsync=False)

    # -- records -----------------------------------------------------------------------
    def create(self, user: str, fields_: dict[str, Any]) -> JobRecord:
        """Create and persist a job from checked request fields (see :func:`parse_job_body`)."""
        with self.lock:
            record = JobRecord(
                id=f"j-{uuid.uuid4().hex[:20]}",
                seq=next(self._seq),
                user=user,
                **{k: v for k, v in fields_.items() if k in _EDITABLE},
            )
            data = encode_record(record)  # fails before anything is stored
            self.save(record, data)
            self._jobs[record.id] = record
            self._by_user.setdefault(user, []).append(record)
            self._logs[record.id] = []
        return record

    def seed_historical(self, user: str, count: int, process: dict[str, Any], *, recent: bool = False,
                        **fields_: Any) -> int:
        """Add ``count`` finished jobs of ``user`` (in memory only).

        By default they ended long ago (created a minute apart from 2024-01-01, ids
        ``j-hist-<n>``, so seeding again after a restart adds nothing twice) and stand for a
        production account's history: listed after every other job, described by
        ``GET /jobs/{id}``, without files. With ``recent`` they are created now (ids
        ``j-seed-<nonce>-<n>``) and listed before every job created so far, as if another
        client had just made them. About 20,000 jobs per 0.1 s.

        Args:
            user: Owner.
            count: Number of jobs.
            process: The process every one of them shares.
            recent: Created now rather than long ago.
            **fields_: Other :class:`JobRecord` fields they share (e.g. ``usage``, ``costs``).

        Returns:
            The number of jobs added.
        """
        base = 1_704_067_200  # 2024-01-01T00:00:00Z
        nonce = uuid.uuid4().hex[:8]
        added = []
        with self.lock:
            # history sorts below every job there is: sequence numbers under the lowest
            low = min((r.seq for r in self._jobs.values()), default=1)
            for i in range(count):
                job_id = f"j-seed-{nonce}-{i:08d}" if recent else f"j-hist-{i:08d}"
                if job_id in self._jobs:
                    continue
                stamp = timestamp() if recent else format_utc_seconds(base + 60 * i)
                added.append(JobRecord(
                    id=job_id, seq=next(self._seq) if recent else low - count + i, user=user,
                    process=process, title=f"{'seeded' if recent else 'historical'} job {i}",
                    status=FINISHED, progress=100.0, created=stamp, updated=stamp, started=stamp,
                    finished=stamp, run=1, **fields_,
                ))
            for record in added:
                self._jobs[record.id] = record
            mine = self._by_user.setdefault(user, [])
            mine.extend(added)
            mine.sort(key=lambda r: r.seq)
        return len(added)

    def get(self, job_id: str, user: str | None = None) -> JobRecord:
        """A job by id (of ``user``, when given).

        Raises:
            JobNotFound: When there is no such job for this user.
        """
        record = self._jobs.get(job_id)
        if record is None or (user is not None and record.user != user):
            raise JobNotFound(f"Batch job {job_id!r} does not exist.")
        return record

    def all(self) -> list[JobRecord]:
        """All jobs, in creation order."""
        with self.lock:
            return sorted(self._jobs.values(), key=lambda r: r.seq)

    def update(self, record: JobRecord, **changes: Any) -> JobRecord:
        """Change fields of a job, stamp ``updated`` and persist it."""
        with self.lock:
            changed = replace(record, **{**changes, "updated": timestamp()})
            data = encode_record(changed)  # fails before the record is touched
            for key in {*changes, "updated"}:
                setattr(record, key, getattr(changed, key))
            if record.id in self._jobs:
                self.save(record, data)
        return record

    def remove(self, job_id: str) -> None:
        """Forget a job and delete its files (no error when already gone)."""
        with self.lock:
            record = self._jobs.pop(job_id, None)
            if record is not None:
                mine = self._by_user.get(record.user, [])
                index = bisect.bisect_left(mine, record.seq, key=lambda r: r.seq)
                if index < len(mine) and mine[index] is record:
                    del mine[index]
            self._logs.pop(job_id, None)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def listing(
        self, user: str, limit: int | None = None, cursor: int | None = None, *, oldest_first: bool = False,
    ) -> tuple[list[JobRecord], int | None]:
        """A page of a user's jobs, newest first (creation order with ``oldest_first``).

        Args:
            user: Owner.
            limit: Page size (None: all).
            cursor: The cursor of the previous page: only jobs listed after it.
            oldest_first: List the oldest jobs first.

        Returns:
            The page and the cursor for the next page (None on the last page).
        """
        with self.lock:
            mine = self._by_user.get(user, [])
            if oldest_first:
                start = 0 if cursor is None else bisect.bisect_right(mine, cursor, key=lambda r: r.seq)
                end = len(mine) if limit is None else min(len(mine), start + limit)
                page = mine[start:end]
                return page, (page[-1].seq if end < len(mine) else None)
            end = len(mine) if cursor is None else bisect.bisect_left(mine, cursor, key=lambda r: r.seq)
            start = 0 if limit is None else max(0, end - limit)
            page = mine[start:end][::-1]
        return page, (page[-1].seq if start > 0 else None)

    # -- logs --------------------------------------------------------------------------
    def add_log(self, job_id: str, level: str, message: str, **extra: Any) -> None:
        """Append a log entry to a job (kept in memory and in ``logs.jsonl``).

        Entries below the job's ``log_level`` are dropped.
        """
        level = level if level in LOG_LEVELS else "info"
        entry = {
            # time first: ids keep increasing across restarts, so `offset` stays valid
            "id": f"{time.time_ns():020d}{next(self._log_seq) % 1000:03d}",
            "level": level,
            "message": message,
            "time": format_utc(utc_now(), timespec="milliseconds"),
            **extra,
        }
        with self.lock:
            record = self._jobs.get(job_id)
            if record is None:
                return
            if LOG_LEVELS[level] < LOG_LEVELS.get(record.log_level or "debug", 10):
                return  # below the level the user asked for when creating the job
            logs = self._logs.setdefault(job_id, [])
            logs.append(entry)
            folder = self.job_dir(job_id)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / "logs.jsonl", "ab") as fh:
                fh.write(orjson.dumps(entry) + b"\n")

    def logs(
        self, job_id: str, offset: str | None = None, level: str | None = None
    ) -> list[dict[str, Any]]:
        """Log entries of a job after ``offset`` (an entry id), at ``level`` or above."""
        with self.lock:
            entries = self._logs.get(job_id)
            if entries is None:
                entries = self._read_logs(job_id)
                self._logs[job_id] = entries
            entries = list(entries)
        if offset:
            entries = [e for e in entries if e["id"] > offset]
        if level:
            if level not in LOG_LEVELS:
                raise BadRequest(f"Unknown log level {level!r}; expected one of {list(LOG_LEVELS)}.")
            minimum = LOG_LEVELS[level]
            entries = [e for e in entries if LOG_LEVELS.get(e["level"], 20) >= minimum]
        return entries

    def _read_logs(self, job_id: str) -> list[dict[str, Any]]:
        path = self.job_dir(job_id) / "logs.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:  # pragma: no cover - torn last line
                continue
        return out
