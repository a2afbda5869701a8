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
    fails_of: dict[str, list[tuple[pd.Timestamp, object]]] = {}
    for key, at, message in zip(fails["job_key"], fails["at"], fails["message"]):
        fails_of.setdefault(key, []).append((at, message))
    creates_of: dict[str, list[pd.Timestamp]] = {}
    for key, at in zip(creates["job_key"], creates["at"]):
        creates_of.setdefault(key, []).append(at)
    has_error = jobs["error_class"].notna() & (jobs["error_class"].astype(str) != "")
    keys = (set(fails_of) | set(jobs.index[has_error])) & set(jobs.index)
    table = jobs.loc[sorted(keys), ["status", "attempt", "error_class", "error_message"]]
    rows = []
    for key, status, attempts, error_class, error_message in zip(
            table.index, table["status"].astype(str), table["attempt"], table["error_class"],
            table["error_message"]):
        mine = fails_of.get(key, [])
        job_creates = creates_of.get(key, [])
        stored = None
        if isinstance(error_class, str) and error_class:
            stored = redact(f"{error_class}: {' '.join(str(error_message or '').split())}")
        latest_fail_at = max(at for at, _ in mine) if mine else None
        started_again = latest_fail_at is not None and any(at > latest_fail_at for at in job_creates)
        from_transition = status in _FAILED or (status == S.NOT_STARTED.value and stored is not None)
        if from_transition:
            current = stored
        elif status in _RESULTS and stored is not None and not _in_messages(error_message, mine):
            current = stored  # the results step failed and is retried, no transition yet
        else:
            current = None
        earlier = []
        for at, message in mine:
            if from_transition and at == latest_fail_at and not started_again:
                continue  # this failure is the latest attempt's, shown as ``error``
            attempt = sum(1 for c in job_creates if c <= at) or 1
            earlier.append(f"attempt {attempt}: {redact(' '.join(str(message or '').split()))}")
        if current is None and not earlier and stored is not None:
            earlier.append(f"earlier attempt: {stored}")
        rank = 0 if status in _FAILED else 1 if current is not None else 2
        rows.append((rank, key, status, int(attempts), current, earlier))
    rows.sort(key=lambda r: (r[0], str(r[1])))
    return pd.DataFrame([r[2:] for r in rows], columns=list(ERROR_COLUMNS),
                        index=pd.Index([r[1] for r in rows], name="job_key", dtype=object))


def _in_messages(message: object, failures: list[tuple[pd.Timestamp, object]]) -> bool:
    text = " ".join(str(message or "").split())
    return bool(text) and any(text in str(m) for _, m in failures)
