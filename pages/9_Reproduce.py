"""Reproduce: a paper's table — which cells the run store holds, which are missing or running — and measured vs
published side by side. The missing cells run as a sweep on Ray (local or a cluster) in the background, with one
progress bar over the grid; without Ray installed, as a job of the dashboard's job registry."""
import importlib.util
import uuid

import pandas as pd
import streamlit as st

from clipsvd import app as ui
from clipsvd.app.access import check_path
from clipsvd.app.text import md
from clipsvd.methods import available_methods
from clipsvd.plots.reproduce import reproduce_figures
from clipsvd.reproduce import (
    DONE,
    LAYOUT_HELP,
    MISSING,
    Table,
    available_tables,
    compare,
    get_table,
    grid,
    grid_frame,
    load_data,
)
from clipsvd.reproduce.compare import measured_rows, published_view
from clipsvd.reproduce.transfer import transfer_tables, transfer_view
from clipsvd.runs import RunStatus
from clipsvd.training.estimate import measure_seconds_per_step
from clipsvd.training.sweep import BackgroundSweep, Launch

ROOT_KEY = "reproduce_data_root"
DEFAULT_TABLE = "clip-svd-few-shot-natural"
RUNNING, QUEUED = "running", "queued"
STATUS_ICONS = {DONE: "✅ measured", MISSING: "⬜ missing", RUNNING: "⏳ running", QUEUED: "🕒 queued"}
HAS_RAY = importlib.util.find_spec("ray") is not None


@st.cache_resource
def started_sweeps() -> dict[str, BackgroundSweep]:
    """Ray sweeps this page started, by id; one dict per server process: they outlive page switches and reloads."""
    return {}


@st.cache_resource
def submitted_cells() -> dict[str, list[str]]:
    """Cell keys of the jobs this page started, by job id; one dict per server process, like the job registry."""
    return {}


@st.cache_resource(ttl=120, show_spinner="Reading the datasets under the data root…", max_entries=4)
def table_data(table_name: str, root: str) -> dict:
    """Each dataset of the table read once (or why it could not be) — re-read every two minutes."""
    table = get_table(table_name)
    probe = grid(table, root, ui.model_spec(), seeds=[table.seeds[0]], shots=[table.shots[0]],
                 methods=[table.methods[0]])
    return load_data(probe)


def choose_table() -> Table:
    names = available_tables()
    kind = ui.dataset_spec().kind  # default: a table in the layout of the data chosen on Model & data
    matching = sorted((n for n in names if get_table(n).layout == kind),
                      key=lambda n: get_table(n).protocol != "few-shot")
    index = names.index(matching[0] if matching else DEFAULT_TABLE)
    name = st.selectbox("Published table", names, index=index, key="_w_rep_table",
                        format_func=lambda n: f"{get_table(n).title}  ·  {n}")
    table = get_table(name)
    sources = "  \n".join(f"Published numbers: {table.source_text(key)}" for key in table.sources)
    st.caption(f"{table.protocol} · {table.backbone} backbone ({table.model}) · data in {table.layout} layout · "
               f"{len(table.datasets)} datasets · K {', '.join(map(str, table.shots))} · seeds "
               f"{', '.join(map(str, table.seeds))}  \n{sources}  \nGrid: {table.grid_source}  \n"
               f"Per dataset: {table.per_dataset}.")
    return table


def choose_root(table: Table) -> str:
    selected = ui.dataset_spec()
    default = st.session_state.get(ROOT_KEY) or (selected.root if selected.kind == table.layout else "") or ""
    root = st.text_input("Data root", value=default, key=f"_w_rep_root-{table.layout}",
                         help=LAYOUT_HELP[table.layout]).strip()
    if root and ui.try_call(check_path, root, "Data root") is None:
        root = ""  # served beyond localhost: never looked into
    st.session_state[ROOT_KEY] = root
    return root


