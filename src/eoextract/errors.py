"""Exceptions raised by eoextract.

One root, branches by cause, so callers choose how broadly to catch::

    EoextractError
     ├── ConfigurationError          bad input found before anything is submitted
     ├── JobError                    (.job_key)
     │    ├── InvalidTransition      a status change the status model forbids
     │    ├── QualityCheckFailed     a finished job's results failed a quality check
     │    └── JobDatabaseError       the job database cannot be used
     │         └── SchemaVersionError  written by a newer eoextract
     ├── BackendError                (.backend_name, .status_code, .code)
     │    ├── RetryableBackendError  connection errors, 5xx, 429 (.retry_after)
     │    │    └── JobLost           the backend no longer knows a job (404)
     │    └── FatalBackendError      4xx on create, invalid process graph, ...
     ├── DownloadError               (.job_key, .asset)
     │    ├── ChecksumMismatch       size or checksum differs from the backend's
     │    ├── AssetRefused           more bytes than announced or allowed, or an encoded body
     │    └── UnsafeAssetPath        a path that would leave the output folder or
     │         │                     overwrite a file of the manager's own
     │         └── OutputPathConflict  a path another job already placed a file at
     ├── StacError
     │    ├── StacValidationError    (.errors: list of messages)
     │    └── EmptyCatalogue         no finished job has items to catalogue
     └── DatasetError                (.path, .item_id, .sample) a catalogue or its files
          │                         cannot become the training data asked for
          └── IncompleteDataset      (.report) more missing than the threshold allows

Errors of ``openeo``, ``requests`` and HTTP are mapped onto this tree in
:mod:`eoextract.jobs._classify` only.
"""

from __future__ import annotations

__all__ = [
    "EoextractError",
    "ConfigurationError",
    "JobError",
    "InvalidTransition",
    "QualityCheckFailed",
    "JobDatabaseError",
    "SchemaVersionError",
    "BackendError",
    "RetryableBackendError",
    "JobLost",
    "FatalBackendError",
    "DownloadError",
    "ChecksumMismatch",
    "AssetRefused",
    "UnsafeAssetPath",
    "OutputPathConflict",
    "StacError",
    "StacValidationError",
    "EmptyCatalogue",
    "DatasetError",
    "IncompleteDataset",
]


class EoextractError(Exception):
    """Root of every error eoextract raises on purpose."""


class ConfigurationError(EoextractError, ValueError):
    """Invalid input or settings, detected before any job is submitted."""


class JobError(EoextractError):
    """An error about one job (or the job database)."""

    def __init__(self, message: str, *, job_key: str | None = None) -> None:
        super().__init__(message)
        self.job_key = job_key


class QualityCheckFailed(JobError):
    """A finished job's results failed a quality check (``.check``: its name; ``.retry``:
    whether the job runs again)."""

    def __init__(self, message: str, *, check: str, retry: bool = False, job_key: str | None = None) -> None:
        super().__init__(message, job_key=job_key)
        self.check = check
        self.retry = retry


class InvalidTransition(JobError):
    """A status change that the status model does not allow."""


class JobDatabaseError(JobError):
    """The job database is missing, unreadable, of another tool, or unreachable."""


class SchemaVersionError(JobDatabaseError):
    """The job database was written by a newer schema version than this eoextract knows."""


class BackendError(EoextractError):
    """An openEO backend answered with an error or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        backend_name: str | None = None,
        status_code: int | None = None,
        code: str | None = None,
        job_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.backend_name = backend_name
        self.status_code = status_code
        self.code = code
        self.job_key = job_key


class RetryableBackendError(BackendError):
    """A passing backend failure (connection error, 5xx, 429): try again later."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class JobLost(RetryableBackendError):
    """The backend answered 404 for a job it had created: the job is gone."""


class FatalBackendError(BackendError):
    """A failure that will not go away by retrying (e.g. 400 on job creation)."""


class DownloadError(EoextractError):
    """A result asset could not be downloaded, verified or placed."""

    def __init__(self, message: str, *, job_key: str | None = None, asset: str | None = None):
        super().__init__(message)
        self.job_key = job_key
        self.asset = asset


class ChecksumMismatch(DownloadError):
    """The downloaded bytes do not match the size or checksum the backend announced."""


class AssetRefused(DownloadError):
    """The server sent more bytes than announced (or than ``max_asset_bytes``), or a body
    in a content encoding that was not asked for; the download stopped at once. Not
    retried: the same server would send the same again."""


class UnsafeAssetPath(DownloadError):
    """An asset name or output path that would escape the output folder, or would
    overwrite a file the manager keeps there (its job database, state or catalogue)."""


class OutputPathConflict(UnsafeAssetPath):
    """An output path that another job has already placed (or is placing) a file at.

    Attributes:
        path: The contested path.
        owner: Key of the job that registered the path first.
    """

    def __init__(self, message: str, *, path: str, owner: str | None,
                 job_key: str | None = None, asset: str | None = None) -> None:
        super().__init__(message, job_key=job_key, asset=asset)
        self.path = path
        self.owner = owner


class StacError(EoextractError):
    """A problem with STAC metadata or a catalogue."""


class StacValidationError(StacError):
    """A STAC object does not validate against its schemas."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors or [])


class EmptyCatalogue(StacError):
    """There is nothing to catalogue: no finished job stored any item."""


class DatasetError(EoextractError):
    """A catalogue or its files cannot become the training data asked for (a file that
    cannot join a dataset, an item without projection, patches of different sizes, ...);
    ``.path`` names the file, ``.item_id`` the item and ``.sample`` the sample when known."""

    def __init__(self, message: str, *, path: str | None = None, item_id: str | None = None,
                 sample: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.item_id = item_id
        self.sample = sample


class IncompleteDataset(DatasetError):
    """A merge found more missing samples or rows without attributes than allowed;
    ``.report`` holds the completeness report. Nothing was written."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report
