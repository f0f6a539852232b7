"""`reproduce`: a published table's grid run as a sweep, resumed from the run store, and compared with the
published numbers (which ship as package data with their sources, in clipsvd/reproduce/tables/)."""
from clipsvd.reproduce.compare import compare, measured_runs, write_outputs
from clipsvd.reproduce.grid import (
    DONE,
    LAYOUT_HELP,
    MISSING,
    DryRun,
    cell_key,
    cell_status,
    config_record,
    dry_run,
    grid,
    grid_frame,
    load_data,
    measure_seconds_per_step,
    missing_configs,
    run_missing,
)
from clipsvd.reproduce.published import AVERAGE, EXPECTED_WEIGHTS, Published, Table, available_tables, get_table

__all__ = [
    "AVERAGE", "DONE", "EXPECTED_WEIGHTS", "LAYOUT_HELP", "MISSING", "DryRun", "Published", "Table",
    "available_tables", "cell_key", "cell_status", "compare", "config_record", "dry_run", "get_table", "grid",
    "grid_frame", "load_data", "measure_seconds_per_step", "measured_runs", "missing_configs", "run_missing",
    "write_outputs",
]
