"""Manager sessions of a run, read from the status history and the jobs' leases.

Every status change records the ``manager_id`` of the manager process that made it
(``host:pid:nonce``), so the changes of one manager process are one session: from its first
to its last recorded change. A session that left jobs in flight (on the backend, being
created or downloaded) which a later session then carried on ended without finishing them: it
was killed or stopped, and the later session resumed its jobs. For the latest session, the
leases it still holds tell whether it is alive (lease valid), ended without a clean stop
(lease expired: a clean stop releases its leases) or stopped cleanly. Changes made by hand
(``eoextract retry``/``cancel``, ids starting with ``eoextract-cli``) are not sessions.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from eoextract.jobs.status import TERMINAL, JobStatus

#: Columns of :func:`manager_sessions`.
SESSION_COLUMNS = ("manager_id", "start", "end", "changes", "jobs", "left_in_flight", "ended",
                   "resumed_from")
#: How a session ended (column ``ended``).
ENDED = {
    "completed": "every job it handled reached a final status or went back to the queue",
    "interrupted": "killed or stopped with jobs in flight, which a later session resumed",
    "no clean stop": "its leases expired unreleased: the process ended without a clean stop",
    "stopped": "stopped with jobs in flight, leases released; not resumed yet",
    "running": "still holds valid leases",
}
_IN_FLIGHT = {s.value for s in JobStatus} - {s.value for s in TERMINAL} - {JobStatus.NOT_STARTED.value}
_MANUAL_PREFIX = "eoextract-cli"


def is_manual(manager_id: object) -> bool:
    """Whether a history ``manager_id`` marks a change made by hand (CLI or API control)."""
    return str(manager_id).startswith(_MANUAL_PREFIX)


def manager_sessions(history: pd.DataFrame, jobs: pd.DataFrame | None = None, *,
                     now: datetime | None = None) -> pd.DataFrame:
    """One row per manager session, oldest first.

    Args:
        history: :func:`~eoextract.report.history_frame`.
        jobs: :func:`~eoextract.report.jobs_frame` (``claimed_by``/``lease_until`` tell
            how the latest sessions ended); optional.
        now: The time leases are compared with (default: the last change).

    Returns:
        Columns :data:`SESSION_COLUMNS`: ``start``/``end`` (first and last recorded change,
        UTC), ``changes`` and ``jobs`` (status changes made, distinct jobs), ``left_in_flight``
        (jobs it left in flight), ``ended`` (a key of :data:`ENDED`), ``resumed_from``
        (manager ids of earlier sessions whose jobs it carried on, comma-separated).
    """
    h = history[history["manager_id"].notna()]
    h = h[~_manual(h["manager_id"])]
    if h.empty:
        return pd.DataFrame(columns=list(SESSION_COLUMNS))
    h = h.assign(manager_id=h["manager_id"].astype(str))
    grouped = h.groupby("manager_id", sort=False)
    sessions = pd.DataFrame({"start": grouped["at"].min(), "end": grouped["at"].max(),
                             "changes": grouped.size(), "jobs": grouped["job_key"].nunique()})
    # the next change of each job (by any manager, hand-made ones included)
    allh = history.sort_values(["job_key", "at"], kind="stable")
    nxt_manager = allh.groupby("job_key", sort=False)["manager_id"].shift(-1)
    mine = allh["manager_id"].notna() & ~_manual(allh["manager_id"])
    in_flight = allh["new"].isin(_IN_FLIGHT)
    handed_over = mine & in_flight & nxt_manager.notna() & (nxt_manager != allh["manager_id"]) \
        & ~_manual(nxt_manager)
    left_open = mine & in_flight & nxt_manager.isna()
    resumed = allh[handed_over]
    left_resumed = resumed.groupby("manager_id")["job_key"].nunique()
    left_unresumed = allh[left_open].groupby("manager_id")["job_key"].nunique()
    resumed_from: dict[str, set[str]] = {}
    for old, new in zip(resumed["manager_id"], nxt_manager[handed_over]):
        resumed_from.setdefault(str(new), set()).add(str(old))
    sessions["left_in_flight"] = (left_resumed.reindex(sessions.index).fillna(0)
                                  + left_unresumed.reindex(sessions.index).fillna(0)).astype(int)
    now_ts = pd.Timestamp(now) if now is not None else h["at"].max()
    ended = []
    for manager_id in sessions.index:
        if left_resumed.get(manager_id, 0):
            ended.append("interrupted")
        elif left_unresumed.get(manager_id, 0):
            ended.append(_lease_state(jobs, manager_id, now_ts))
        else:
            ended.append("completed")
    sessions["ended"] = ended
    sessions["resumed_from"] = [", ".join(sorted(resumed_from.get(m, ()), key=lambda x: sessions["start"].get(x)))
                                for m in sessions.index]
    sessions = sessions.sort_values("start", kind="stable").reset_index()
    return sessions[list(SESSION_COLUMNS)]


def _lease_state(jobs: pd.DataFrame | None, manager_id: str, now: pd.Timestamp) -> str:
    """How a session that left jobs in flight (nobody resumed yet) stands, from its leases."""
    if jobs is None or "claimed_by" not in jobs.columns:
        return "stopped"
    held = jobs[jobs["claimed_by"].astype(str) == manager_id]
    if held.empty:
        return "stopped"
    until = pd.to_datetime(held["lease_until"], utc=True, errors="coerce")
    return "running" if bool((until > now).any()) else "no clean stop"


def _manual(ids: pd.Series) -> pd.Series:
    """:func:`is_manual` over a column (missing ids are not manual)."""
    return ids.astype("string").str.startswith(_MANUAL_PREFIX).fillna(False).astype(bool)


def manual_changes(history: pd.DataFrame) -> pd.DataFrame:
    """Status changes made by hand (retries, cancels from the CLI or the control API)."""
    return history[_manual(history["manager_id"])]
