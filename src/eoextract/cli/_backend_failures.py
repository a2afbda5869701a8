"""Backend failures said so that a person can act on them: an unreachable backend, refused
credentials (with the variables to set)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from eoextract.errors import BackendError

_CONNECTION_ERRORS = ("ConnectionError", "ConnectTimeout", "NewConnectionError", "MaxRetryError",
                      "ReadTimeout", "Timeout")
_AUTH_FAILURE = re.compile(r"backend '(?P<name>[^']*)': \[(?P<status>401|403)\]")


def credentials_hint(backend_name: str) -> str:
    """Where the command line reads the credentials of ``backend_name`` from."""
    from eoextract.jobs._control import credential_variables

    names = credential_variables(backend_name)
    return (f"set {names['user']} and {names['password']}, or {names['access_token']}, or "
            f"OPENEO_AUTH_METHOD=client_credentials with OPENEO_AUTH_CLIENT_ID/"
            f"OPENEO_AUTH_CLIENT_SECRET (see docs/cli.md#credentials)")


def _unreachable(exc: BaseException) -> BaseException | None:
    """The connection failure behind ``exc`` (requests/urllib3), if that is what it is."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ in _CONNECTION_ERRORS and type(exc).__module__.split(".")[0] in (
                "requests", "urllib3"):
            return exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return None


def _where(exc: BaseException) -> str:
    url = getattr(getattr(exc, "request", None), "url", None)
    if not url:
        return ""
    parts = urlsplit(url)
    return f" at {parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _reason(exc: BaseException) -> str:
    text = str(exc)
    for pattern, reason in (("Connection refused", "connection refused"),
                            ("Name or service not known", "unknown host"),
                            ("nodename nor servname", "unknown host"),
                            ("timed out", "timed out"), ("Timeout", "timed out")):
        if pattern in text:
            return reason
    return type(exc).__name__


def backend_message(exc: BackendError) -> str:
    """One line on a backend failure: what went wrong and what to do about it."""
    name = exc.backend_name or "?"
    failure = _unreachable(exc)
    if failure is not None:
        return (f"cannot reach backend {name!r}{_where(failure)}: {_reason(failure)} "
                f"(is it running, and is the URL recorded in the job database still right?)")
    if exc.status_code in (401, 403):
        what = "needs credentials" if exc.status_code == 401 else "refused the credentials"
        return f"backend {name!r} {what}: {str(exc).rstrip('. ')}; {credentials_hint(name)}"
    return str(exc)


_UNREACHABLE = re.compile(r"backend '(?P<name>[^']*)': (?:\w+: )?(?:ConnectionError|ConnectTimeout)\b.*")


def explain_failure(message: str) -> str:
    """A per-job failure message made actionable: the credentials hint when the backend
    refused them, a short line when it could not be reached."""
    match = _AUTH_FAILURE.search(message)
    if match:
        return f"{message.rstrip('. ')}; {credentials_hint(match['name'])}"
    match = _UNREACHABLE.search(message)
    if match:
        reason = _reason(Exception(match[0]))
        return (message[:match.start()] + f"cannot reach backend {match['name']!r}: "
                f"{'connection failed' if reason.endswith('Exception') else reason}")
    return message
