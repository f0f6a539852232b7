"""Figures for per-head weight changes (clipsvd.analysis.heads)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from clipsvd.plots.style import AFTER_COLOR, SEQUENTIAL, head_label, styled

# Plain text: these titles label selectboxes, axes, hovers and the report, where TeX would show as W_O^h.
# (The Heads page's help renders the same formulas as math.)
MEASURE_TITLES = {
    "ov_change": "relative change of the head's OV circuit W_O·W_V",
    "value_change": "relative change of the head's W_V rows",
    "qk_change": "relative change of the head's QK circuit W_Qᵀ·W_K",
    "out_change": "relative change of the head's W_O columns",
    "legacy_sigma_block": "σ-block score (not per head)",
}


def head_ranking_bar(heads: pd.DataFrame, measure: str = "ov_change", top: int = 20,
                     title: str | None = None) -> go.Figure:
    """The `top` most-changed heads across layers, largest at the top."""
    best = heads.sort_values(measure, ascending=False).head(top).iloc[::-1]
    labels = [head_label(l, h) for l, h in zip(best["layer"], best["head"])]
    fig = go.Figure(go.Bar(
        x=best[measure], y=labels, orientation="h", marker_color=AFTER_COLOR,
        hovertemplate="%{y}: %{x:.3g}<extra></extra>",
    ))
    fig.update_xaxes(title_text=MEASURE_TITLES.get(measure, measure))
    fig.update_yaxes(title_text="layer · head", type="category")
    return styled(fig, title or f"Most-changed attention heads (top {len(best)})", height=160 + 22 * len(best))


def head_heatmap(heads: pd.DataFrame, measure: str = "ov_change", title: str | None = None) -> go.Figure:
    """Layer × head grid of one change measure."""
    grid = heads.pivot_table(index="layer", columns="head", values=measure, aggfunc="first").sort_index()
    label = MEASURE_TITLES.get(measure, measure)
    fig = go.Figure(go.Heatmap(
        z=grid.to_numpy(), x=grid.columns.to_list(), y=grid.index.to_list(), colorscale=SEQUENTIAL,
        zmin=0, zmax=float(grid.max().max()) or 1.0,  # from 0, so "little change" looks like it
        colorbar=dict(title=dict(text="change", side="right")),
        hovertemplate=f"layer %{{y}}, head %{{x}}<br>{label}: %{{z:.3g}}<extra></extra>",
    ))
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(title_text="layer", dtick=1, autorange="reversed")
    return styled(fig, title or f"Per-head change by layer — {label}", height=220 + 26 * len(grid))
