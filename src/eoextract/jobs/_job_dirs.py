"""openeo's per-job folder layout: ``root_dir/job_<id>/`` with the results, the job's
metadata (``job_<id>.json``) and its error logs (``job_<id>_errors.json``), and openeo's
default hooks for failed and canceled jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from openeo.rest.job import BatchJob


class JobDirs:
    """The layout methods of openeo's ``MultiBackendJobManager`` (overridable the same way).

    Attributes:
        _root_dir: The absolute root folder (resolved once, when the manager is made).
    """

    _root_dir: Path

    def get_job_dir(self, job_id: str) -> Path:
        """Folder for a job's results, metadata and error logs."""
        return self._root_dir / f"job_{job_id}"

    def get_error_log_path(self, job_id: str) -> Path:
        """Where a failed job's error logs are written."""
        return self.get_job_dir(job_id) / f"job_{job_id}_errors.json"

    def get_job_metadata_path(self, job_id: str) -> Path:
        """Where a finished job's metadata is written."""
        return self.get_job_dir(job_id) / f"job_{job_id}.json"

    def ensure_job_dir_exists(self, job_id: str) -> Path:
        """The job's folder, created if needed."""
        job_dir = self.get_job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        return job_dir

    def on_job_error(self, job: BatchJob, row: pd.Series) -> None:
        """Called for a job that ended in ``error``; writes its error logs by default."""
        logs = job.logs(level="error")
        if len(logs) > 0:
            self.ensure_job_dir_exists(job.job_id)
            self.get_error_log_path(job.job_id).write_text(json.dumps(list(logs), indent=2, default=str))

    def on_job_cancel(self, job: BatchJob, row: pd.Series) -> None:
        """Called for a job that was canceled; does nothing by default."""
