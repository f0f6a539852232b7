"""Figures comparing methods across runs: mean ± std bars and per-class accuracy."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from clipsvd.plots.style import SEQUENTIAL, method_color, shorten, styled

METRIC_TITLES = {"accuracy": "accuracy (%)", "base": "base accuracy (%)", "novel": "novel accuracy (%)",
                 "hm": "harmonic mean (%)", "train_seconds": "training time (s)"}


PATTERNS = ("", "/", ".")


def method_bars(summary: pd.DataFrame, metrics: list[str], title: str | None = None) -> go.Figure:
    """Grouped bars of `<metric>_mean` with `<metric>_std` error bars, one group per method
    (`summary` is `compare_methods` output for one dataset/protocol/shots)."""
    fig = go.Figure()
    for i, metric in enumerate(metrics):
        std = summary.get(f"{metric}_std")
        fig.add_trace(go.Bar(
            x=summary["method"], y=summary[f"{metric}_mean"], name=METRIC_TITLES.get(metric, metric),
            # each bar in its method's colour (the same on every page); metrics told apart by pattern
            marker=dict(color=[method_color(str(m)) for m in summary["method"]],
                        pattern_shape=PATTERNS[i % len(PATTERNS)], line=dict(color="#333333", width=0.5)),
            # no bar where std is unknown (one seed): a zero-length bar would claim no spread
            error_y=dict(type="data", array=[None if pd.isna(v) else v for v in std], visible=True)
            if std is not None else None,
            customdata=summary["n"], hovertemplate="%{x}: %{y:.2f} (n=%{customdata})<extra></extra>",
        ))
    fig.update_xaxes(title_text="method", type="category")
    fig.update_yaxes(title_text=" / ".join(METRIC_TITLES.get(m, m) for m in metrics), rangemode="tozero")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return styled(fig, title or "Methods: mean ± std over seeds", height=420)


def per_class_heatmap(per_class: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Method × class grid of mean per-class accuracy (`per_class_accuracy` output)."""
    classes = list(dict.fromkeys(per_class["class"]))
    grid = per_class.pivot_table(index="method", columns="class", values="mean", aggfunc="first").reindex(
        columns=classes)
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=[shorten(c, 24) for c in classes], y=grid.index.to_list(), colorscale=SEQUENTIAL,
        zmin=0, zmax=100, colorbar=dict(title=dict(text="accuracy (%)", side="right")),
        customdata=[classes] * len(grid), text=grid.round(1).to_numpy(), texttemplate="%{text}" if
        grid.size <= 200 else None,
        hovertemplate="%{y} · %{customdata}<br>%{z:.1f}%<extra></extra>",
    ))
    fig.update_xaxes(title_text="class", type="category", tickangle=-40 if len(classes) > 8 else 0)
    fig.update_yaxes(title_text="method", type="category")
    return styled(fig, title or "Per-class accuracy (mean over seeds)", height=220 + 40 * len(grid))
