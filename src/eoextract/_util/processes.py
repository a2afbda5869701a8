"""Worker processes started with ``spawn`` (never a fork of a threaded process), and one
clear error when they cannot run.

A spawned worker imports the calling script again. A script whose top-level code is not
under ``if __name__ == "__main__":`` therefore runs again in every worker, the worker dies,
and ``concurrent.futures`` only says "a process in the process pool was terminated
abruptly"; :func:`spawned_pool` says what to do instead.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

#: What a broken pool most likely means, and the ways out.
BROKEN_POOL_HINT = (
    "a worker process ended abruptly. Worker processes import the calling script again: "
    "put its top-level code under `if __name__ == \"__main__\":`, or use a single process "
    "({option}=1). A worker killed for lack of memory ends the same way.")


@contextlib.contextmanager
def spawned_pool(workers: int, *, error: type[Exception], option: str = "processes"
                 ) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``workers`` spawned processes; a broken pool raises
    ``error`` with :data:`BROKEN_POOL_HINT` (``option`` names the caller's parameter)."""
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            yield pool
    except BrokenProcessPool as exc:
        raise error(BROKEN_POOL_HINT.format(option=option)) from exc
