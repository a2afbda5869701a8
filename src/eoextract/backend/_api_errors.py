"""openEO API errors raised inside the embedded backend and turned into openEO error JSON.

Each carries the openEO error ``code`` and HTTP ``status``; the app answers
``{"id": ..., "code": ..., "message": ...}`` with that status.
"""

from __future__ import annotations


class OpenEOApiError(Exception):
    """Base: an openEO API error with ``code`` and HTTP ``status``."""

    code = "Internal"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


def _error(name: str, status: int, doc: str) -> type[OpenEOApiError]:
    return type(name, (OpenEOApiError,), {"code": name, "status": status, "__doc__": doc})


CollectionNotFound = _error("CollectionNotFound", 404, "Unknown collection id.")
ProcessUnsupported = _error("ProcessUnsupported", 400, "Process not available here.")
ProcessGraphInvalid = _error("ProcessGraphInvalid", 400, "Process graph cannot be parsed.")
ProcessGraphMissing = _error("ProcessGraphMissing", 400, "No process graph in the request.")
ProcessParameterInvalid = _error("ProcessParameterInvalid", 400, "Bad argument to a process.")
FormatUnsupported = _error("FormatUnsupported", 400, "Unknown output format.")
JobNotFound = _error("JobNotFound", 404, "Unknown batch job id.")
JobNotFinished = _error("JobNotFinished", 400, "Results requested before the job finished.")
JobLocked = _error("JobLocked", 400, "Job cannot be modified while queued or running.")
AuthenticationRequired = _error("AuthenticationRequired", 401, "No bearer token given.")
TokenInvalid = _error("TokenInvalid", 403, "Bearer token not valid.")
CredentialsInvalid = _error("CredentialsInvalid", 403, "Wrong user name or password.")
ProcessGraphNotFound = _error("ProcessGraphNotFound", 404, "Unknown user-defined process.")
NotFound = _error("NotFound", 404, "Unknown resource.")
BadRequest = _error("BadRequest", 400, "Malformed request.")