def choose_subset(table: Table) -> dict:
    with st.expander("Subset of the grid (default: the whole table)"):
        c1, c2, c3, c4 = st.columns(4)
        datasets = c1.multiselect("Datasets", table.datasets, default=list(table.datasets), key="_w_rep_datasets")
        shots = c2.multiselect("K", table.shots, default=list(table.shots), key="_w_rep_shots")
        seeds = c3.multiselect("Seeds", sorted(set(range(1, 11)) | set(table.seeds)), default=list(table.seeds),
                               key="_w_rep_seeds")
        methods = c4.multiselect("Methods", available_methods(), default=list(table.methods), key="_w_rep_methods",
                                 help="The table's methods; others run too but have no published row.")
        cap = st.number_input("Max test images per class (0: all; a cap is not comparable with the paper)", 0,
                              100_000, 0, key="_w_rep_cap")
    return {"datasets": datasets or None, "shots": shots or None, "seeds": seeds or None, "methods": methods or None,
            "max_test_per_class": int(cap) or None}


def mark_running(frame: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, str] | None]:
    """Cells of unfinished jobs or sweeps this page started: running or queued. Returns the active one as
    ("job" | "sweep", id)."""
    registry, active = ui.job_registry(), None
    missing = frame["status"] == MISSING
    for job_id, keys in submitted_cells().items():
        state = registry.get(job_id)
        if state is None or RunStatus(state.status).finished:
            continue
        active = ("job", job_id)
        for position, key in enumerate(keys):
            if position >= state.index:
                frame.loc[missing & (frame["key"] == key), "status"] = RUNNING if position == state.index else QUEUED
    for sweep_id, sweep in started_sweeps().items():
        if sweep.done:
            continue
        active = ("sweep", sweep_id)
        running, queued = sweep.waiting()
        frame.loc[missing & frame["key"].isin(queued), "status"] = QUEUED
        frame.loc[missing & frame["key"].isin(running), "status"] = RUNNING
    return frame, active


def ray_options() -> Launch:
    """Where the sweep runs and what each run gets (as `--address`, `--workers`, `--gpus-per-run` of the CLI)."""
    with st.expander("Where the cells run (Ray)"):
        c1, c2, c3 = st.columns(3)
        address = c1.text_input("Ray address", key="_w_rep_address", placeholder="empty: a local Ray on this machine",
                                help="'auto' when this machine belongs to a cluster started with `ray start`, or "
                                     "ray://HEAD:10001. Every node needs the package, the data root at the same path "
                                     "and the weights; results come home to this machine's run store.")
        workers = c2.number_input("Runs at once (0: as many as fit)", 0, 4096, 0, key="_w_rep_workers")
        gpus = c3.number_input("GPUs per run", min_value=0.0, value=None, step=0.25, key="_w_rep_gpus",
                               placeholder="auto: 1 when the cluster has GPUs",
                               help="Fractions share a GPU (0.5: two runs per GPU); 0: CPU only.")
    return Launch(address=address.strip() or None, workers=int(workers) or None, gpus_per_run=gpus)


def show_finished_sweeps() -> None:
    """A sweep that stopped on an error says so once; finished sweeps leave the list."""
    for sweep_id, sweep in list(started_sweeps().items()):
        if sweep.done:
            if sweep.error:
                st.error(f"The sweep stopped: {sweep.error}", icon=":material/error:")
            started_sweeps().pop(sweep_id, None)


def start_cells(table: Table, configs: list, frame: pd.DataFrame, runnable: pd.DataFrame, launch: Launch | None
                ) -> None:
    """On Ray: the cells whose data was found (those done are skipped, their sweep continued); else one job of the
    job registry running the missing ones in this process."""
    if HAS_RAY:
        cells = [configs[i] for i in frame.index[frame["data"] == "found"]]
        sweep_id = uuid.uuid4().hex[:10]
        started_sweeps()[sweep_id] = BackgroundSweep(cells, ui.run_store(), f"reproduce-{table.name}", launch)
        where = f" at {launch.address}" if launch.address else ""
        ui.flash("reproduce", f"Started a sweep of {len(runnable)} cells on Ray{where}.")
        return
    todo = [configs[i] for i in runnable.index]
    job_id = ui.try_call(ui.job_registry().submit, todo, ui.run_store())
    if job_id:
        submitted_cells()[job_id] = runnable["key"].tolist()
        st.session_state[ui.JOB_KEY] = job_id
        ui.flash("reproduce", f"Started job {job_id}: {len(todo)} cells.")


