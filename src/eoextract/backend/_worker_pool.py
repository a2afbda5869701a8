"""A bounded pool of worker processes that execute process graphs.

Each pool slot is a thread of the API process that owns at most one worker *process*
(``python -m eoextract.backend._worker_main``) holding one execution engine. The slot
takes the next task from a priority queue (synchronous requests first, then batch jobs in
order), sends it to its worker over stdin and reads JSON-line messages (logs, progress,
result) from the worker's stdout. The API event loop never executes anything itself, so it keeps
answering while jobs run; workers also run at a lower CPU priority.

Workers start lazily, on the first task of their slot (building the engine takes a few
seconds). Canceling a running task first asks the engine to stop (``cancel_event``); when
the worker has not stopped after a short grace period it is killed and a fresh one is
started for the next task. A worker that dies fails its task, never the server.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eoextract.backend._api_errors import OpenEOApiError

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 1.0
"""How long a worker may take to honour a cancel request before it is killed."""


class TaskCanceled(Exception):
    """The task was canceled before it finished."""


class TaskFailed(OpenEOApiError):
    """The task failed; ``code``/``status``/``message`` come from the engine's error."""


@dataclass(eq=False)
class Task:
    """One process graph to execute.

    Attributes:
        process_graph: The flat process graph.
        out_dir: Folder for the result files (emptied first).
        resolver: Plain-data :class:`~eoextract.backend._user_processes.UdpResolver` settings.
        job_id: Batch job id, or None for a synchronous request.
        run: Run number of the job (lets late messages of an old run be told apart).
        priority: Lower runs first (0: synchronous requests, 1: batch jobs).
        delay_s: Seconds to wait (holding the slot, as a slow job) before executing.
        fail_message: When set, fail with this message instead of executing.
        on_start: Called when a slot picks the task up.
        on_log: Called with ``(level, message)`` for each log entry.
        on_progress: Called with a percentage.
        future: Resolves to the list of asset dicts, or fails with
            :class:`TaskFailed` / :class:`TaskCanceled`.
    """

    process_graph: dict[str, Any]
    out_dir: Path
    resolver: dict[str, Any]
    job_id: str | None = None
    run: int = 0
    priority: int = 1
    delay_s: float = 0.0
    fail_message: str | None = None
    on_start: Callable[[], None] | None = None
    on_log: Callable[[str, str], None] | None = None
    on_progress: Callable[[float], None] | None = None
    future: Future = field(default_factory=Future)
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def emit_log(self, level: str, message: str) -> None:
        if self.on_log is not None:
            try:
                self.on_log(level, message)
            except Exception:  # pragma: no cover - callbacks must not kill the slot
                logger.exception("log callback failed")


_WAKE: Any = object()
"""Queue marker waking an idle slot (it then starts its worker)."""


