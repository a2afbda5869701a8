"""Generic openEO job management: job databases, status model, the job manager.

Names are imported lazily, so ``import eoextract.jobs.status`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "JobManager": "eoextract.jobs._manager",
    "MultiBackendJobManager": "eoextract.jobs._manager",
    "ProcessBasedJobCreator": "eoextract.jobs._creator",
    "JobStatus": "eoextract.jobs.status",
    "create_job_db": "eoextract.jobs.db",
    "get_job_db": "eoextract.jobs.db",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'eoextract.jobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:  # pragma: no cover
    from eoextract.jobs._creator import ProcessBasedJobCreator
    from eoextract.jobs.db import create_job_db, get_job_db
    from eoextract.jobs._manager import JobManager, MultiBackendJobManager
    from eoextract.jobs.status import JobStatus
