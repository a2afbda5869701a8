"""Per-execution state of the embedded backend's process graphs.

One registry of processes serves concurrent executions; what belongs to one execution
(output folder, log, cancel flag, the feature being processed) is an
:class:`ExecutionContext`, made current with :class:`use_context` through a context variable.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd

from eoextract.backend._api_errors import OpenEOApiError


class JobCanceled(OpenEOApiError):
    """The execution was canceled through its ``cancel_event``."""

    code = "JobCanceled"
    status = 400


@dataclass
class ExecutionContext:
    """State of one process-graph execution.

    Attributes:
        out_dir: Folder receiving result files.
        log: ``log(level, message)`` callback feeding the job logs.
        cancel_event: Set to stop the execution at the next check.
        assets: Result files written so far (``_output_formats.ResultAsset``).
        feature_index: In per-feature mode, the feature this run processes.
        n_features: In per-feature mode, the number of features of the geometry source.
        geometries: Last geometry set applied to a cube (for ``sample_by_feature`` crops).
        url_cache: ``load_url`` results, so each URL is read once per execution.
        results_cache: Node results of the running graph (``openeo-pg-parser-networkx``).
        resources: Objects with a ``close()`` kept for the execution (e.g. its UDF process),
            closed when its :class:`use_context` ends.
    """

    out_dir: Path
    log: Callable[[str, str], None] = lambda level, message: None
    cancel_event: threading.Event | None = None
    assets: list = field(default_factory=list)
    feature_index: int | None = None
    n_features: int | None = None
    geometries: gpd.GeoDataFrame | None = None
    url_cache: dict = field(default_factory=dict)
    results_cache: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)

    def check_canceled(self) -> None:
        """Raise :class:`JobCanceled` if cancellation was requested."""
        if self.cancel_event is not None and self.cancel_event.is_set():
            raise JobCanceled("The job was canceled.")

    def close(self) -> None:
        """Close the execution's :attr:`resources`."""
        while self.resources:
            _, resource = self.resources.popitem()
            try:
                resource.close()
            except Exception:  # noqa: BLE001 - closing must not mask the execution's outcome
                pass


_CONTEXT: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "eoextract_backend_execution", default=None
)


def current_context() -> ExecutionContext:
    """The execution context of the running process graph (a throwaway one outside)."""
    ctx = _CONTEXT.get()
    return ctx if ctx is not None else ExecutionContext(out_dir=Path("."))


class use_context:  # noqa: N801 - used as a context manager
    """Context manager making ``ctx`` the current execution context."""

    def __init__(self, ctx: ExecutionContext):
        self.ctx = ctx
        self._token: contextvars.Token | None = None

    def __enter__(self) -> ExecutionContext:
        self._token = _CONTEXT.set(self.ctx)
        return self.ctx

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _CONTEXT.reset(self._token)
        self.ctx.close()
