"""The worker process of the embedded backend (``python -m eoextract.backend._worker_main``).

It builds one execution engine, says ``ready``, then runs the tasks its parent
(:class:`~eoextract.backend._worker_pool.WorkerPool`) sends over stdin, one at a time, and
answers with JSON-line messages on stdout: ``log``, ``progress``, then ``done`` (with the
asset dicts), ``canceled`` or ``failed``. A ``cancel`` message stops the running task at the
engine's next check. Anything libraries print goes to stderr (the worker's log file).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import shutil
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from eoextract.backend._api_errors import OpenEOApiError


class _Channel:
    """Thread-safe JSON-line writer to the parent."""

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, default=str).encode() + b"\n"
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


_PROGRESS_RE = re.compile(r"features done: (\d+)/(\d+)")
"""Engine log lines that tell how far a ``sample_by_feature`` job is."""


def _make_log(channel: _Channel) -> Callable[..., None]:
    def log(*args: Any, **kwargs: Any) -> None:
        # accepts log(message), log(level, message) and log(message, level=...)
        level = kwargs.get("level", "info")
        if len(args) >= 2:
            level, message = args[0], args[1]
        elif args:
            message = args[0]
        else:
            message = kwargs.get("message", "")
        if isinstance(level, int):
            level = {10: "debug", 20: "info", 30: "warning", 40: "error"}.get(level, "info")
        channel.send({"type": "log", "level": str(level).lower(), "message": str(message)})
        done = _PROGRESS_RE.search(str(message))
        if done and int(done.group(2)) > 0:
            pct = 5.0 + 90.0 * int(done.group(1)) / int(done.group(2))
            channel.send({"type": "progress", "progress": round(pct, 1)})

    return log


def _execute(engine: Any, channel: _Channel, msg: dict[str, Any], cancel: threading.Event) -> None:
    from eoextract.backend._execution_context import JobCanceled
    from eoextract.backend._result_documents import asset_to_dict
    from eoextract.backend._user_processes import UdpResolver

    out_dir = Path(msg["out_dir"])
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        assets = engine.execute(
            msg["process_graph"],
            out_dir,
            udp_resolver=UdpResolver.from_dict(msg["resolver"]),
            log=_make_log(channel),
            cancel_event=cancel,
        )
        channel.send({"type": "done", "assets": [asset_to_dict(a, out_dir) for a in assets]})
    except JobCanceled:
        channel.send({"type": "canceled"})
    except OpenEOApiError as exc:
        channel.send(
            {"type": "failed", "code": exc.code, "status": exc.status, "message": exc.message}
        )
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which logs it
        channel.send(
            {
                "type": "failed",
                "code": "Internal",
                "status": 500,
                "message": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        )


def worker_main() -> None:
    """Entry point of a worker process: build the engine, then run tasks from stdin."""
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything printed by libraries goes to the log, not into the protocol
    channel = _Channel(protocol_out)
    nice = int(os.environ.get("EOEXTRACT_WORKER_NICE", "0") or 0)
    if nice:
        try:
            os.nice(nice)
        except OSError:  # pragma: no cover
            pass
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from eoextract.backend._execution import Engine

        engine = Engine()
    except Exception as exc:  # noqa: BLE001
        channel.send({"type": "failed", "message": f"{type(exc).__name__}: {exc}"})
        traceback.print_exc()
        return
    channel.send({"type": "ready"})

    tasks: queue.Queue[dict[str, Any] | None] = queue.Queue()
    cancel = threading.Event()

    def read_stdin() -> None:
        for line in sys.stdin.buffer:
            msg = json.loads(line)
            if msg.get("type") == "cancel":
                cancel.set()
            elif msg.get("type") == "run":
                cancel.clear()  # the parent sends a run only once the previous one ended
                tasks.put(msg)
            elif msg.get("type") == "exit":
                break
        tasks.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    while (msg := tasks.get()) is not None:
        _execute(engine, channel, msg, cancel)


if __name__ == "__main__":
    worker_main()

