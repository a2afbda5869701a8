"""Errors per job and attempt: the latest attempt's error apart from earlier attempts'.

A job keeps ``error_class``/``error_message`` of its last failure until a later one replaces
them, so a job that failed once and then finished still carries the first error. Here the
status history decides which attempt an error belongs to: the stored error is the latest
attempt's when the job is in a failure status, waits for a retry, or failed while its results
were being handled; once a later attempt started (a ``creating`` after the failure) or the job
finished, it is an earlier attempt's and shown as such.
"""

from __future__ import annotations

import pandas as pd

from eoextract._util.redact import redact
from eoextract.jobs.status import FAILED, JobStatus

S = JobStatus
#: Columns of :func:`job_errors`.
ERROR_COLUMNS = ("status", "attempt", "error", "earlier")
_FAILED = {s.value for s in FAILED}
_RESULTS = {S.DOWNLOADING.value, S.POSTPROCESSING.value}


def _failures(history: pd.DataFrame) -> pd.DataFrame:
    """History rows recording a failed attempt: back to the queue with a message, or into a
    failure status."""
    retry = (history["new"] == S.NOT_STARTED.value) & history["old"].notna() & history["message"].notna()
    return history[retry | history["new"].isin(_FAILED)]


def job_errors(jobs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The jobs that ever failed: the latest attempt's error and the earlier attempts' ones.

    Args:
        jobs: :func:`~eoextract.report.jobs_frame`.
        history: :func:`~eoextract.report.history_frame`.

    Returns:
        Indexed by job key, columns :data:`ERROR_COLUMNS`: ``error`` is the latest attempt's
        error (``"Class: message"``) or ``None`` when the latest attempt has none (the job
        finished or is running again); ``earlier`` lists earlier attempts' errors, oldest
        first, each ``"attempt N: message"``. Failed jobs first, then jobs waiting for a
        retry, then the others.
    """
    fails = _failures(history)
    creates = history[history["new"] == S.CREATING.value]
    last_create = creates.groupby("job_key")["at"].max()
    fails_of = {k: g for k, g in fails.groupby("job_key", sort=False)}
    creates_of = {k: g["at"] for k, g in creates.groupby("job_key", sort=False)}
    no_fails, no_creates = fails.iloc[0:0], creates["at"].iloc[0:0]
    rows = []
    keys = set(fails["job_key"]) | set(jobs.index[jobs["error_class"].notna()
                                                     & (jobs["error_class"].astype(str) != "")])
    for key in keys:
        if key not in jobs.index:
            continue
        job = jobs.loc[key]
        status = str(job["status"])
        mine = fails_of.get(key, no_fails)
        job_creates = creates_of.get(key, no_creates)
        stored = None
        if isinstance(job["error_class"], str) and job["error_class"]:
            stored = redact(f"{job['error_class']}: {' '.join(str(job['error_message'] or '').split())}")
        latest_fail_at = mine["at"].max() if len(mine) else None
        started_again = (latest_fail_at is not None and key in last_create.index
                         and last_create[key] > latest_fail_at)
        from_transition = status in _FAILED or (status == S.NOT_STARTED.value and stored is not None)
        if from_transition:
            current = stored
        elif status in _RESULTS and stored is not None and not _in_messages(job["error_message"], mine):
            current = stored  # the results step failed and is retried, no transition yet
        else:
            current = None
        earlier = []
        for at, message in zip(mine["at"], mine["message"]):
            if from_transition and at == latest_fail_at and not started_again:
                continue  # this failure is the latest attempt's, shown as ``error``
            attempt = int((job_creates <= at).sum()) or 1
            earlier.append(f"attempt {attempt}: {redact(' '.join(str(message or '').split()))}")
        if current is None and not earlier and stored is not None:
            earlier.append(f"earlier attempt: {stored}")
        rank = 0 if status in _FAILED else 1 if current is not None else 2
        rows.append((rank, key, status, int(job["attempt"]), current, earlier))
    rows.sort(key=lambda r: (r[0], str(r[1])))
    frame = pd.DataFrame([r[2:] for r in rows], columns=list(ERROR_COLUMNS),
                         index=pd.Index([r[1] for r in rows], name="job_key", dtype=object))
    return frame


def _in_messages(message: object, failures: pd.DataFrame) -> bool:
    text = " ".join(str(message or "").split())
    return bool(text) and any(text in str(m) for m in failures["message"])
