"""Runs: the on-disk store, a run's record and a grid cell's identity (`cells`), statuses, and the tables and
metrics across runs (no training code: the layers above record into it)."""
from clipsvd.runs.aggregate import (
    aggregate,
    clear_best,
    common_seeds,
    compare_methods,
    mean_std_text,
    per_class_accuracy,
    run_per_class_table,
    run_target_table,
    run_transfer_table,
    shots_table,
)
from clipsvd.runs.status import CellStatus, RunStatus
from clipsvd.runs.store import (
    ADAPTER_FILE,
    RUNS_ENV,
    SUMMARY_COLUMNS,
    Run,
    RunStore,
    check_run_id,
    default_runs_root,
)

__all__ = [
    "aggregate", "clear_best", "common_seeds", "compare_methods", "mean_std_text", "per_class_accuracy",
    "run_per_class_table", "run_target_table", "run_transfer_table",
    "shots_table", "ADAPTER_FILE", "RUNS_ENV", "SUMMARY_COLUMNS", "CellStatus", "Run",
    "RunStatus", "RunStore", "check_run_id", "default_runs_root",
]
