"""The dashboard's shared parts, one job per module; pages import this package as `ui`.

frame: page set-up, sidebar, links · selection: what the user chose · caches: per-process heavy objects ·
widgets: forms and downloads · run_picker: the run picker and table · analysis_context: a run against its
pretrained model.
Formatting shared with the CLI lives in clipsvd.formatting (no Streamlit there).
"""
from clipsvd.app.analysis_context import (
    AnalysisContext,
    analysis_context,
    analysis_images,
    head_ranking,
    heads_note,
    number_columns,
    pick_heads_measure,
    unchanged_note,
)
from clipsvd.app.caches import built_model, cached_dataset, job_registry, pretrained_model, restored_run
from clipsvd.app.frame import ANALYSIS_PAGES, NO_BIOMEDICAL_NOTE, PAGES, flash, page_header, page_link, show_flash
from clipsvd.app.run_picker import RUN_COLUMN_ORDER, RUN_COLUMNS, load_runs, pick_run, run_title, runs_table
from clipsvd.app.selection import (
    DATA_SEED_KEY,
    DATASET_KEY,
    DEFAULT_DATASET_SPEC,
    JOB_KEY,
    MODEL_KEY,
    RUN_KEY,
    SHOTS_KEY,
    data_seed,
    dataset_label,
    dataset_spec,
    device,
    model_label,
    model_notice,
    model_spec,
    run_model_label,
    run_model_notice,
    run_store,
    runs_root,
    shots,
)
from clipsvd.app.widgets import computed_once, figure_downloads, hyperparameter_form, table_download, try_call
from clipsvd.formatting import bytes_text, file_stem, fraction_text, number_text, percent, seconds_text, shots_label

__all__ = [
    "ANALYSIS_PAGES", "AnalysisContext", "DATASET_KEY", "DATA_SEED_KEY", "DEFAULT_DATASET_SPEC", "JOB_KEY", "MODEL_KEY",
    "NO_BIOMEDICAL_NOTE", "PAGES", "RUN_COLUMNS", "RUN_COLUMN_ORDER", "RUN_KEY", "SHOTS_KEY", "analysis_context",
    "analysis_images", "built_model", "bytes_text", "cached_dataset", "computed_once", "data_seed", "dataset_label", "dataset_spec",
    "device", "figure_downloads", "file_stem", "flash", "fraction_text", "head_ranking", "heads_note",
    "hyperparameter_form", "job_registry", "load_runs", "model_label", "model_notice", "model_spec", "number_columns",
    "number_text", "page_header", "page_link", "percent", "pick_heads_measure", "pick_run", "pretrained_model",
    "restored_run", "run_model_label", "run_model_notice", "run_store", "run_title", "runs_table", "runs_root",
    "seconds_text", "shots", "shots_label", "show_flash", "table_download", "try_call", "unchanged_note"
]
