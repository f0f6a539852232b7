"""Compare: methods side by side over the same dataset, protocol, shots and seeds."""
import pandas as pd
import streamlit as st

from clipsvd import app as ui
from clipsvd.app.text import md
from clipsvd.choices import TRANSFER_PROTOCOLS
from clipsvd.formatting import bytes_text, fraction_text
from clipsvd.models import UNTRAINED_LABEL
from clipsvd.plots.compare import method_bars, per_class_heatmap
from clipsvd.reproduce.transfer import target_names, transfer_rows, transfer_summary, transfer_view
from clipsvd.runs import RunStatus, clear_best, common_seeds, compare_methods, mean_std_text, per_class_accuracy, shots_table
from clipsvd.runs.aggregate import GROUP_BY, measured_on_text, seeds_text, test_images_of

SCORE_COLUMNS = {"few-shot": ["accuracy"], "base2novel": ["base", "novel", "hm"],
                 **{p: ["accuracy", "target_average"] for p in TRANSFER_PROTOCOLS}}


def most_runs_first(table: pd.DataFrame, column: str) -> list:
    """Options of a filter, the value with the most runs first (the default choice)."""
    return table[column].dropna().value_counts().index.tolist()


def choose(table: pd.DataFrame) -> tuple[pd.DataFrame, str, pd.DataFrame] | None:
    """Top row of filters; returns the completed runs to compare, their protocol, and the same runs at every K."""
    done = table[table["status"] == RunStatus.COMPLETED]
    if done.empty:
        st.info("No completed runs yet: train at least one on the Train page.")
        ui.page_link("train")
        return None
    sweeps = sorted(done["sweep"].dropna().unique())
    if sweeps:
        sweep = st.selectbox("Sweep", ["all runs", *sweeps], key="_w_cmp_sweep",
                             help="Runs of one `python -m clipsvd sweep` grid, or every run in the store.")
        done = done if sweep == "all runs" else done[done["sweep"] == sweep]
    c1, c2, c3, c4 = st.columns(4)
    model = c1.selectbox("Model", most_runs_first(done, "model"), key="_w_cmp_model")
    part = done[done["model"] == model]
    if UNTRAINED_LABEL in model:
        st.warning(f"These runs start from **{md(model)}**: random weights, so the scores compare untrained networks.",
                   icon="⚠️")
    dataset = c2.selectbox("Dataset", most_runs_first(part, "dataset"), key="_w_cmp_dataset")
    part = part[part["dataset"] == dataset]
    protocol = c3.selectbox("Protocol", most_runs_first(part, "protocol"), key="_w_cmp_protocol")
    part = part[part["protocol"] == protocol]
    every_k = part
    shot_values = sorted(part["shots"].unique(), key=lambda v: (pd.isna(v), v))
    shots = c4.selectbox("Shots", shot_values, key="_w_cmp_shots",
                         format_func=lambda v: "all" if pd.isna(v) else f"{int(v)}-shot")
    part = part[part["shots"].isna()] if pd.isna(shots) else part[part["shots"] == shots]
    m1, m2 = st.columns([3, 1])
    # One selection per filter combination: switching protocol or K shows every method it has, not a stale subset.
    methods = m1.multiselect("Methods", sorted(part["method"].unique()), default=sorted(part["method"].unique()),
                             key=ui.file_stem("_w_cmp_methods", model, dataset, protocol, shots))
    part = part[part["method"].isin(methods)]
    every_k = every_k[every_k["method"].isin(methods)]
    same = m2.toggle("Common seeds only", value=True, key="_w_cmp_same_seeds",
                     help="Average only over seeds every chosen method has: other averages are not comparable.")
    seeds = common_seeds(part)
    if same:
        if not seeds and not part.empty:
            st.warning("These methods share no seed; showing every run instead.")
        else:
            left_out = int((~part["seed"].isin(seeds)).sum())
            part = part[part["seed"].isin(seeds)]
            if left_out:
                st.caption(f"{left_out} run(s) left out: their seeds are not shared by every chosen method.")
    return part, protocol, every_k


