"""A run's credit budget: how many new jobs may still be created.

A job's cost is known once its backend reports it (``costs``, in credits). New jobs are
created while what was spent, plus an estimate for the jobs still open (the mean cost of the
jobs that reported one), plus one more job, stays within the budget. Until a first job
reports its cost, one job runs alone to learn it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from eoextract.jobs.db import JobDatabase

_log = logging.getLogger("eoextract.jobs.manager")


@dataclass
class Budget:
    """A credit budget for one run.

    Attributes:
        credits: The most the run may spend, in the backends' credits.
        reached: The budget stopped the creation of new jobs.
        spent: Credits spent when last checked.
    """

    credits: float
    reached: bool = False
    spent: float = 0.0
    #: New jobs that may still be created until the next :meth:`refresh` (None: no limit).
    left: int | None = 0
    _warned: bool = False

    def refresh(self, db: JobDatabase, open_jobs: int) -> None:
        """Work out :attr:`left` from the costs reported so far (once per poll: costs only
        arrive with the backends' answers)."""
        self.left = self.room(db, open_jobs)

    def take(self, n: int) -> None:
        """``n`` new jobs were created."""
        if self.left is not None:
            self.left = max(0, self.left - n)

    def room(self, db: JobDatabase, open_jobs: int) -> int | None:
        """How many new jobs may be created now (None: no limit, the backends report no costs)."""
        totals = db.cost_totals()
        self.spent = totals.spent
        if totals.jobs_with_costs == 0:
            if totals.ended_without_costs:
                if not self._warned:
                    _log.warning("budget of %s credits not enforced: the backends report no costs",
                                 self.credits)
                    self._warned = True
                return None
            return 1 if open_jobs == 0 and self.credits > 0 else 0  # learn a job's cost first
        per_job = totals.spent / totals.jobs_with_costs
        left = self.credits - totals.spent - per_job * open_jobs
        room = max(0, math.floor(left / per_job)) if per_job > 0 else None
        if room == 0 and not self.reached:
            _log.warning("budget reached: %.2f of %s credits spent, %d job(s) still running (about "
                         "%.2f credits each); no new job is created. Run again with a higher budget "
                         "to go on.", totals.spent, self.credits, open_jobs, per_job)
        self.reached = room == 0
        return room
