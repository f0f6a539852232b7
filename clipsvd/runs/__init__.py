"""The on-disk run store."""
from clipsvd.runs.aggregate import aggregate
from clipsvd.runs.store import ADAPTER_FILE, RUNS_ENV, Run, RunStore, default_runs_root

__all__ = ["aggregate", "ADAPTER_FILE", "RUNS_ENV", "Run", "RunStore", "default_runs_root"]
