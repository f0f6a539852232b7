"""The on-disk run store."""
from clipsvd.runs.aggregate import (
    aggregate,
    clear_best,
    common_seeds,
    compare_methods,
    mean_std_text,
    per_class_accuracy,
    run_per_class_table,
    shots_table,
)
from clipsvd.runs.status import RunStatus
from clipsvd.runs.store import ADAPTER_FILE, RUNS_ENV, SUMMARY_COLUMNS, Run, RunStore, default_runs_root

__all__ = [
    "aggregate", "clear_best", "common_seeds", "compare_methods", "mean_std_text", "per_class_accuracy", "run_per_class_table",
    "shots_table", "ADAPTER_FILE", "RUNS_ENV", "SUMMARY_COLUMNS", "Run", "RunStatus", "RunStore", "default_runs_root",
]