class _WorkerProcess:
    """A worker subprocess and a thread reading its messages."""

    def __init__(self, slot: int, log_dir: Path, nice: int, extra_env: dict[str, str] | None = None):
        env = dict(os.environ, **(extra_env or {}))
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        env["EOEXTRACT_WORKER_NICE"] = str(nice)
        log_dir.mkdir(parents=True, exist_ok=True)
        self._stderr = open(log_dir / f"worker-{slot}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eoextract.backend._worker_main"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            close_fds=True,
        )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.ready = False
        self._reader = threading.Thread(
            target=self._read, name=f"eoextract-worker-{slot}-reader", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.messages.put(json.loads(line))
            except ValueError:
                logger.warning("worker %s sent a bad line: %r", self.proc.pid, line[:200])
        self.messages.put(None)  # EOF: the worker ended

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            logger.error("worker %s did not die", self.proc.pid)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:  # pragma: no cover
                pass
        self._stderr.close()


class WorkerPool:
    """Runs :class:`Task` objects on ``size`` worker processes.

    Args:
        size: Number of tasks executed at the same time.
        log_dir: Where worker processes write their stderr (``worker-<n>.log``).
        nice: CPU niceness increment of worker processes (keeps the API responsive).
        env: Extra environment variables of worker processes (e.g. the UDF settings).
        start_timeout_s: How long a worker may take to build its engine.
    """

    def __init__(self, size: int, log_dir: Path, *, nice: int = 5, start_timeout_s: float = 180.0,
                 env: dict[str, str] | None = None):
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self.log_dir = Path(log_dir)
        self.nice = nice
        self.env = dict(env or {})
        self.start_timeout_s = start_timeout_s
        self._queue: queue.PriorityQueue[tuple[int, int, Task | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = threading.Event()
        self._warm = threading.Event()
        self._lock = threading.Lock()
        self._by_job: dict[str, Task] = {}
        self._procs: dict[int, _WorkerProcess] = {}
        self._slots = [
            threading.Thread(target=self._slot_loop, args=(i,), name=f"eoextract-slot-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._slots:
            thread.start()

    # -- public ------------------------------------------------------------------------
    def submit(self, task: Task) -> Future:
        """Queue a task; returns its future."""
        if self._closed.is_set():
            raise RuntimeError("worker pool is closed")
        if task.job_id is not None:
            with self._lock:
                self._by_job[task.job_id] = task
        self._queue.put((task.priority, next(self._order), task))
        return task.future

    def cancel(self, job_id: str) -> bool:
        """Cancel the queued or running task of a job.

        Returns:
            Whether there was such a task.
        """
        with self._lock:
            task = self._by_job.pop(job_id, None)
        if task is None:
            return False
        task.cancel_requested.set()
        return True

    def busy(self) -> int:
        """Number of tasks queued or running for batch jobs."""
        with self._lock:
            return len(self._by_job)

    def close(self) -> None:
        """Stop all slots and kill all worker processes."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            tasks = list(self._by_job.values())
        for task in tasks:
            task.cancel_requested.set()
        for _ in self._slots:
            self._queue.put((-1, next(self._order), None))
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            proc.kill()
        for thread in self._slots:
            thread.join(timeout=5)

    # -- slots -------------------------------------------------------------------------
    def _slot_loop(self, slot: int) -> None:
        while not self._closed.is_set():
            if self._warm.is_set():
                self._start_worker(slot)  # idle slots get their engine ready for the next task
            _, _, task = self._queue.get()
            if task is _WAKE:
                continue
            if task is None or self._closed.is_set():
                break
            if task.cancel_requested.is_set() or task.future.done():
                self._finish(task, error=TaskCanceled())
                continue
            try:
                self._run(slot, task)
            except Exception as exc:  # noqa: BLE001 - a slot must survive anything
                logger.exception("slot %d failed on a task", slot)
                self._finish(task, error=TaskFailed(f"Internal error: {exc}"))
        with self._lock:
            proc = self._procs.pop(slot, None)
        if proc is not None:
            proc.kill()

    def _finish(self, task: Task, result: Any = None, error: BaseException | None = None) -> None:
        if task.job_id is not None:
            with self._lock:
                if self._by_job.get(task.job_id) is task:
                    del self._by_job[task.job_id]
        if task.future.done():
            return
        if error is not None:
            task.future.set_exception(error)
        else:
            task.future.set_result(result)

    def _run(self, slot: int, task: Task) -> None:
        if task.on_start is not None:
            task.on_start()
        if task.delay_s and task.cancel_requested.wait(task.delay_s):
            self._finish(task, error=TaskCanceled())
            return
        if task.fail_message is not None:
            task.emit_log("error", task.fail_message)
            self._finish(task, error=TaskFailed(task.fail_message))
            return
        proc = self._ensure_worker(slot, task)
        if proc is None:
            return
        if not self._warm.is_set():
            # one engine is up: let idle slots start theirs (one at a time would be slower)
            self._warm.set()
            for _ in range(self.size - 1):
                self._queue.put((-2, next(self._order), _WAKE))
        proc.send(
            {
                "type": "run",
                "process_graph": task.process_graph,
                "out_dir": str(task.out_dir),
                "resolver": task.resolver,
            }
        )
        cancel_sent_at: float | None = None
        while True:
            if task.cancel_requested.is_set() and cancel_sent_at is None:
                cancel_sent_at = time.monotonic()
                proc.send({"type": "cancel"})
            if cancel_sent_at is not None and time.monotonic() - cancel_sent_at > CANCEL_GRACE_S:
                logger.info("killing worker %s to cancel %s", proc.proc.pid, task.job_id)
                self._drop_worker(slot)
                self._finish(task, error=TaskCanceled())
                return
            try:
                msg = proc.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if msg is None:
                self._drop_worker(slot)
                if cancel_sent_at is not None:
                    self._finish(task, error=TaskCanceled())
                else:
                    text = f"The worker process ended unexpectedly (exit code {proc.proc.returncode})."
                    task.emit_log("error", text)
                    self._finish(task, error=TaskFailed(text))
                return
            kind = msg.get("type")
            if kind == "log":
                task.emit_log(msg.get("level", "info"), msg.get("message", ""))
            elif kind == "progress" and task.on_progress is not None:
                task.on_progress(float(msg.get("progress", 0.0)))
            elif kind == "done":
                self._finish(task, result=msg["assets"])
                return
            elif kind == "canceled":
                self._finish(task, error=TaskCanceled())
                return
            elif kind == "failed":
                if msg.get("traceback"):
                    task.emit_log("debug", msg["traceback"])
                self._finish(
                    task,
                    error=TaskFailed(
                        msg.get("message", "failed"),
                        code=msg.get("code") or "Internal",
                        status=msg.get("status") or 500,
                    ),
                )
                return

    def _start_worker(self, slot: int, task: Task | None = None) -> _WorkerProcess | str | None:
        """Start the slot's worker and wait until its engine is built.

        Returns:
            The ready worker; an error message when it could not start; None when the
            task was canceled or the pool closed meanwhile.
        """
        with self._lock:
            proc = self._procs.get(slot)
        if proc is not None and proc.alive() and proc.ready:
            return proc
        if proc is not None:
            self._drop_worker(slot)
        proc = _WorkerProcess(slot, self.log_dir, self.nice, self.env)
        with self._lock:
            self._procs[slot] = proc
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if (task is not None and task.cancel_requested.is_set()) or self._closed.is_set():
                return None
            try:
                msg = proc.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            if msg is None:
                break
            if msg.get("type") == "ready":
                proc.ready = True
                return proc
            if msg.get("type") == "failed":
                self._drop_worker(slot)
                return f"The execution engine could not start: {msg.get('message')}"
        self._drop_worker(slot)
        return "The worker process did not start (see worker logs in the data folder)."

    def _ensure_worker(self, slot: int, task: Task) -> _WorkerProcess | None:
        started = self._start_worker(slot, task)
        if isinstance(started, _WorkerProcess):
            return started
        if started is None:
            self._finish(task, error=TaskCanceled())
        else:
            task.emit_log("error", started)
            self._finish(task, error=TaskFailed(started))
        return None

    def _drop_worker(self, slot: int) -> None:
        with self._lock:
            proc = self._procs.pop(slot, None)
        if proc is not None:
            proc.kill()
