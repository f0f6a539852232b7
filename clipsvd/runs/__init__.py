"""The on-disk run store."""
from clipsvd.runs.aggregate import aggregate, common_seeds, compare_methods, per_class_accuracy, shots_table
from clipsvd.runs.store import ADAPTER_FILE, RUNS_ENV, Run, RunStore, default_runs_root

__all__ = [
    "aggregate", "common_seeds", "compare_methods", "per_class_accuracy", "shots_table", "ADAPTER_FILE", "RUNS_ENV", "Run",
    "RunStore", "default_runs_root",
]
