"""`reproduce`: a published table's grid run as a sweep, resumed from the run store, and compared with the
published numbers (which ship as package data with their sources, in clipsvd/reproduce/tables/)."""
from clipsvd.reproduce.compare import compare, measured_runs, write_outputs
from clipsvd.reproduce.grid import (
    LAYOUT_HELP,
    DryRun,
    dry_run,
    grid,
    grid_frame,
    load_data,
    missing_configs,
    run_missing,
)
from clipsvd.reproduce.published import AVERAGE, EXPECTED_WEIGHTS, Published, Table, available_tables, get_table
from clipsvd.runs.cells import cell_key, cell_status, config_record
from clipsvd.runs.status import CellStatus

DONE, MISSING = CellStatus.DONE, CellStatus.MISSING  # a grid cell's status, as this package has always named them

__all__ = [
    "AVERAGE", "DONE", "EXPECTED_WEIGHTS", "LAYOUT_HELP", "MISSING", "DryRun", "Published", "Table",
    "available_tables", "cell_key", "cell_status", "compare", "config_record", "dry_run", "get_table", "grid",
    "grid_frame", "load_data", "measured_runs", "missing_configs", "run_missing",
    "write_outputs",
]
