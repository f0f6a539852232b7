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
    DAMAGED = "damaged"  # a stored run whose files cannot be read (e.g. an empty metrics.json after a power loss)

    @property
    def finished(self) -> bool:
        return self not in (RunStatus.QUEUED, RunStatus.RUNNING)


class CellStatus(StrEnum):
    """A grid cell's status (`sweep`, `reproduce`): whether the run store holds a completed run of it, or, while
    a sweep runs, whether its run is in flight."""

    DONE = "done"  # the store holds a completed run that matches the cell
    MISSING = "missing"  # no completed run yet (none, or only failed, cancelled or diverged ones): it will run
    RUNNING = "running"
    QUEUED = "queued"