def comparison_view(summary: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """`compare_methods` output as the table a reader wants: one row per method, numbers as text."""
    scores = SCORE_COLUMNS.get(protocol, ["accuracy"])
    rows = []
    for _, row in summary.iterrows():
        out = {"method": row["method"], "runs": int(row["n"]), "seeds": row.get("seeds", ""),
               "test images": row.get("test_images", "—")}
        for metric in scores:
            out[{"hm": "HM (avg of runs)", "target_average": "target average"}.get(metric, metric)] = \
                mean_std_text(row, metric)
        if protocol == "base2novel":
            hm = row.get("hm_of_averages")
            out["HM (of avgs)"] = "—" if hm is None or pd.isna(hm) else f"{hm:.2f}"
        out["trainable"] = "—" if pd.isna(row.get("trainable")) else f"{int(row['trainable']):,}"
        out["trainable share"] = fraction_text(row.get("trainable_fraction")) or "—"
        out["train time (s)"] = mean_std_text(row, "train_seconds")
        out["checkpoint"] = bytes_text(row.get("checkpoint_bytes"))
        rows.append(out)
    return pd.DataFrame(rows)


def headline(summary: pd.DataFrame, protocol: str) -> None:
    metric = "hm" if protocol == "base2novel" else "accuracy"
    ranked = summary.dropna(subset=[f"{metric}_mean"]).sort_values(f"{metric}_mean", ascending=False)
    if ranked.empty:
        return
    best, why = clear_best(summary, metric)
    top = ranked.iloc[0]
    cols = st.columns(4)
    cols[0].metric("Best method", best or "no clear best", help=why)
    cols[1].metric(f"{'HM' if metric == 'hm' else 'Accuracy'} of {top['method']}", mean_std_text(top, metric, " %"),
                   seeds_text(top["n"]), delta_color="off", delta_arrow="off",
                   help=f"{int(top['n'])} run(s); test images per run: {top.get('test_images', '—')}")
    cols[2].metric("Methods compared", len(summary))
    cols[3].metric("Runs", int(summary["n"].sum()))


def transfer_section(part: pd.DataFrame, stem: str) -> None:
    """Cross-dataset / domain generalisation: the source, each target and their average per method, beside the
    published average (clipsvd.reproduce.transfer)."""
    rows = transfer_rows(ui.load_runs(part["run_id"].tolist()))
    if rows.empty:
        return
    targets = target_names(rows)
    summary = transfer_summary(rows)
    st.subheader("Source, targets and their average")
    st.dataframe(transfer_view(summary, targets), hide_index=True, width="stretch")
    st.caption(f"Trained on {md(rows['dataset'].iloc[0])} (source), then scored unchanged on {len(targets)} "
               "target(s); mean ± std over seeds. The source accuracy uses the test images above; each target its "
               "whole test split unless a per-class cap was set.")
    ui.table_download(summary, ui.file_stem("transfer", stem), key="transfer")


def results(part: pd.DataFrame, protocol: str, every_k: pd.DataFrame) -> None:
    summary = compare_methods(part, ("model", *GROUP_BY))  # the model column travels into the CSV
    first = part.iloc[0]
    stem = ui.file_stem(first["model"].split(" ")[0], first["dataset"], protocol,
                        "all" if pd.isna(first["shots"]) else f"{int(first['shots'])}shot")
    if summary.empty:
        st.info("No completed runs match these filters.")
        return
    headline(summary, protocol)
    measured_on = measured_on_text(part)
    st.subheader("Scores and costs")
    st.dataframe(comparison_view(summary, protocol), hide_index=True, width="stretch")
    st.caption(measured_on + " Mean ± std over seeds; a method with 1 seed shows its value alone (no spread).")
    ui.table_download(summary, ui.file_stem("comparison", stem), key="summary")
    if protocol == "base2novel":
        st.caption("HM (avg of runs) averages each run's harmonic mean; HM (of avgs) is the harmonic mean of the "
                   "averaged base and novel accuracies. Papers use either; both are shown.")
    if protocol in TRANSFER_PROTOCOLS:
        transfer_section(part, stem)
    fig = method_bars(summary, SCORE_COLUMNS.get(protocol, ["accuracy"]), subtitle=measured_on)
    st.plotly_chart(fig, key="method-bars")
    ui.figure_downloads(fig, ui.file_stem("methods-mean-std", stem), key="bars")
    if every_k["shots"].nunique(dropna=False) > 1:
        st.subheader("Across shots")
        metric = "hm" if protocol == "base2novel" else "accuracy"
        across = shots_table(every_k, metric)
        st.dataframe(across, hide_index=True, width="stretch")
        across_on = measured_on_text(every_k)
        st.caption("Mean ± std over seeds (number of runs; 1 run: the value alone), every K of these methods: the "
                   f"papers' table layout. {across_on}")
        ui.table_download(across.assign(model=first["model"], dataset=first["dataset"],
                                        test_images=test_images_of(every_k)),
                          ui.file_stem("shots-table", metric, stem), key="shots-table")

    st.subheader("Per-class accuracy")
    runs = ui.load_runs(part["run_id"].tolist())
    split = "per_class"
    if protocol == "base2novel":
        split = st.radio("Classes", ["per_class_base", "per_class_novel"], horizontal=True, key="_w_cmp_split",
                         format_func=lambda s: s.rsplit("_", 1)[1])
    per_class = per_class_accuracy(runs, split)
    if per_class.empty:
        st.caption("No per-class accuracy in these runs.")
        return
    heat = per_class_heatmap(per_class, subtitle=measured_on)
    st.plotly_chart(heat, key="per-class-heatmap")
    ui.figure_downloads(heat, ui.file_stem("per-class-accuracy", stem), key="heat")
    with st.expander("Per-class table"):
        st.dataframe(per_class, hide_index=True, width="stretch")
        ui.table_download(per_class.assign(model=first["model"], dataset=first["dataset"],
                                           test_images=test_images_of(part)),
                          ui.file_stem("per-class-accuracy", stem), key="per-class")
    with st.expander(f"The {len(part)} runs compared"):
        st.dataframe(part, hide_index=True, width="stretch", column_config=ui.RUN_COLUMNS,
                     column_order=ui.RUN_COLUMN_ORDER)
        ui.table_download(part, ui.file_stem("runs-compared", stem), key="runs-compared")


ui.page_header("Compare", "Methods side by side on the same data, K and seeds: mean ± std, base/novel/HM, and cost.")
table = ui.try_call(ui.runs_table, ui.run_store())
chosen = choose(table) if table is not None else None
if chosen is not None:
    st.divider()
    results(*chosen)
