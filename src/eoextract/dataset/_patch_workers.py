"""Where patch to point runs its patches: in this process, in worker processes of this
machine, or on a Dask cluster (a ``dask.distributed`` client or a scheduler address) for
catalogues that outgrow one machine. Each way keeps at most a window of patches in flight
and gives the results back in patch order, so memory stays bounded and the output is the
same whichever way ran it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from eoextract._util.processes import spawned_pool
from eoextract.errors import ConfigurationError, DatasetError

T = TypeVar("T")
R = TypeVar("R")


def in_process(fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[tuple[T, R]]:
    """Each task run here, one after the other."""
    for task in tasks:
        yield task, fn(task)


def _windowed(submit: Callable[[T], Any], result: Callable[[Any], R], tasks: Iterable[T],
              window: int, cancel: Callable[[list[Any]], None]) -> Iterator[tuple[T, R]]:
    pending: deque[tuple[T, Any]] = deque()
    try:
        for task in tasks:
            pending.append((task, submit(task)))
            if len(pending) >= window:  # bounded: memory stays flat
                done, future = pending.popleft()
                yield done, result(future)
        while pending:
            done, future = pending.popleft()
            yield done, result(future)
    finally:
        if pending:
            cancel([f for _, f in pending])


def in_processes(fn: Callable[[T], R], tasks: Iterable[T], workers: int
                 ) -> Iterator[tuple[T, R]]:
    """Tasks run by ``workers`` spawned processes, ``2 * workers`` in flight.

    Raises:
        DatasetError: A worker process died (e.g. an unguarded calling script; the message
            says what to do).
    """
    with spawned_pool(workers, error=DatasetError) as pool:
        yield from _windowed(lambda t: pool.submit(fn, t), lambda f: f.result(), tasks,
                             2 * workers, lambda fs: [f.cancel() for f in fs])


def on_cluster(fn: Callable[[T], R], tasks: Iterable[T], client: Any,
               window: int | None = None) -> Iterator[tuple[T, R]]:
    """Tasks run on a Dask cluster: ``client`` is a ``distributed.Client`` or the address
    of a scheduler (connected to, and closed after). At most ``window`` tasks in flight
    (default: twice the cluster's threads). The workers must reach the patch files by the
    same paths."""
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ConfigurationError("running on a Dask cluster needs distributed: pip install "
                                 "'eoextract[dask]'") from exc
    own = Client(client) if isinstance(client, str) else None
    cluster = own or client
    try:
        threads = sum(cluster.nthreads().values()) or 1
        yield from _windowed(lambda t: cluster.submit(fn, t, pure=False),
                             lambda f: f.result(), tasks, window or 2 * threads,
                             lambda fs: cluster.cancel(fs))
    finally:
        if own is not None:
            own.close()