def grid_section(table: Table, root: str, subset: dict) -> list | None:
    configs = ui.try_call(grid, table, root, ui.model_spec(), subset["seeds"], subset["shots"], subset["datasets"],
                          subset["methods"], device=ui.device(), max_test_per_class=subset["max_test_per_class"])
    if configs is None:
        return None
    data = table_data(table.name, root)
    show_finished_sweeps()
    frame, active = mark_running(grid_frame(table, configs, ui.run_store(), data))
    absent = sorted(set(frame.loc[frame["data"].str.startswith("not found"), "dataset"]))
    if absent:
        st.warning(f"Not found under {md(root)}: {md(', '.join(absent))}. Expected {LAYOUT_HELP[table.layout]}. Their "
                   "cells stay missing.", icon=":material/folder_off:")
    counts = frame["status"].value_counts()
    runnable = frame[(frame["status"] == MISSING) & (frame["data"] == "found")]
    cols = st.columns(5)
    cols[0].metric("Cells", len(frame))
    cols[1].metric("Measured", int(counts.get(DONE, 0)))
    cols[2].metric("Missing", int(counts.get(MISSING, 0)))
    cols[3].metric("Running or queued", int(counts.get(RUNNING, 0) + counts.get(QUEUED, 0)))
    cols[4].metric("Steps to run", f"{int(runnable['steps'].fillna(0).sum()):,}")
    launch = ray_options() if HAS_RAY else None
    start_col, time_col = st.columns([1, 1], vertical_alignment="center")
    if start_col.button(f"Run the {len(runnable)} missing cells", type="primary",
                        disabled=runnable.empty or bool(active), key="rep-start", icon=":material/play_arrow:",
                        help="A sweep on Ray in the background (each run's GPU and CPUs from Ray, failures retried "
                             "once then recorded); finished cells never run again." if HAS_RAY else "One background "
                             "job runs them one after another in this process; finished cells never run again."):
        start_cells(table, configs, frame, runnable, launch)
    if time_col.button("Measure time per step", key="rep-time", disabled=runnable.empty,
                       help="Loads the model, attaches each method and times 3 steps after a warm-up on the first "
                            "dataset found."):
        first = runnable.index[0]
        rates = {}
        with st.spinner("Timing a few optimiser steps of each method…"):
            for method in dict.fromkeys(runnable["method"]):
                sample = next(configs[i] for i in runnable.index if configs[i].method == method
                              and configs[i].dataset.name == configs[first].dataset.name)
                rates[method] = ui.try_call(measure_seconds_per_step, sample, data.get(sample.dataset.name))
        st.session_state["rep-rates"] = {m: r for m, r in rates.items() if r is not None}
    rates = st.session_state.get("rep-rates") or {}
    if rates:
        seconds = float((runnable["steps"].fillna(0).astype(float) * runnable["method"].map(rates).fillna(0)).sum())
        st.caption("Measured here: " + ", ".join(f"{m} {r:.3f} s/step" for m, r in rates.items())
                   + f" → about {ui.seconds_text(seconds)} of training for the missing cells (evaluation not "
                     "included).")
    if active:
        (job_progress if active[0] == "job" else sweep_progress)(active[1])
    view = frame.assign(status=frame["status"].map(STATUS_ICONS)).drop(columns=["key"])
    with st.expander(f"The grid: {len(frame)} cells", expanded=len(frame) <= 60):
        st.dataframe(view, hide_index=True, width="stretch")
        ui.table_download(view, ui.file_stem("reproduce-grid", table.name), key="rep-grid")
    return configs


@st.fragment(run_every=3)
def job_progress(job_id: str) -> None:
    state = ui.job_registry().get(job_id)
    if state is None:
        return
    st.progress(state.fraction, text=f"Job {job_id}: cell {min(state.index + 1, state.total)}/{state.total} · "
                                     f"{state.current_title or state.status}")
    ui.page_link("train", "Watch it live on Train", job=job_id)
    if state.done:
        st.rerun()


@st.fragment(run_every=2)
def sweep_progress(sweep_id: str) -> None:
    sweep = started_sweeps().get(sweep_id)
    if sweep is None:
        return
    progress = sweep.snapshot()
    bar, stop = st.columns([5, 1], vertical_alignment="bottom")
    bar.progress(progress.fraction, text=f"Sweep on Ray: {progress.text()}")
    if stop.button("Cancel", key="rep-cancel", icon=":material/stop:",
                   help="Cancels the runs in flight; those that came home stay in the store, and a new start goes on."):
        sweep.cancel()
    if sweep.done:
        st.rerun()


def delta_colour(value) -> str:
    if value is None or pd.isna(value):
        return ""
    return "color: #15803d; font-weight: 600" if value >= 0 else "color: #b91c1c; font-weight: 600"


