"""Live progress of a run on the terminal (rich), fed once per loop iteration.

:class:`RunProgress` shows one bar for the whole run (final jobs out of all jobs), the
done and failed counts, the rate and an ETA, and one line per backend with the slots in
use::

    Jobs ━━━━━━━━━━━━━━━━━━━━╺━━━━━━━━━━━  57/100  done 55  failed 2  open 43  12.4 jobs/min  ETA 3m 28s
      local     ■■■□  3/4 slots   queued 1  running 2
      cdse      ■■□□  2/4 slots   running 2

It is quiet unless asked for, and stays quiet when standard output is neither a terminal
nor a Jupyter notebook (log files, CI, pipes). In a notebook (rich's console detects the
kernel) the same display is rendered to HTML and updated in place in the cell's output,
through IPython's display handles (no ``ipywidgets`` needed, no terminal escape codes).
Updates are throttled, so feeding it on every loop iteration costs one time check most
of the time.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from eoextract._util.utc import format_duration
from eoextract.jobs.status import ACTIVE, FAILED, TERMINAL, JobStatus

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console, RenderableType

    from eoextract.jobs.db import JobDatabase

_log = logging.getLogger(__name__)
_TERMINAL = frozenset(s.value for s in TERMINAL)
_FAILED = frozenset(s.value for s in FAILED)
_ACTIVE = frozenset(s.value for s in ACTIVE)


class RunProgress:
    """Rich live display of a run's progress.

    Args:
        slots: Parallel jobs per backend (``None``: unknown, only the active count is shown).
        enabled: Show anything at all; even when True nothing is shown unless the console
            is a terminal.
        console: The rich console (default: standard output).
        min_interval: Seconds between two redraws; calls in between are ignored.
        clock: Monotonic clock (tests pass their own).

    Attributes:
        active: Whether the display is live (enabled and on a terminal).
    """

    def __init__(
        self,
        slots: Mapping[str, int] | None = None,
        *,
        enabled: bool = True,
        console: Console | None = None,
        min_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.slots = dict(slots or {})
        self.min_interval = float(min_interval)
        self._clock = clock
        self._live: Any = None
        self._last_draw = float("-inf")
        self._first: tuple[float, int] | None = None  # (time, final count) at the first update
        self._state: tuple[dict[str, int], dict[str, dict[str, int]]] = ({}, {})
        self.active = False
        if not enabled:
            return
        try:
            from rich.console import Console as _Console
        except ImportError:  # pragma: no cover - rich is a core dependency
            return
        self.console = console or _Console()
        #: Where the display goes: ``"terminal"``, ``"jupyter"`` (HTML in the cell's output) or None.
        self.mode: str | None = ("terminal" if self.console.is_terminal
                                 else "jupyter" if self.console.is_jupyter else None)
        self._handle: Any = None  # the IPython display handle in a notebook
        self.active = self.mode is not None

    # ------------------------------------------------------------------ feeding
    def tick(self, db: JobDatabase) -> None:
        """Redraw from the job database if ``min_interval`` has passed since the last draw.

        Cheap when throttled (no query); never raises (a failing query is logged).
        """
        if not self.active or self._clock() - self._last_draw < self.min_interval:
            return
        try:
            counts = db.count_by_status()
            per_backend = _per_backend(db)
        except Exception as exc:  # noqa: BLE001 - the display must never stop a run
            _log.debug("progress: cannot read the job database: %s", exc)
            return
        self.update(counts, per_backend)

    def update(
        self,
        counts: Mapping[str, int],
        per_backend: Mapping[str, Mapping[str, int] | int] | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Redraw with new figures (throttled unless ``force``).

        Args:
            counts: Jobs per status.
            per_backend: Per backend, either the number of jobs holding a slot or the jobs
                per active status.
            force: Draw even if the last draw was less than ``min_interval`` ago.
        """
        if not self.active:
            return
        now = self._clock()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        backends = {
            name: dict(v) if isinstance(v, Mapping) else {"active": int(v)}
            for name, v in (per_backend or {}).items()
        }
        self._state = ({str(k): int(v) for k, v in counts.items()}, backends)
        final = sum(n for s, n in self._state[0].items() if s in _TERMINAL)
        if self._first is None:
            self._first = (now, final)
        self._draw()

    def rate_per_s(self) -> float | None:
        """Jobs reaching a final status per second since the first update."""
        if self._first is None:
            return None
        t0, final0 = self._first
        elapsed = self._last_draw - t0
        final = sum(n for s, n in self._state[0].items() if s in _TERMINAL)
        if elapsed <= 0 or final <= final0:
            return None
        return (final - final0) / elapsed

    # ------------------------------------------------------------------ rendering
    def line(self) -> str:
        """The headline as plain text (also used where no live display is possible)."""
        counts = self._state[0]
        total = sum(counts.values())
        final = sum(n for s, n in counts.items() if s in _TERMINAL)
        failed = sum(n for s, n in counts.items() if s in _FAILED)
        open_ = total - final
        rate = self.rate_per_s()
        eta = open_ / rate if rate else None
        rate_text = f"{rate * 60:.1f} jobs/min" if rate else "- jobs/min"
        return (f"{final}/{total} final  done {final - failed}  failed {failed}  open {open_}  "
                f"{rate_text}  ETA {format_duration(eta if open_ else 0)}")

    def renderable(self) -> RenderableType:
        """What the live display shows."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        counts, backends = self._state
        total = sum(counts.values())
        final = sum(n for s, n in counts.items() if s in _TERMINAL)
        head = Table.grid(padding=(0, 1))
        head.add_row(Text("Jobs", style="bold"), ProgressBar(total=max(total, 1), completed=final, width=32),
                     Text(self.line()))
        rows = Table.grid(padding=(0, 2))
        for name in sorted(set(backends) | set(self.slots)):
            statuses = backends.get(name, {})
            used = sum(n for s, n in statuses.items() if s in _ACTIVE or s == "active")
            cap = self.slots.get(name)
            if cap:
                meter = Text("■" * min(used, cap), style="green") + Text("□" * max(cap - used, 0), style="dim")
                slots_text = f"{used}/{cap} slots"
            else:
                meter, slots_text = Text(""), f"{used} active"
            detail = "  ".join(f"{s.value} {statuses[s.value]}" for s in JobStatus
                               if statuses.get(s.value))
            rows.add_row(Text(f"  {name}"), meter, Text(slots_text), Text(detail, style="dim"))
        return Group(head, rows)

    def html(self) -> str:
        """The display as HTML (what a notebook shows): rich's rendering with inline styles."""
        from rich.console import Console

        recorder = Console(file=io.StringIO(), record=True, width=min(self.console.width or 120, 160),
                           force_terminal=True, force_jupyter=False, color_system="truecolor")
        recorder.print(self.renderable())
        return recorder.export_html(
            inline_styles=True,
            code_format='<pre style="font-family:Menlo,\'DejaVu Sans Mono\',consolas,monospace;'
                        'line-height:1.25;white-space:pre">{code}</pre>')

    def _draw_jupyter(self) -> None:
        try:
            from IPython.display import HTML, display
        except ImportError:  # a notebook without IPython: nothing to draw with
            _log.debug("progress: no IPython to display with")
            self.active = False
            return
        page = HTML(self.html())
        if self._handle is None:
            self._handle = display(page, display_id=True)
        else:
            self._handle.update(page)

    def _draw(self) -> None:
        if self.mode == "jupyter":
            self._draw_jupyter()
            return
        if self._live is None:
            from rich.live import Live

            self._live = Live(self.renderable(), console=self.console, auto_refresh=False,
                              transient=False, redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        self._live.update(self.renderable(), refresh=True)

    def close(self, db: JobDatabase | None = None) -> None:
        """Draw a last time (from ``db`` when given) and stop the live display."""
        if not self.active:
            return
        if db is not None:
            self._last_draw = float("-inf")
            self.tick(db)
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.active = False

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _per_backend(db: JobDatabase) -> dict[str, dict[str, int]]:
    """Jobs per backend and active status (``active_counts`` when that is all there is)."""
    result: dict[str, dict[str, int]] = {}
    for rec in db.jobs([JobStatus(s) for s in _ACTIVE]):
        if rec.backend_name:
            statuses = result.setdefault(rec.backend_name, {})
            statuses[rec.status.value] = statuses.get(rec.status.value, 0) + 1
    return result
