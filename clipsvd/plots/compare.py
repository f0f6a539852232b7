"""Figures comparing methods across runs: mean ± std bars and per-class accuracy."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from clipsvd.plots.style import SEQUENTIAL, method_color, shorten, styled

METRIC_TITLES = {"accuracy": "accuracy (%)", "base": "base accuracy (%)", "novel": "novel accuracy (%)",
                 "hm": "harmonic mean (%)", "target_average": "target average (%)",
                 "train_seconds": "training time (s)"}


PATTERNS = ("", "/", ".")


def method_bars(summary: pd.DataFrame, metrics: list[str], title: str | None = None, subtitle: str | None = None
                ) -> go.Figure:
    """Grouped bars of `<metric>_mean`, one group per method (`summary` is `compare_methods` output for one
    dataset/protocol/shots). Error bars (`<metric>_std`) only on methods with two or more seeds: plotly draws a
    missing std as a zero-length bar, which would claim no spread, so one-seed methods are a second trace in the
    same slot (offsetgroup) without error bars. `subtitle` says what the numbers were measured on."""
    fig = go.Figure()
    methods = summary["method"].astype(str).tolist()
    several = pd.to_numeric(summary["n"], errors="coerce").fillna(0) >= 2
    for i, metric in enumerate(metrics):
        std = summary.get(f"{metric}_std")
        for spread, rows in ((True, summary[several]), (False, summary[~several])):
            if rows.empty:
                continue
            fig.add_trace(go.Bar(
                x=rows["method"], y=rows[f"{metric}_mean"], name=METRIC_TITLES.get(metric, metric),
                offsetgroup=metric, legendgroup=metric, showlegend=spread or not several.any(),
                # each bar in its method's colour (the same on every page); metrics told apart by pattern
                marker=dict(color=[method_color(str(m)) for m in rows["method"]],
                            pattern_shape=PATTERNS[i % len(PATTERNS)], line=dict(color="#333333", width=0.5)),
                error_y=dict(type="data", array=rows[f"{metric}_std"].fillna(0).to_list(), visible=True)
                if spread and std is not None else None,
                customdata=rows["n"],
                hovertemplate="%{x}: %{y:.2f} (%{customdata} seeds, ± std)<extra></extra>" if spread else
                "%{x}: %{y:.2f} (1 seed: no spread)<extra></extra>",
            ))
    fig.update_xaxes(title_text="method", type="category", categoryorder="array", categoryarray=methods)
    fig.update_yaxes(title_text=" / ".join(METRIC_TITLES.get(m, m) for m in metrics), rangemode="tozero")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    if not several.any():
        default = "Methods: 1 seed each (no spread shown)"
    elif several.all():
        default = "Methods: mean ± std over seeds"
    else:
        default = "Methods: mean ± std over seeds (1-seed methods: value alone)"
    return _with_subtitle(styled(fig, title or default, height=420), subtitle)


def _with_subtitle(fig: go.Figure, subtitle: str | None) -> go.Figure:
    """What the numbers were measured on, as the title's second line: it travels with every export."""
    if subtitle:
        fig.update_layout(title_subtitle_text=subtitle, margin_t=90)
    return fig


def per_class_heatmap(per_class: pd.DataFrame, title: str | None = None, subtitle: str | None = None) -> go.Figure:
    """Method × class grid of mean per-class accuracy (`per_class_accuracy` output); `subtitle` says what the
    numbers were measured on."""
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
    return _with_subtitle(styled(fig, title or "Per-class accuracy (mean over seeds)", height=220 + 40 * len(grid)),
                          subtitle)