def comparison_section(table: Table, configs: list, root: str) -> None:
    comparison = ui.try_call(compare, table, ui.run_store(), configs)
    if comparison is None:
        return
    st.subheader("Measured vs published")
    if measured_rows(comparison).empty:  # one line of state; no empty chart, no downloads of nothing
        how = ("no data root given: enter the folder above" if not root else
               "press **Run the missing cells** above")
        st.info(f"Nothing of this grid is measured yet ({how}, or run `python -m clipsvd reproduce {table.name} "
                "--data-root DIR`). Below: the published numbers alone.", icon=":material/info:")
        st.dataframe(published_view(comparison), hide_index=True, width="stretch")
        return
    deltas = [c for c in comparison.columns if c.startswith("delta_")]
    numbers = [c for c in comparison.columns if c.endswith(("_mean", "_std")) or c.startswith(("published_", "hm_of",
               "average_of", "delta_")) and c not in ("published_source", "published_hm_convention")]
    texts = [c for c in comparison.columns if c not in numbers]
    styled = comparison.style.map(delta_colour, subset=deltas).format("{:.2f}", subset=numbers, na_rep="—") \
        .format(na_rep="—", subset=texts)  # no "None" cells: missing is "—" everywhere
    st.dataframe(styled, hide_index=True, width="stretch")
    ui.table_download(comparison, ui.file_stem("measured_vs_published", table.name), key="rep-compare")
    notes = [f"Per dataset: {table.per_dataset}.",
             "Δ on the average only when every dataset of the table is measured (the published average is over all)."]
    if table.protocol == "base2novel":
        notes.append("Both HM conventions: hm_of_averages (HM of the averaged base and novel) and average_of_hms "
                     "(average over datasets of each dataset's HM); Δ HM uses the convention of the published number "
                     "(published_hm_convention).")
    st.caption(" ".join(notes))
    for name, fig in reproduce_figures(comparison, table).items():
        st.plotly_chart(fig, key=f"rep-{name}")
        ui.figure_downloads(fig, ui.file_stem(table.name, name), key=f"rep-{name}")


def transfer_section() -> None:
    """The cross-dataset and domain-generalisation runs in the store, one table per model, protocol, source and K:
    source, each target, their average, and the published average (no shipped table holds these protocols)."""
    runs = ui.try_call(lambda: ui.run_store().list())
    tables = transfer_tables(runs or [])
    st.subheader("Cross-dataset and domain generalisation")
    if not tables:
        st.caption("No completed cross-dataset or domain-generalization run in the store: train one on the Train "
                   "page (protocol cross-dataset or domain-generalization, source ImageNet in the papers) or with "
                   "`python -m clipsvd train --protocol cross-dataset`.")
        return
    for i, (group, summary, targets) in enumerate(tables):
        shots = "all" if pd.isna(group["shots"]) else f"{int(group['shots'])}-shot"
        st.markdown(f"**{md(group['protocol'])}** · source {md(group['dataset'])} · {shots} · {md(group['model'])}")
        st.dataframe(transfer_view(summary, targets), hide_index=True, width="stretch")
        ui.table_download(summary, ui.file_stem("transfer", group["protocol"], group["dataset"], shots),
                          key=f"transfer-{i}")
    st.caption("Mean ± std over seeds. The official READMEs publish no cross-dataset or domain-generalisation "
               "average (the papers' tables could not be read offline), so each published column says where it "
               "would be.")


ui.page_header("Reproduce", "A paper's table: which cells are measured, missing or running, and our numbers beside "
               "the published ones.")
ui.show_flash("reproduce")
table = choose_table()
ui.model_notice()
st.caption(f"The published numbers were measured with **{table.model}**; choose it on Model & data (a local "
           "checkpoint or a filled hub cache). Nothing is downloaded.")
root = choose_root(table)
subset = choose_subset(table)
if not root:
    st.info(f"No data root yet. Give {LAYOUT_HELP[table.layout]}.", icon=":material/folder_open:")
    configs = ui.try_call(grid, table, None, ui.model_spec(), subset["seeds"], subset["shots"], subset["datasets"],
                          subset["methods"])
else:
    configs = grid_section(table, root, subset)
st.divider()
if configs is not None:
    comparison_section(table, configs, root)
st.divider()
transfer_section()
