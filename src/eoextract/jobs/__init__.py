"""Generic openEO job management: job databases, status model, the job manager.

Names are imported lazily, so ``import eoextract.jobs.status`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eoextract._util.lazy import lazy_exports

_EXPORTS = {
    "JobManager": "eoextract.jobs._manager",
    "MultiBackendJobManager": "eoextract.jobs._manager",
    "StartJob": "eoextract.jobs._hooks",
    "FinishedJob": "eoextract.jobs._hooks",
    "FinishedJobResult": "eoextract.jobs._hooks",
    "ProcessBasedJobCreator": "eoextract.jobs._creator",
    "JobStatus": "eoextract.jobs.status",
    "RetryPolicy": "eoextract._util.retry",
    "Backoff": "eoextract.jobs._classify",
    "ErrorClass": "eoextract._util.retry",
    "ActionResult": "eoextract.jobs._control",
    "retry_jobs": "eoextract.jobs._control",
    "cancel_jobs": "eoextract.jobs._control",
    "job_logs": "eoextract.jobs._control",
    "create_job_db": "eoextract.jobs.db",
    "get_job_db": "eoextract.jobs.db",
    "QualityCheck": "eoextract.jobs._quality",
    "ExpectedAssets": "eoextract.jobs._quality",
    "UsageAtMost": "eoextract.jobs._quality",
    "ArrayCheck": "eoextract.jobs._quality",
    "JobOutput": "eoextract.jobs._quality",
    "BackendLoad": "eoextract.jobs._scheduling",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # pragma: no cover
    from eoextract._util.retry import ErrorClass, RetryPolicy
    from eoextract.jobs._classify import Backoff
    from eoextract.jobs._control import ActionResult, cancel_jobs, job_logs, retry_jobs
    from eoextract.jobs._creator import ProcessBasedJobCreator
    from eoextract.jobs._hooks import FinishedJob, FinishedJobResult, StartJob
    from eoextract.jobs._manager import JobManager, MultiBackendJobManager
    from eoextract.jobs._quality import ArrayCheck, ExpectedAssets, JobOutput, QualityCheck, UsageAtMost
    from eoextract.jobs._scheduling import BackendLoad
    from eoextract.jobs.db import create_job_db, get_job_db
    from eoextract.jobs.status import JobStatus
