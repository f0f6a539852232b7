"""One status for runs and jobs, everywhere (run store, training loop, dashboard jobs, sweeps).

A StrEnum: members compare equal to their strings, so config.json, run.json and tables keep the
plain words ("completed", …) and older run stores read back unchanged.
"""
from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    DIVERGED = "diverged"  # the loss became non-finite; the last finite parameters were kept
    FAILED = "failed"  # an error ended it

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)
