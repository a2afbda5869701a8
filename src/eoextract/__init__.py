"""eoextract: large Earth-observation extractions with openEO.

Runs thousands of openEO batch jobs across backends without losing or duplicating one,
downloads and verifies every result asset, lets user code enrich them, and writes one
valid STAC catalogue.

Public names are imported lazily, so ``import eoextract`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# every record of the "eoextract" logger and its children is redacted (docs/monitoring.md)
from eoextract._util.logs import install_log_redaction as _install_log_redaction  # noqa: E402

_install_log_redaction()

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # errors
    "EoextractError": "eoextract.errors",
    "ConfigurationError": "eoextract.errors",
    "JobError": "eoextract.errors",
    "InvalidTransition": "eoextract.errors",
    "JobDatabaseError": "eoextract.errors",
    "SchemaVersionError": "eoextract.errors",
    "BackendError": "eoextract.errors",
    "RetryableBackendError": "eoextract.errors",
    "JobLost": "eoextract.errors",
    "FatalBackendError": "eoextract.errors",
    "DownloadError": "eoextract.errors",
    "ChecksumMismatch": "eoextract.errors",
    "AssetRefused": "eoextract.errors",
    "UnsafeAssetPath": "eoextract.errors",
    "StacError": "eoextract.errors",
    "StacValidationError": "eoextract.errors",
    "EmptyCatalogue": "eoextract.errors",
    # jobs
    "JobStatus": "eoextract.jobs.status",
    "JobDatabase": "eoextract.jobs.db",
    "JobRecord": "eoextract.jobs.db",
    "StatusChange": "eoextract.jobs.db",
    "create_job_db": "eoextract.jobs.db",
    "get_job_db": "eoextract.jobs.db",
    "JobManager": "eoextract.jobs",
    "MultiBackendJobManager": "eoextract.jobs",
    "ProcessBasedJobCreator": "eoextract.jobs",
    # extraction
    "ExtractionManager": "eoextract.extract",
    "GFMAPJobManager": "eoextract.extract",
    "AssetDefinition": "eoextract.extract",
    "AUXILIARY": "eoextract.extract",
    # STAC
    "build_collection": "eoextract.stac",
    "extend_collection": "eoextract.stac",
    "validate": "eoextract.stac",
    "validate_catalog": "eoextract.stac",
    # splitters
    "split_job_hex": "eoextract.split",
    "split_job_s2grid": "eoextract.split",
    "split_area": "eoextract.split",
    "Sentinel2Grid": "eoextract.split",
    # embedded backend
    "LocalBackend": "eoextract.backend",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eoextract' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from eoextract.backend import LocalBackend
    from eoextract.extract import AUXILIARY, AssetDefinition, ExtractionManager, GFMAPJobManager
    from eoextract.jobs import JobManager, MultiBackendJobManager, ProcessBasedJobCreator
    from eoextract.jobs.db import create_job_db, get_job_db
    from eoextract.split import Sentinel2Grid, split_area, split_job_hex, split_job_s2grid
    from eoextract.stac import build_collection, extend_collection, validate, validate_catalog
    from eoextract.errors import *  # noqa: F403
    from eoextract.jobs.db import JobDatabase, JobRecord, StatusChange
    from eoextract.jobs.status import JobStatus
