"""Matplotlib figures of a run, drawn from the job table and the status history.

Every function takes plain dataframes (:func:`~eoextract.report._summary.jobs_frame`,
:func:`~eoextract.report._summary.history_frame`) and returns a
:class:`matplotlib.figure.Figure` made without ``pyplot`` (no GUI backend, thread-safe),
or ``None`` when there is nothing to draw.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from eoextract.jobs.status import FAILED, TERMINAL, JobStatus

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from eoextract.report._summary import ErrorClassSummary


logger = logging.getLogger(__name__)
S = JobStatus

#: Phases of a job's life on the timeline and their colours.
PHASES: dict[str, tuple[str, ...]] = {
    "creating": (S.CREATING.value,),
    "queued": (S.CREATED.value, S.QUEUED.value),
    "running": (S.RUNNING.value,),
    "downloading": (S.DOWNLOADING.value, S.POSTPROCESSING.value),
}
PHASE_COLORS = {"creating": "#b0b0b0", "queued": "#f2b134", "running": "#3b75af",
                "downloading": "#4aa564"}
STATUS_COLORS = {
    S.NOT_STARTED.value: "#c7c7c7", S.CREATING.value: "#9e9e9e", S.CREATED.value: "#f7d488",
    S.QUEUED.value: "#f2b134", S.RUNNING.value: "#3b75af", S.DOWNLOADING.value: "#7fc48f",
    S.POSTPROCESSING.value: "#2f8a4c", S.FINISHED.value: "#1b5e20", S.ERROR.value: "#d62728",
    S.START_FAILED.value: "#ff7f0e", S.CANCELED.value: "#8c564b", S.SKIPPED.value: "#7f7f7f",
}
_PHASE_OF = {status: phase for phase, statuses in PHASES.items() for status in statuses}
_TERMINAL = {s.value for s in TERMINAL}
_FAILED = {s.value for s in FAILED}
#: Above this many jobs per backend the timeline shows counts per phase instead of bars.
MAX_GANTT_JOBS = 150


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _segments(history: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """One row per stay of a job in a status: job_key, backend_name, status, start, end."""
    if history.empty:
        return pd.DataFrame(columns=["job_key", "backend_name", "status", "start", "end"])
    h = history.sort_values(["job_key", "at"], kind="stable")
    nxt = h.groupby("job_key", sort=False)["at"].shift(-1)
    end = nxt.fillna(pd.Timestamp(now))
    final = h["new"].isin(_TERMINAL) & nxt.isna()
    end = end.where(~final, h["at"])
    return pd.DataFrame({"job_key": h["job_key"].to_numpy(), "backend_name": h["backend_name"].fillna("-").to_numpy(),
                         "status": h["new"].to_numpy(), "start": h["at"].to_numpy(), "end": end.to_numpy()})


def _to_num(values: Any) -> np.ndarray:
    from matplotlib import dates as mdates

    index = pd.DatetimeIndex(pd.to_datetime(np.asarray(values), utc=True))
    return mdates.date2num(index.tz_convert(None).to_pydatetime())


def _utc_formatter() -> Any:
    """Tick labels in UTC: ``HH:MM`` (with seconds, or milliseconds, when ticks need them),
    with the date under the first visible tick and under every tick where the date changes."""
    from matplotlib import dates as mdates
    from matplotlib.ticker import Formatter

    class UTCFormatter(Formatter):
        def format_ticks(self, values: Any) -> list[str]:
            stamps = [mdates.num2date(v, tz=UTC) for v in values]
            if any(t.microsecond // 1000 for t in stamps):
                clock = lambda t: t.strftime("%H:%M:%S.%f")[:-3]  # noqa: E731
            elif any(t.second for t in stamps):
                clock = lambda t: t.strftime("%H:%M:%S")  # noqa: E731
            else:
                clock = lambda t: t.strftime("%H:%M")  # noqa: E731
            lo, hi = sorted(self.axis.get_view_interval()) if self.axis is not None else (-np.inf, np.inf)
            labels, last_day = [], None
            for v, t in zip(values, stamps):
                day = t.strftime("%Y-%m-%d")
                visible = lo <= v <= hi
                labels.append(clock(t) + (f"\n{day}" if visible and day != last_day else ""))
                if visible:
                    last_day = day
            return labels

        def __call__(self, x: float, pos: int | None = None) -> str:
            return mdates.num2date(x, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")

    return UTCFormatter()


#: Label of every clock-time axis.
TIME_LABEL = "time (UTC)"


def _time_axis(ax: Any, *, label: bool = True) -> None:
    """The one convention for clock-time axes: UTC clock times with dates, labelled."""
    from matplotlib import dates as mdates

    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=8))
    ax.xaxis.set_major_formatter(_utc_formatter())
    if label:
        ax.set_xlabel(TIME_LABEL)


def duration_unit(max_seconds: float) -> tuple[float, str]:
    """Scale and unit of a duration axis: minutes, or hours from 3 h on (never seconds)."""
    return (3600.0, "h") if max_seconds >= 3 * 3600 else (60.0, "min")


def timeline_figure(history: pd.DataFrame, jobs: pd.DataFrame, *, now: datetime,
                    sessions: pd.DataFrame | None = None) -> Figure | None:
    """Per backend: each job's creating/queued/running/downloading phases over time, under a
    band of the manager sessions (starts, ends, interruptions, resumptions).

    With more than :data:`MAX_GANTT_JOBS` jobs on a backend, the number of jobs in each
    phase over time is drawn instead of one bar per job.

    Args:
        history: :func:`~eoextract.report.history_frame`.
        jobs: :func:`~eoextract.report.jobs_frame`.
        now: The end of open bars.
        sessions: :func:`~eoextract.report._sessions.manager_sessions` (none drawn if ``None``).
    """
    segs = _segments(history, now)
    segs = segs[segs["status"].isin(_PHASE_OF)]
    if segs.empty:
        return None
    segs = segs.assign(phase=segs["status"].map(_PHASE_OF))
    backends = sorted(segs["backend_name"].unique())
    heights = [min(max(segs.loc[segs["backend_name"] == b, "job_key"].nunique(), 3), MAX_GANTT_JOBS) for b in backends]
    heights = [max(1.6, 0.9 + h * 0.06) if h < MAX_GANTT_JOBS else 3.0 for h in heights]
    with_sessions = sessions is not None and len(sessions) > 0
    lanes = _session_lanes(sessions) if with_sessions else []
    if with_sessions:
        heights = [0.7 + 0.25 * (max(lanes) + 1)] + heights
    fig = _figure(11, sum(heights) + 1.0)
    all_axes = fig.subplots(len(heights), 1, squeeze=False, sharex=True, height_ratios=heights)[:, 0]
    axes = all_axes[1:] if with_sessions else all_axes
    if with_sessions:
        _draw_sessions(all_axes[0], sessions, lanes, now)
    final_at = jobs["status"].isin(_FAILED)
    for ax, backend in zip(axes, backends):
        part = segs[segs["backend_name"] == backend]
        keys = list(dict.fromkeys(part.sort_values("start")["job_key"]))
        if len(keys) <= MAX_GANTT_JOBS:
            row = {k: i for i, k in enumerate(keys)}
            for phase, color in PHASE_COLORS.items():
                p = part[part["phase"] == phase]
                if p.empty:
                    continue
                start, end = _to_num(p["start"]), _to_num(p["end"])
                ax.barh([row[k] for k in p["job_key"]], np.maximum(end - start, 1e-9), left=start,
                        height=0.8, color=color, label=phase, linewidth=0)
            retries = history[(history["new"] == S.NOT_STARTED.value) & history["old"].notna()
                              & history["job_key"].isin(row)]
            if len(retries):
                ax.scatter(_to_num(retries["at"]), [row[k] for k in retries["job_key"]], marker="<",
                           color="#ff7f0e", s=22, label="back to the queue (retry)", zorder=3)
            failed = [k for k in keys if k in jobs.index and final_at.get(k, False)]
            if failed:
                ends = jobs.loc[failed, "end_time"].fillna(jobs.loc[failed, "updated_at"])
                ax.scatter(_to_num(ends), [row[k] for k in failed], marker="x", color="#d62728",
                           s=18, label="failed", zorder=3)
            ax.set_ylim(len(keys) - 0.5, -0.5)
            ax.set_ylabel("jobs")
            if len(keys) <= 25:
                ax.set_yticks(range(len(keys)), [str(k) for k in keys], fontsize=7)
            else:
                ax.set_yticks([])
        else:
            _phase_counts(ax, part)
            ax.set_ylabel("jobs in phase")
        ax.set_title(f"backend {backend}", loc="left", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if with_sessions:
            _mark_sessions(ax, sessions)
    for ax in all_axes:
        _time_axis(ax, label=ax is all_axes[-1])
    handles: dict[str, Any] = {}
    for ax in all_axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside upper right",
                   ncols=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle("Job timeline per backend", x=0.01, ha="left", fontsize=12)
    return fig


#: How the end of a session is drawn: marker, colour, legend label.
_SESSION_END = {
    "completed": ("s", "#333333", "session ended"),
    "stopped": ("s", "#333333", "session ended"),
    "interrupted": ("X", "#d62728", "session killed or stopped"),
    "no clean stop": ("X", "#d62728", "session killed or stopped"),
    "running": (">", "#3b75af", "session running"),
}


def _session_lanes(sessions: pd.DataFrame) -> list[int]:
    """A lane per session so that overlapping sessions (several managers) do not overlap."""
    lane_end: list[pd.Timestamp] = []
    lanes = []
    for start, end in zip(sessions["start"], sessions["end"]):
        for i, last in enumerate(lane_end):
            if start > last:
                lane_end[i] = end
                lanes.append(i)
                break
        else:
            lane_end.append(end)
            lanes.append(len(lane_end) - 1)
    return lanes


def _draw_sessions(ax: Any, sessions: pd.DataFrame, lanes: list[int], now: datetime) -> None:
    """Bars from first to last change of each manager session; start, end, resume markers."""
    for (_, s), lane in zip(sessions.iterrows(), lanes):
        end = pd.Timestamp(now) if s["ended"] == "running" else s["end"]
        x0, x1 = _to_num([s["start"], end])
        ax.barh(lane, max(x1 - x0, 1e-9), left=x0, height=0.5, color="#d9cfe8", edgecolor="#6a51a3",
                linewidth=0.8)
        resumed = bool(s["resumed_from"])
        ax.scatter([x0], [lane], marker=">", s=60, color="#2ca02c" if resumed else "#6a51a3", zorder=3,
                   label="session resumed jobs" if resumed else "session started")
        marker, color, label = _SESSION_END[s["ended"]]
        ax.scatter([x1], [lane], marker=marker, s=60, color=color, zorder=3, label=label)
        ax.annotate(str(s["manager_id"]).split(":")[-1], (x0, lane), xytext=(6, 6), textcoords="offset points",
                    fontsize=7, color="#444444")
    ax.set_ylim(max(lanes) + 0.6, -0.6)
    ax.set_yticks([])
    ax.set_ylabel("managers", fontsize=8)
    ax.set_title("manager sessions (first to last recorded change)", loc="left", fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def _mark_sessions(ax: Any, sessions: pd.DataFrame) -> None:
    """Vertical lines where a session was interrupted (red) and where one resumed (green)."""
    for _, s in sessions.iterrows():
        if s["ended"] in ("interrupted", "no clean stop"):
            ax.axvline(_to_num([s["end"]])[0], color="#d62728", linestyle=":", linewidth=1.2)
        if s["resumed_from"]:
            ax.axvline(_to_num([s["start"]])[0], color="#2ca02c", linestyle="--", linewidth=1.0)


def _phase_counts(ax: Any, part: pd.DataFrame) -> None:
    events = pd.concat([
        pd.DataFrame({"t": part["start"], "phase": part["phase"], "d": 1}),
        pd.DataFrame({"t": part["end"], "phase": part["phase"], "d": -1}),
    ]).sort_values("t", kind="stable")
    table = events.pivot_table(index="t", columns="phase", values="d", aggfunc="sum").fillna(0).cumsum()
    phases = [p for p in PHASE_COLORS if p in table.columns]
    ax.stackplot(_to_num(table.index), *(table[p].to_numpy() for p in phases),
                 labels=phases, colors=[PHASE_COLORS[p] for p in phases], step="post")


def status_over_time_figure(history: pd.DataFrame, *, now: datetime,
                            sessions: pd.DataFrame | None = None) -> Figure | None:
    """Number of jobs in each status over time, from the status history, with the manager
    sessions' interruptions (red) and resumptions (green) as vertical lines."""
    if history.empty:
        return None
    plus = pd.DataFrame({"t": history["at"], "status": history["new"], "d": 1})
    minus = history[history["old"].notna()]
    minus = pd.DataFrame({"t": minus["at"], "status": minus["old"], "d": -1})
    events = pd.concat([plus, minus], ignore_index=True)
    table = events.pivot_table(index="t", columns="status", values="d", aggfunc="sum").fillna(0)
    table = table.sort_index().cumsum()
    last = table.iloc[[-1]].copy()
    last.index = [pd.Timestamp(now)] if last.index[-1] < pd.Timestamp(now) else last.index
    table = pd.concat([table, last]).groupby(level=0).last()
    order = [s.value for s in JobStatus if s.value in table.columns]
    fig = _figure(11, 3.6)
    ax = fig.subplots()
    x = _to_num(table.index)
    for status in order:
        ax.step(x, table[status].to_numpy(), where="post", label=status,
                color=STATUS_COLORS.get(status), linewidth=1.6)
    ax.set_ylabel("jobs")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if sessions is not None and len(sessions):
        _mark_sessions(ax, sessions)
    _time_axis(ax)
    ax.set_title("Jobs per status over time", loc="left", fontsize=12)
    return fig


