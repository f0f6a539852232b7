"""Stored runs on the pages: the run picker, one-line titles, the runs table and its column formats."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from clipsvd.app import selection
from clipsvd.app.text import md
from clipsvd.app.frame import page_link
from clipsvd.errors import ClipsvdError
from clipsvd.formatting import config_title
from clipsvd.runs import SUMMARY_COLUMNS, Run, RunStatus, RunStore

RUN_COLUMN_ORDER = ["run_id", "status", "method", "dataset", "protocol", "shots", "seed", "accuracy", "base", "novel",
                    "hm", "target_average", "test_images", "trainable", "trainable_fraction", "train_seconds", "checkpoint_bytes", "model",
                    "created"]
RUN_COLUMNS = {
    "accuracy": st.column_config.NumberColumn("accuracy %", format="%.2f"),
    "base": st.column_config.NumberColumn("base %", format="%.2f"),
    "novel": st.column_config.NumberColumn("novel %", format="%.2f"),
    "hm": st.column_config.NumberColumn("HM %", format="%.2f"),
    "target_average": st.column_config.NumberColumn("target avg %", format="%.2f", help="Cross-dataset / domain "
                                                    "generalisation: the mean accuracy over the run's targets"),
    "test_images": st.column_config.TextColumn("test images", help="Test images the scores were measured on: n of N "
                                               "(N: the whole test split; ?: not recorded by older runs)"),
    "trainable": st.column_config.NumberColumn("trainable", format="localized"),
    "trainable_fraction": st.column_config.NumberColumn("trainable share", format="percent"),
    "train_seconds": st.column_config.NumberColumn("train s", format="%.1f"),
    "checkpoint_bytes": st.column_config.NumberColumn("checkpoint bytes", format="localized"),
}


def runs_table(store: RunStore) -> pd.DataFrame:
    """The store's table with the full model label (architecture, weights source and format, activation) as "model"."""
    rows = [{**run.summary(), "model": selection.run_model_label(run)} for run in store.list()]
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    numeric = ["accuracy", "base", "novel", "hm", "target_average", "trainable", "trainable_fraction", "train_seconds",
               "checkpoint_bytes"]
    return table.astype({c: "float64" for c in numeric})  # None -> NaN: shown blank, sorted as numbers


def load_runs(run_ids: list[str]) -> list[Run]:
    store = selection.run_store()
    return [store.load(run_id) for run_id in run_ids]


def run_title(run: Run) -> str:
    cfg, m = run.config, run.metrics
    score = m.get("hm") if m.get("hm") is not None else m.get("accuracy")
    score_text = f" · {score:.1f}%" if isinstance(score, (int, float)) else ""
    imported = cfg.get("imported")
    if imported:  # no data of its own: its label, and the dataset it was evaluated on once it was
        evaluated = (imported.get("evaluated_on") or {}).get("name")
        title = f"{cfg.get('method')} · {imported.get('label')} · " + (
            f"evaluated on {evaluated}" if evaluated else "not evaluated yet")
    else:
        title = config_title(cfg.get("method"), (cfg.get("dataset") or {}).get("name"), cfg.get("shots"),
                             cfg.get("seed"))
    return f"{title} · {run.status}{score_text} · {run.run_id}"


def pick_run(label: str = "Run", statuses: tuple[RunStatus, ...] = (RunStatus.COMPLETED,), key: str = "pick_run") -> Run | None:
    """A run chosen from the store; the choice follows ?run=<id> and is remembered across pages."""
    store = selection.run_store()
    try:
        runs = [r for r in store.list() if r.status in statuses]
    except ClipsvdError as exc:
        st.error(md(exc))  # names a run folder or store path
        return None
    if not runs:
        st.info(f"No {' or '.join(statuses)} runs in {md(store.root)} yet. Train one on the Train page.",
                icon=":material/info:")
        page_link("train")
        return None
    ids = [r.run_id for r in runs]
    wanted = st.query_params.get("run") or st.session_state.get(selection.RUN_KEY)
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox(label, ids, index=index, key=f"_w_{key}",
                          format_func=lambda run_id: run_title(runs[ids.index(run_id)]))
    st.session_state[selection.RUN_KEY] = chosen
    selection.remember_selection()
    return runs[ids.index(chosen)]
