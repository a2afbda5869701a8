"""Generic openEO job management: job databases, status model, the job manager."""

from __future__ import annotations

from eoextract.jobs.creator import ProcessBasedJobCreator
from eoextract.jobs.db import create_job_db, get_job_db
from eoextract.jobs.manager import JobManager, MultiBackendJobManager
from eoextract.jobs.status import JobStatus

__all__ = [
    "JobManager",
    "JobStatus",
    "MultiBackendJobManager",
    "ProcessBasedJobCreator",
    "create_job_db",
    "get_job_db",
]
