"""The frame every page shares: page set-up, the settings sidebar, links between pages, one-shot messages."""
from __future__ import annotations

import streamlit as st

from clipsvd.app import access, selection
from clipsvd.app.caches import job_registry, warm_start
from clipsvd.app.reruns import keep_clicks
from clipsvd.app.text import md
from clipsvd.app.uploads import sweep_at_start
from clipsvd.app.widgets import try_call
from clipsvd.formatting import shots_label
from clipsvd.runs import RUNS_ENV, default_runs_root

PAGES = {
    "home": ("app.py", "Home", ":material/home:"),
    "data": ("pages/1_Model_and_data.py", "Model & data", ":material/dataset:"),
    "train": ("pages/2_Train.py", "Train", ":material/model_training:"),
    "sigma": ("pages/3_Singular_values.py", "Singular values", ":material/bar_chart:"),
    "heads": ("pages/4_Heads.py", "Heads", ":material/grid_view:"),
    "explain": ("pages/5_Explain.py", "Explain (TextSpan)", ":material/text_snippet:"),
    "embeddings": ("pages/6_Embeddings.py", "Embeddings", ":material/scatter_plot:"),
    "compare": ("pages/7_Compare.py", "Compare", ":material/compare_arrows:"),
    "runs": ("pages/8_Runs.py", "Runs", ":material/folder_open:"),
    "reproduce": ("pages/9_Reproduce.py", "Reproduce", ":material/table_chart:"),
    "verify": ("pages/10_Verify.py", "Verify", ":material/fact_check:"),
}
ANALYSIS_PAGES = ("sigma", "heads", "explain", "embeddings")
# Widget keys whose values survive a page switch (Streamlit drops a widget's value once its page is left):
# the Train form.
KEPT_WIDGET_PREFIXES = ("_w_train_", "hp-")
KEPT_VALUES_KEY = "_kept_widget_values"
JOBS_POLL_S = 3  # the sidebar's job list refreshes this often while a job runs (more often slows training)
NO_BIOMEDICAL_NOTE = (
    "**No real biomedical images ship offline.** The built-in datasets are the generated world (shape, colour "
    "and object tasks in clean, microscopy-like and sketch styles: synthetic, not real images), Animal Shape "
    "silhouettes and Fashion-MNIST. For biomedical work point a data root at your BiomedCoOp folders or "
    "MedMNIST `.npz` files (or upload a zipped ImageFolder) on **Model & data**."
)
keep_clicks()  # once per server process, when the first page imports this: no click lost to a page switch


def page_header(title: str, caption: str) -> None:
    """Same frame on every page: wide layout, the token gate (nothing else runs for a session without the token
    when served beyond localhost), the settings sidebar, a title and one line of caption."""
    st.set_page_config(page_title=f"{title} · clipsvd", layout="wide")
    access.gate()
    sweep_at_start()
    warm_start()
    selection.restore_selection()
    keep_widget_values()
    settings_sidebar()
    selection.remember_selection()
    st.title(title)
    st.caption(caption)
    selection.show_notes()


def keep_widget_values() -> None:
    """Keep the Train form's values while the user visits other pages (see KEPT_WIDGET_PREFIXES).

    Streamlit forgets a widget's value once its page is left. Each run copies the form's values into a plain
    session-state dict and writes every one back before any widget is drawn: a value written this run is one
    Streamlit sends to the browser with the widget, so the form shows it (one restored only when missing is
    used by the script but the browser draws the widget's default, as Chromium showed)."""
    kept = st.session_state.setdefault(KEPT_VALUES_KEY, {})
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith(KEPT_WIDGET_PREFIXES):
            kept[key] = st.session_state[key]
    for key, value in kept.items():
        st.session_state[key] = value


def flash(key: str, message: str) -> None:
    """Keep a success message for the next run, then rerun so every widget (sidebar too) shows the new state."""
    st.session_state[f"flash-{key}"] = message
    st.rerun()


def show_flash(key: str) -> None:
    message = st.session_state.pop(f"flash-{key}", None)
    if message:
        st.success(message, icon=":material/check_circle:")


def page_link(page: str, label: str | None = None, **query: str) -> None:
    """A link to another page of the dashboard, with query parameters (e.g. run=<id>) for the page it opens."""
    path, default_label, icon = PAGES[page]
    st.page_link(path, label=label or default_label, icon=icon, query_params=query or None)


def settings_sidebar() -> None:
    """Device and run-store folder, plus what is selected; the same on every page."""
    with st.sidebar:
        st.subheader("Settings")
        current = selection.device()
        st.session_state[selection.DEVICE_KEY] = st.selectbox(
            "Device", selection.DEVICES, index=selection.DEVICES.index(current), key="_w_device",
            help="auto: CUDA when present, else CPU. Training and analyses run here.")
        root = st.text_input("Run store folder", value=str(selection.runs_root()), key="_w_runs_root",
                             help=f"Where runs are saved and read (default ${RUNS_ENV} or ./runs).")
        root = root.strip() or str(default_runs_root())
        if try_call(access.check_path, root, "Run store folder") is not None:
            st.session_state[selection.RUNS_ROOT_KEY] = root
        st.divider()
        st.caption("Selected")
        st.markdown(f"**Model** · {md(selection.model_label(selection.model_spec()))}")
        st.markdown(f"**Data** · {md(selection.dataset_label(selection.dataset_spec()))} · "
                    f"{shots_label(selection.shots())}")
        if job_registry().active():  # polled only while something runs
            st.divider()
            server_jobs()


@st.fragment(run_every=JOBS_POLL_S)
def server_jobs() -> None:
    """The server's running and queued jobs (every tab, every session), each with its progress and a link to it."""
    jobs = job_registry().active()
    st.caption("Jobs on this server")
    if not jobs:
        st.caption("All jobs finished: their runs are on the Runs page.")
    for state in jobs:
        where = f"run {min(state.index + 1, state.total)}/{state.total}"
        title = (state.current_title or "").split(" · ")
        st.progress(state.fraction, text=f"{state.status} · {where} · {md(' · '.join(title[:2]))}")
        page_link("train", f"Open job {state.job_id}", job=state.job_id)
