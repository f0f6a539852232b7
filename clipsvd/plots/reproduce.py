"""Figures of a published table beside our measurements (`clipsvd.reproduce.compare` output).

Measured values are solid with ± std over seeds; published ones are open markers (few-shot) or hatched bars
(base→novel) in the same colour as our method of that row; reference rows (methods we do not run) are grey.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from clipsvd.plots.style import method_color, styled

B2N_METRICS = (("base", "base"), ("novel", "novel"), ("hm", "HM"))
GREYS = ["#8C8C8C", "#B0B0B0", "#5E5E5E", "#C8C8C8", "#707070", "#A0A0A0"]


def _colours(comparison: pd.DataFrame) -> dict[str, str]:
    methods = [m for m in dict.fromkeys(comparison.loc[comparison["kind"] == "measured", "method"]) if m]
    return {m: method_color(m) for m in methods}


def _average(comparison: pd.DataFrame) -> pd.DataFrame:
    return comparison[comparison["dataset"] == "average"]


def _published_rows(comparison: pd.DataFrame, metric: str) -> list[tuple[str, str, pd.DataFrame]]:
    """(label, method or "", rows) of every published row with a value for `metric`, ours first."""
    part = _average(comparison)
    part = part[part[f"published_{metric}"].notna()]
    out = []
    for label, rows in part.groupby("row", sort=False):
        out.append((label, rows["method"].iloc[0] if rows["kind"].iloc[0] == "measured" else "", rows))
    return sorted(out, key=lambda item: item[1] == "")


def few_shot_average_figure(comparison: pd.DataFrame, title: str) -> go.Figure:
    """Average accuracy over datasets against K: measured (± std over seeds) and published, per method."""
    colours, fig = _colours(comparison), go.Figure()
    average = _average(comparison)
    for method, rows in average[(average["kind"] == "measured") & average["accuracy_mean"].notna()].groupby(
            "method", sort=False):
        fig.add_trace(go.Scatter(
            x=rows["shots"].astype(str), y=rows["accuracy_mean"], mode="lines+markers", name=f"{method} (measured)",
            line=dict(color=colours[method], width=2.5), marker=dict(size=9),
            error_y=_spread(rows["accuracy_std"]), customdata=rows["datasets"],
            hovertemplate="K=%{x}: %{y:.2f} (%{customdata} datasets)<extra></extra>"))
    for i, (label, method, rows) in enumerate(_published_rows(comparison, "accuracy")):
        colour = colours.get(method) or GREYS[i % len(GREYS)]
        fig.add_trace(go.Scatter(
            x=rows["shots"].astype(str), y=rows["published_accuracy"], mode="lines+markers",
            name=f"{label} (published)", line=dict(color=colour, dash="dash" if method else "dot", width=1.5),
            marker=dict(size=10, symbol="diamond-open", color=colour), customdata=rows["published_source"],
            hovertemplate="K=%{x}: %{y:.2f} published<br>%{customdata}<extra></extra>"))
    fig.update_xaxes(title_text="shots per class (K)", type="category")
    fig.update_yaxes(title_text="average accuracy over datasets (%)")
    return styled(fig, title, height=460)


def base2novel_average_figure(comparison: pd.DataFrame, title: str) -> go.Figure:
    """Base, novel and HM averaged over datasets: measured (± std over seeds) and published, per method.
    The measured HM bar follows the convention of the published number beside it (HM of averages otherwise)."""
    colours, fig = _colours(comparison), go.Figure()
    average = _average(comparison)
    names = [label for _, label in B2N_METRICS]
    for _, row in average[average["kind"] == "measured"].iterrows():
        hm_column = "average_of_hms" if row.get("published_hm_convention") == "average-of-hms" else "hm_of_averages"
        values = [row["base_mean"], row["novel_mean"], row[hm_column]]
        if all(pd.isna(v) for v in values):
            continue
        fig.add_trace(go.Bar(
            x=names, y=values, name=f"{row['method']} (measured, K={row['shots']})",
            marker_color=colours[row["method"]],
            error_y=_spread(pd.Series([row["base_std"], row["novel_std"], None], dtype="float64")),
            hovertemplate="%{x}: %{y:.2f} measured<extra></extra>"))
    seen = set()
    for i, (_, row) in enumerate(average[average["published_hm"].notna()].iterrows()):
        if row["row"] in seen:
            continue
        seen.add(row["row"])
        ours = row["kind"] == "measured"
        colour = colours.get(row["method"]) if ours else GREYS[i % len(GREYS)]
        fig.add_trace(go.Bar(
            x=names, y=[row["published_base"], row["published_novel"], row["published_hm"]],
            name=f"{row['row']} (published)", marker=dict(color=colour, pattern=dict(shape="/"),
                                                           opacity=0.75 if ours else 0.6),
            customdata=[row["published_source"]] * 3,
            hovertemplate="%{x}: %{y:.2f} published<br>%{customdata}<extra></extra>"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="average over datasets (%)", rangemode="tozero")
    return styled(fig, title, height=480)


def _spread(std: pd.Series | None) -> dict | None:
    """Error bars of a std column, or none at all when no value has a spread (one seed): plotly draws a missing
    std as a zero-length bar, which would claim there is no spread."""
    if std is None or pd.to_numeric(std, errors="coerce").isna().all():
        return None
    return dict(type="data", array=pd.to_numeric(std, errors="coerce").fillna(0).to_list(), visible=True)


def per_dataset_figure(comparison: pd.DataFrame, metric: str, shots: int | None, title: str) -> go.Figure:
    """Measured mean ± std per dataset (and the average) for one K, the published value as a marker where one
    exists (per-dataset numbers were not published: only the average has one)."""
    colours, fig = _colours(comparison), go.Figure()
    column = {"hm": "hm_of_averages"}.get(metric, f"{metric}_mean")
    part = comparison[(comparison["kind"] == "measured") & comparison[column].notna()]
    if shots is not None:
        part = part[part["shots"] == shots]
    for method, rows in part.groupby("method", sort=False):
        std = rows.get(f"{metric}_std")
        fig.add_trace(go.Bar(
            x=rows["dataset"], y=rows[column], name=f"{method} (measured)", marker_color=colours[method],
            error_y=_spread(std),
            customdata=rows["seeds"], hovertemplate="%{x}: %{y:.2f} (seeds %{customdata})<extra></extra>"))
        published = rows[rows[f"published_{metric}"].notna()]
        if not published.empty:
            fig.add_trace(go.Scatter(
                x=published["dataset"], y=published[f"published_{metric}"], mode="markers",
                name=f"{method} (published)", marker=dict(symbol="diamond", size=13, color=colours[method],
                                                          line=dict(color="#222222", width=1)),
                customdata=published["published_source"],
                hovertemplate="%{x}: %{y:.2f} published<br>%{customdata}<extra></extra>"))
    fig.update_xaxes(title_text="dataset", type="category")
    label = {"hm": "HM of seed-mean base and novel (%)"}.get(metric, f"{metric} (%)")
    fig.update_yaxes(title_text=label, rangemode="tozero")
    fig.update_layout(barmode="group")
    return styled(fig, title, height=460)


def reproduce_figures(comparison: pd.DataFrame, table) -> dict[str, go.Figure]:
    """The figures `reproduce` writes, by file stem: the average vs published, and per dataset at the largest
    measured K (for base→novel: HM)."""
    if table.protocol == "base2novel":
        average = base2novel_average_figure(comparison, f"{table.title}: measured vs published (average)")
        metric = "hm"
    else:
        average = few_shot_average_figure(comparison, f"{table.title}: measured vs published (average)")
        metric = "accuracy"
    measured = comparison[(comparison["kind"] == "measured") & (comparison["dataset"] != "average")]
    shots = int(measured["shots"].max()) if not measured.empty else None
    per_dataset = per_dataset_figure(comparison, metric, shots, f"{table.name}: per dataset"
                                     + (f", K={shots}" if shots else "") + " (published: average only)")
    return {"measured_vs_published": average, "per_dataset": per_dataset}


__all__ = ["base2novel_average_figure", "few_shot_average_figure", "per_dataset_figure", "reproduce_figures"]
