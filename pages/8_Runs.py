"""Runs: every run in the store as a table; one run's details, its bundle, and deleting it."""
import pandas as pd
import streamlit as st

from clipsvd import app as ui
from clipsvd.analysis.prompts import nearest_reading, nearest_words
from clipsvd.app.selection import valid_run_id
from clipsvd.app.text import md
from clipsvd.methods import available_methods, get_method
from clipsvd.plots.training import history_figure
from clipsvd.formatting import test_images_text
from clipsvd.report.latex import transfer_latex
from clipsvd.runs import Run, RunStatus, run_per_class_table, run_transfer_table
from clipsvd.runs.aggregate import evaluated_images, history_table

STATUSES = (RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.DIVERGED, RunStatus.FAILED)


def runs_table() -> pd.DataFrame | None:
    store = ui.run_store()
    table = ui.try_call(ui.runs_table, store)
    if table is None:
        return None
    st.caption(f"{len(table)} run(s) in {md(store.root)}")
    if table.empty:
        st.info("The run store is empty. Train a run on the Train page.")
        ui.page_link("train")
        return table
    st.dataframe(table, hide_index=True, width="stretch", column_config=ui.RUN_COLUMNS,
                 column_order=ui.RUN_COLUMN_ORDER)
    ui.table_download(table, "runs", key="runs-table", label="Runs table (CSV)")
    return table


PROMPT_STATUSES = (RunStatus.COMPLETED, RunStatus.CANCELLED)  # runs whose trained tensors were saved


@st.cache_data(show_spinner="Searching the vocabulary for the learned context's nearest words…", max_entries=8)
def prompt_words(root: str, run_id: str, device: str, k: int):
    return nearest_words(ui.restored_run(root, run_id, device)[1], k)


def learned_prompt(run: Run) -> None:
    """CoOp's interpretation (Zhou et al. §4.5): each learned context vector's nearest vocabulary words."""
    st.caption("The vocabulary tokens nearest (Euclidean, in the token-embedding space) to each learned context "
               "vector, as the CoOp paper reads its prompts. Learned vectors need not lie near any word: a large "
               "distance says the vector is not a word.")
    k = st.slider("Nearest words per vector", 1, 10, 3, key="_w_prompt_k")
    words = ui.try_call(prompt_words, str(run.path.parent), run.run_id, ui.device(), k)
    if words is None:
        return
    reading = nearest_reading(words)
    st.dataframe(reading, hide_index=True, width="stretch", column_config=ui.number_columns(reading))
    st.dataframe(words, hide_index=True, width="stretch", column_config=ui.number_columns(words))
    ui.table_download(words, ui.file_stem(run.run_id, "context-nearest-words", f"k{k}"), key="prompt-words")


def transfer(run: Run, table: pd.DataFrame) -> None:
    """A cross-dataset / domain-generalization run: the source it trained on, each target scored unchanged, and
    the target average, as the papers' transfer tables print them."""
    st.caption(f"{md(run.config.get('protocol'))}: trained on {md(table['dataset'].iloc[0])} (the accuracy above) and "
               "scored unchanged on each target; the target average is the unweighted mean over the targets, — "
               "where a target has no score (a method that cannot score new classes).")
    st.dataframe(table, hide_index=True, width="stretch", column_config=ui.number_columns(table))
    row = st.container(horizontal=True, gap="small")
    with row:
        ui.table_download(table, ui.file_stem(run.run_id, "targets"), key="targets")
        st.download_button("LaTeX (booktabs)", transfer_latex(run),
                           file_name=f"{ui.file_stem(run.run_id, 'targets')}.tex",
                           mime="text/x-tex", key="dl-targets-tex", on_click="ignore", icon=":material/download:")