def job_durations(history: pd.DataFrame, jobs: pd.DataFrame) -> pd.DataFrame:
    """Per finished job: total seconds (first ``creating`` to ``finished``) and seconds on the
    backend (first ``queued``/``created`` to results), indexed by job_key."""
    if history.empty:
        return pd.DataFrame(columns=["total_s", "backend_s"])
    h = history
    first_create = h[h["new"] == S.CREATING.value].groupby("job_key")["at"].min()
    on_backend = h[h["new"].isin([S.CREATED.value, S.QUEUED.value])].groupby("job_key")["at"].min()
    off_backend = h[h["new"].isin([S.DOWNLOADING.value, S.FINISHED.value])].groupby("job_key")["at"].min()
    finished = h[h["new"] == S.FINISHED.value].groupby("job_key")["at"].max()
    out = pd.DataFrame({"total_s": (finished - first_create).dt.total_seconds(),
                        "backend_s": (off_backend - on_backend).dt.total_seconds()})
    return out.dropna(subset=["total_s"])


def distributions_figure(history: pd.DataFrame, jobs: pd.DataFrame) -> Figure | None:
    """Histograms of finished jobs' durations and of the costs the backends reported."""
    durations = job_durations(history, jobs)
    costs = pd.to_numeric(jobs.get("costs"), errors="coerce").dropna() if "costs" in jobs else pd.Series(dtype=float)
    if durations.empty and costs.empty:
        return None
    fig = _figure(11, 3.4)
    ax_d, ax_c = fig.subplots(1, 2)
    if not durations.empty:
        total = durations["total_s"].to_numpy()
        scale, unit = duration_unit(float(np.nanmax(total)))
        bins = min(30, max(5, len(total) // 2))
        ax_d.hist(total / scale, bins=bins, color="#3b75af", alpha=0.85, label="total")
        backend = durations["backend_s"].dropna().to_numpy()
        if len(backend):
            ax_d.hist(backend / scale, bins=bins, color="#f2b134", alpha=0.6, label="on the backend")
        ax_d.set_xlabel(f"duration ({unit})")
        ax_d.set_ylabel("finished jobs")
        ax_d.legend(fontsize=8, frameon=False)
        ax_d.yaxis.get_major_locator().set_params(integer=True)
        ax_d.set_title(f"Durations, first creation to finished (median {_amount(np.median(total) / scale)} {unit})",
                       loc="left", fontsize=11)
    else:
        _empty(ax_d, "no finished job yet")
    if not costs.empty:
        ax_c.hist(costs.to_numpy(), bins=min(30, max(5, len(costs) // 2)), color="#4aa564")
        ax_c.set_xlabel("costs (backend units)")
        ax_c.set_ylabel("jobs")
        ax_c.set_title(f"Costs (total {costs.sum():.2f})", loc="left", fontsize=11)
    else:
        _empty(ax_c, "no costs reported by the backends")
    return fig


def _amount(value: float) -> str:
    """A duration in axis units without exponents: ``0.65``, ``12``."""
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666666")
    ax.set_xticks([])
    ax.set_yticks([])


def failures_figure(error_classes: Sequence[ErrorClassSummary]) -> Figure | None:
    """Horizontal bars: jobs per error class (failed, and waiting for a retry)."""
    if not error_classes:
        return None
    classes = list(error_classes)[:15][::-1]
    fig = _figure(11, 1.4 + 0.3 * len(classes))
    ax = fig.subplots()
    y = np.arange(len(classes))
    failed = np.array([e.failed for e in classes])
    retrying = np.array([e.retrying for e in classes])
    ax.barh(y, failed, height=0.6, color="#d62728", label="failed")
    ax.barh(y, retrying, height=0.6, left=failed, color="#f2b134", label="retrying")
    ax.set_yticks(y, [e.error_class for e in classes], fontsize=8)
    ax.set_xlabel("jobs")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_title("Failures by class", loc="left", fontsize=12)
    return fig
