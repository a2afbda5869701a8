"""Operate on recorded jobs after (or during) a run: retry, cancel, read backend logs.

A job's backend is reached through the root URL the manager stored in the job database
(:meth:`~eoextract.jobs.db.JobDatabase.backends`, never with credentials); credentials
come from the environment or from openeo's own configuration, tried in this order:

1. ``EOEXTRACT_<NAME>_USER`` and ``EOEXTRACT_<NAME>_PASSWORD``: HTTP basic for the backend
   registered as ``<NAME>`` (upper-cased, every character but letters and digits replaced
   by ``_``: backend ``cdse-prod`` reads ``EOEXTRACT_CDSE_PROD_USER``);
2. ``EOEXTRACT_<NAME>_ACCESS_TOKEN``: an OIDC access token obtained elsewhere;
3. ``OPENEO_AUTH_METHOD=client_credentials`` (with ``OPENEO_AUTH_CLIENT_ID``,
   ``OPENEO_AUTH_CLIENT_SECRET``, optionally ``OPENEO_AUTH_PROVIDER_ID``): openeo's own
   non-interactive OIDC client-credentials flow;
4. basic credentials stored for the URL in openeo's auth config
   (``openeo-auth add-basic URL``);
5. a refresh token stored by an earlier ``authenticate_oidc()`` on this machine.

No interactive flow is ever started; when none applies the connection stays anonymous and
the backend's 401 is reported. Credentials are never logged or stored.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eoextract.errors import ConfigurationError, InvalidTransition, JobError
from eoextract.jobs.db import JobDatabase, JobRecord, StatusChange
from eoextract.jobs._classify import classify
from eoextract.jobs.status import ON_BACKEND, STAGE_RETRY, TERMINAL, USER_RETRYABLE, JobStatus

_log = logging.getLogger(__name__)
S = JobStatus

#: ``requests`` timeout (connect, read) in seconds of the calls made here, without retries.
CONNECT_TIMEOUT = (5.0, 60.0)


def cli_manager_id(tool: str = "eoextract-cli") -> str:
    """The ``manager_id`` recorded in the history for changes made by hand."""
    return f"{tool}:{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class ActionResult:
    """What happened to one job.

    Attributes:
        job_key: The job.
        ok: Whether the action was done.
        old: Its status before.
        new: Its status after.
        message: What was done, or why not.
    """

    job_key: str
    ok: bool
    old: JobStatus | None
    new: JobStatus | None
    message: str


# ----------------------------------------------------------------------------- connecting
def _env_name(backend_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", backend_name).upper()


def credential_variables(backend_name: str) -> dict[str, str]:
    """The environment variables read for a backend (purpose → variable name)."""
    name = _env_name(backend_name)
    return {
        "user": f"EOEXTRACT_{name}_USER",
        "password": f"EOEXTRACT_{name}_PASSWORD",
        "access_token": f"EOEXTRACT_{name}_ACCESS_TOKEN",
    }


def connect_backend(
    backend_name: str,
    url: str,
    *,
    environ: Mapping[str, str] | None = None,
    auth_config: Any = None,
) -> Any:
    """An ``openeo.Connection`` to a recorded backend, authenticated as described above.

    Args:
        backend_name: The name the backend was registered under.
        url: Its root URL (from :meth:`JobDatabase.backends`).
        environ: Environment to read (default ``os.environ``).
        auth_config: An ``openeo.rest.auth.config.AuthConfig`` (default: openeo's own).

    Returns:
        The connection (anonymous when no credentials were found).

    Raises:
        BackendError: The backend cannot be reached or refuses the credentials.
    """
    import openeo

    env = os.environ if environ is None else environ
    names = credential_variables(backend_name)
    try:
        # one attempt, short connect timeout: these calls are made by a person waiting
        connection = openeo.connect(url, retry=False, default_timeout=CONNECT_TIMEOUT)  # type: ignore[arg-type]
        user, password = env.get(names["user"]), env.get(names["password"])
        if user and password:
            _log.debug("backend %r: basic authentication from %s", backend_name, names["user"])
            return connection.authenticate_basic(user, password)
        if user or password:
            raise ConfigurationError(f"set both {names['user']} and {names['password']} "
                                     f"(only one is set)")
        token = env.get(names["access_token"])
        if token:
            return connection.authenticate_oidc_access_token(token)
        if env.get("OPENEO_AUTH_METHOD") == "client_credentials":
            return connection.authenticate_oidc()
        if auth_config is None:
            from openeo.rest.auth.config import AuthConfig

            auth_config = AuthConfig()
        user, password = auth_config.get_basic_auth(url)
        if user and password:
            _log.debug("backend %r: basic authentication from openeo's auth config", backend_name)
            return connection.authenticate_basic(user, password)
        try:
            return connection.authenticate_oidc_refresh_token()
        except Exception as exc:  # noqa: BLE001 - no stored token: stay anonymous
            _log.debug("backend %r: no usable refresh token (%s); anonymous", backend_name, exc)
        return connection
    except ConfigurationError:
        raise
    except Exception as exc:
        raise classify_to_error(exc, backend_name) from exc


def classify_to_error(exc: BaseException, backend_name: str, *, job_known: bool = False) -> Exception:
    """``exc`` as an eoextract :class:`~eoextract.errors.BackendError` (one-line message)."""
    from eoextract.errors import EoextractError
    from eoextract.jobs._classify import to_backend_error

    if isinstance(exc, EoextractError):
        return exc
    return to_backend_error(exc, backend_name=backend_name, job_known=job_known)


class _Connections:
    """Connections per backend name, made on first use from the database's URLs."""

    def __init__(self, db: JobDatabase, environ: Mapping[str, str] | None,
                 auth_config: Any = None) -> None:
        self._urls = db.backends()
        self._environ = environ
        self._auth_config = auth_config
        self._made: dict[str, Any] = {}

    def get(self, backend_name: str | None) -> Any:
        if not backend_name:
            raise ConfigurationError("the job names no backend")
        if backend_name not in self._made:
            url = self._urls.get(backend_name)
            if not url:
                raise ConfigurationError(f"no URL recorded for backend {backend_name!r}; run the "
                                         f"manager once with it registered")
            self._made[backend_name] = connect_backend(backend_name, url, environ=self._environ,
                                                       auth_config=self._auth_config)
        return self._made[backend_name]


# ----------------------------------------------------------------------------- selecting
def _select(db: JobDatabase, statuses: Iterable[JobStatus | str] | None,
            keys: Sequence[str] | None) -> tuple[list[JobRecord], list[str]]:
    """Records matching statuses and/or keys, plus the keys that are unknown."""
    wanted = [JobStatus(s) for s in statuses] if statuses else None
    if keys:
        records = db.jobs(wanted, keys=list(keys)) if wanted else db.jobs(keys=list(keys))
        known = {r.job_key for r in (db.jobs(keys=list(keys)) if wanted else records)}
        return records, [k for k in keys if k not in known]
    return (db.jobs(wanted) if wanted else db.jobs()), []


# ----------------------------------------------------------------------------- retry
def retry_jobs(
    db: JobDatabase,
    *,
    statuses: Iterable[JobStatus | str] | None = (S.ERROR,),
    keys: Sequence[str] | None = None,
    stage: str = "job",
    manager_id: str | None = None,
    dry_run: bool = False,
) -> list[ActionResult]:
    """Put failed jobs back to work (an explicit user retry, recorded in history).

    ``stage="job"`` (the default) moves them back to ``not_started``: the next run creates
    a new backend job. The attempt counter starts over, so a retried job gets
    ``max_attempts`` new attempts; the old error stays in the history.

    ``stage="download"`` or ``"postprocess"`` redoes only the handling of the results of a
    job in ``error`` whose backend job finished: the job goes back to ``downloading``
    (its results are fetched again from the backend job, still on the backend; files
    already in place and verified are reused) or to ``postprocessing`` (the verified files
    are post-processed again; one that is gone is fetched again). No new backend job is
    created. The next run of the manager picks the job up.

    Args:
        db: The job database.
        statuses: Only jobs in these statuses (``None``: any; with ``keys`` only).
        keys: Only these jobs.
        stage: ``job``, ``download`` or ``postprocess`` (see above).
        manager_id: Recorded in the history (default :func:`cli_manager_id`).
        dry_run: Report what would be done, change nothing.

    Returns:
        One result per selected (or unknown) job.

    Raises:
        ConfigurationError: Neither statuses nor keys given, a status that cannot be
            retried, or an unknown stage.
    """
    statuses = list(statuses or [])
    if not statuses and not keys:
        raise ConfigurationError("give statuses or keys of the jobs to retry")
    if stage != "job" and stage not in STAGE_RETRY:
        raise ConfigurationError(f"unknown stage {stage!r}; use job, {', '.join(STAGE_RETRY)}")
    retryable = USER_RETRYABLE if stage == "job" else frozenset({S.ERROR})
    bad = [s for s in statuses if JobStatus(s) not in retryable]
    if bad:
        allowed = ", ".join(sorted(s.value for s in retryable))
        raise ConfigurationError(f"cannot retry {'' if stage == 'job' else stage + ' of '}jobs in status "
                                 f"{', '.join(map(str, bad))}; only {allowed}")
    records, unknown = _select(db, statuses, keys)
    results = [ActionResult(k, False, None, None, "unknown job") for k in unknown]
    manager_id = manager_id or cli_manager_id()
    # a stage retry checks what each job's backend job reached: the history, read once
    changes = db.histories([r.job_key for r in records if r.status in retryable]) if stage != "job" else {}
    for rec in records:
        if rec.status not in retryable:
            results.append(ActionResult(rec.job_key, False, rec.status, rec.status,
                                        f"is {rec.status.value}, not a final failure"
                                        if stage == "job" else
                                        f"is {rec.status.value}; only a job in error can redo its {stage}"))
            continue
        if stage == "job":
            new, note = S.NOT_STARTED, f"retried by user (was {rec.status.value})"
            fields: dict[str, Any] = dict(attempt=0, next_attempt_at=None, end_time=None,
                                          backend_status=None, id=None)
        else:
            problem = _stage_problem(rec, changes.get(rec.job_key, []), stage)
            if problem:
                results.append(ActionResult(rec.job_key, False, rec.status, rec.status, problem))
                continue
            new = STAGE_RETRY[stage]
            note = f"{stage} retried by user (backend job {rec.backend_job_id} reused)"
            fields = dict(end_time=None, claimed_by=None, lease_until=None)
        if dry_run:
            results.append(ActionResult(rec.job_key, True, rec.status, new, f"would retry ({stage})"))
            continue
        try:
            db.transition(rec.job_key, new, message=note, manager_id=manager_id, user_retry=True,
                          expect=rec.status, error_class=None, error_message=None, **fields)
        except InvalidTransition as exc:
            results.append(ActionResult(rec.job_key, False, rec.status, None, str(exc)))
            continue
        results.append(ActionResult(rec.job_key, True, rec.status, new, f"retried ({stage})"))
    db.flush()
    return results


def _stage_problem(rec: JobRecord, history: Sequence[StatusChange], stage: str) -> str | None:
    """Why one stage of ``rec`` (whose status changes are ``history``) cannot be redone
    (``None``: it can)."""
    if not rec.backend_job_id:
        return "it has no backend job whose results could be reused; retry the whole job"
    reached = {c.new for c in history if c.backend_job_id == rec.backend_job_id}
    if S.DOWNLOADING not in reached:
        return (f"its backend job {rec.backend_job_id} never finished, so there are no results "
                f"to {'download' if stage == 'download' else 'post-process'}; retry the whole job")
    if stage == "postprocess" and S.POSTPROCESSING not in reached:
        return "its files were never all in place; retry its download stage (--stage download)"
    return None


# ----------------------------------------------------------------------------- cancel
def cancel_jobs(
    db: JobDatabase,
    *,
    keys: Sequence[str] | None = None,
    statuses: Iterable[JobStatus | str] | None = None,
    on_backend: bool = True,
    manager_id: str | None = None,
    environ: Mapping[str, str] | None = None,
    auth_config: Any = None,
    dry_run: bool = False,
) -> list[ActionResult]:
    """Cancel unfinished jobs: on their backend first (``created``/``queued``/``running``),
    then in the database (``canceled``, recorded in history).

    A job whose backend cannot be told is left as it is (its result says why), so the
    database never claims a cancel that did not happen; ``on_backend=False`` cancels in
    the database only.

    Args:
        db: The job database.
        keys: Only these jobs (default: every unfinished job, filtered by ``statuses``).
        statuses: Only jobs in these statuses.
        on_backend: Stop the backend jobs too.
        manager_id: Recorded in the history (default :func:`cli_manager_id`).
        environ: Environment for credentials (default ``os.environ``).
        auth_config: openeo auth config for credentials (default: openeo's own).
        dry_run: Report what would be done, change nothing.

    Returns:
        One result per selected (or unknown) job.
    """
    open_statuses = [s for s in JobStatus if s not in TERMINAL]
    records, unknown = _select(db, statuses or (None if keys else open_statuses), keys)
    results = [ActionResult(k, False, None, None, "unknown job") for k in unknown]
    connections = _Connections(db, environ, auth_config)
    manager_id = manager_id or cli_manager_id()
    for rec in records:
        if rec.status in TERMINAL:
            results.append(ActionResult(rec.job_key, False, rec.status, rec.status,
                                        f"already {rec.status.value}"))
            continue
        remote = on_backend and rec.status in ON_BACKEND and bool(rec.backend_job_id)
        if dry_run:
            what = f"would stop backend job {rec.backend_job_id} and cancel" if remote else "would cancel"
            results.append(ActionResult(rec.job_key, True, rec.status, S.CANCELED, what))
            continue
        note = "canceled by user"
        if remote:
            try:
                connections.get(rec.backend_name).job(rec.backend_job_id).stop()
            except Exception as exc:  # noqa: BLE001 - reported per job
                msg = str(exc) if isinstance(exc, (ConfigurationError, JobError)) else classify(exc).message
                results.append(ActionResult(rec.job_key, False, rec.status, rec.status,
                                            f"backend {rec.backend_name!r}: {msg}"))
                continue
            note = f"canceled by user (backend job {rec.backend_job_id} stopped)"
        try:
            db.transition(rec.job_key, S.CANCELED, message=note, manager_id=manager_id,
                          expect=rec.status, backend_status="canceled" if remote else rec.fields.get("backend_status"))
        except InvalidTransition as exc:
            results.append(ActionResult(rec.job_key, False, rec.status, None, str(exc)))
            continue
        results.append(ActionResult(rec.job_key, True, rec.status, S.CANCELED, note))
    db.flush()
    return results


# ----------------------------------------------------------------------------- logs
def job_logs(
    db: JobDatabase,
    job_key: str,
    *,
    level: str | None = None,
    backend_job_id: str | None = None,
    environ: Mapping[str, str] | None = None,
    auth_config: Any = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The backend's log entries of one job.

    Args:
        db: The job database.
        job_key: The job.
        level: Least severity (``error``, ``warning``, ``info``, ``debug``).
        backend_job_id: Another backend job of this job (an earlier attempt, see its
            history); default: the current one, else the latest in the history.
        environ: Environment for credentials (default ``os.environ``).
        auth_config: openeo auth config for credentials (default: openeo's own).

    Returns:
        The backend job id read and its log entries (dicts with ``id``, ``level``,
        ``message``, ``time`` when the backend gives one).

    Raises:
        JobError: Unknown job, or the job never had a backend job.
        BackendError: The backend cannot be reached or answers with an error.
    """
    rec = db.get(job_key)
    job_id = backend_job_id or rec.backend_job_id
    backend_name = rec.backend_name
    if not job_id:
        for change in reversed(db.history(job_key)):
            if change.backend_job_id:
                job_id = change.backend_job_id
                break
    if not job_id:
        raise JobError(f"job {job_key!r} has no backend job yet (status {rec.status.value})",
                       job_key=job_key)
    connections = _Connections(db, environ, auth_config)
    connection = connections.get(backend_name)
    try:
        entries = connection.job(job_id).logs(level=level)
    except Exception as exc:
        raise classify_to_error(exc, backend_name or "", job_known=True) from exc
    return job_id, [dict(e) for e in entries]