def details(run: Run) -> None:
    ui.run_model_notice(run)
    if run.message:
        (st.warning if run.status != RunStatus.COMPLETED else st.info)(f"{run.status}: {md(run.message)}")
    m = run.metrics
    cols = st.columns(6)
    if m.get("hm") is not None or "base" in m:
        cols[0].metric("Base", ui.percent(m.get("base")))
        cols[1].metric("Novel", ui.percent(m.get("novel")))
        cols[2].metric("HM", ui.percent(m.get("hm")))
    else:
        cols[0].metric("Accuracy", ui.percent(m.get("accuracy")))
        cols[1].metric("Test images", test_images_text(*evaluated_images(m, run.config)),
                       help="Test images scored: n of N (N: the whole test split; ?: not recorded by older runs)")
        cols[2].metric("Training steps", m.get("steps", "—"))
    cols[3].metric("Trainable", f"{m.get('trainable', 0):,}", ui.fraction_text(m.get("trainable_fraction")),
                   delta_color="off", delta_arrow="off")
    cols[4].metric("Train time", ui.seconds_text(m.get("train_seconds")))
    cols[5].metric("Checkpoint", ui.bytes_text(m.get("checkpoint_bytes")))

    name = run.config.get("method")
    prompt = name in available_methods() and get_method(name).learns_context and run.status in PROMPT_STATUSES
    targets = run_transfer_table(run)
    tabs = st.tabs((["Source and targets"] if len(targets) else []) + ["Training curve", "Per-class accuracy", "Config"]
                   + (["Learned prompt"] if prompt else []))
    if len(targets):
        with tabs[0]:
            transfer(run, targets)
        tabs = tabs[1:]
    curves, per_class, config = tabs[:3]
    if prompt:
        with tabs[3]:
            learned_prompt(run)
    with curves:
        if run.history:
            history = history_table(run.history)  # train accuracy in %, as every accuracy here
            fig = history_figure(history)
            st.plotly_chart(fig, key="history-chart")
            ui.figure_downloads(fig, ui.file_stem(run.run_id, "training-curve"), key="history")
            st.dataframe(history, hide_index=True, width="stretch")
            ui.table_download(history, ui.file_stem(run.run_id, "history"), key="history")
        else:
            st.caption("No finished epoch recorded.")
    with per_class:
        table = run_per_class_table(run)
        if table.empty:
            st.caption("No per-class accuracy (the run did not reach evaluation).")
        else:
            st.dataframe(table, hide_index=True, width="stretch")
            ui.table_download(table, ui.file_stem(run.run_id, "per-class"), key="per-class")
    with config:
        st.json(run.config, expanded=False)
        st.json(run.metrics, expanded=False)


def actions(run: Run) -> None:
    """Bundle download, and delete behind an explicit confirmation."""
    store = ui.run_store()
    row = st.container(horizontal=True, gap="small")
    row.download_button("Download run bundle (zip)", data=lambda: store.bundle(run.run_id),
                        file_name=f"{run.run_id}.zip", mime="application/zip", on_click="ignore",
                        icon=":material/folder_zip:", key="bundle")
    if row.button("Delete run", icon=":material/delete:", key="delete_run"):
        st.session_state["confirm_delete"] = run.run_id
    if st.session_state.get("confirm_delete") != run.run_id:
        return
    st.warning(f"Delete **{md(run.run_id)}** and its adapter tensors from disk? This cannot be undone.")
    confirm = st.container(horizontal=True, gap="small")
    if confirm.button("Yes, delete it", type="primary", key="confirm_delete_run"):
        st.session_state.pop("confirm_delete", None)
        # only a run listed in this store, by its own folder name: never a path the browser made up
        if ui.try_call(lambda: valid_run_id(run.run_id, store.root) and (store.delete(run.run_id) or True)):
            st.session_state.pop(ui.RUN_KEY, None)
            st.query_params.pop("run", None)
            st.toast(f"Deleted {md(run.run_id)}")
            st.rerun()
    if confirm.button("Keep it", key="keep_run"):
        st.session_state.pop("confirm_delete", None)
        st.rerun()


ui.page_header("Runs", "Every run in the store: details, training curve, per-class accuracy, bundle download, delete.")
table = runs_table()
if table is not None and not table.empty:
    st.divider()
    st.subheader("Run details")
    run = ui.pick_run("Run", statuses=STATUSES, key="runs_page")
    if run is not None:
        actions(run)
        details(run)
