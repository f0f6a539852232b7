"""Figures joining weight change and explanation shift (clipsvd.analysis.explanation_shift)."""
from __future__ import annotations

from typing import Mapping

import pandas as pd
import plotly.graph_objects as go

from clipsvd.analysis.explanation_shift import shift_correlation
from clipsvd.plots.heads import MEASURE_TITLES
from clipsvd.plots.style import AFTER_COLOR, HIGHLIGHT_COLOR, QUALITATIVE, head_label, styled

SHIFT_TITLES = {"text_shift": "text shift (share of top-k texts replaced)",
                "span_shift": "span shift (mean sin² of principal angles)"}


def shift_scatter(table: pd.DataFrame, measure: str = "ov_change", title: str | None = None) -> go.Figure:
    """Each analysed head at (weight change, explanation shift), both scores, Spearman's ρ in the legend:
    do the heads that changed most in weights also change most in words?"""
    fig = go.Figure()
    labels = [head_label(l, h) for l, h in zip(table["layer"], table["head"])]
    for column, color, symbol in (("span_shift", AFTER_COLOR, "circle"), ("text_shift", HIGHLIGHT_COLOR, "diamond")):
        name = SHIFT_TITLES[column].split(" (")[0]
        if len(table) >= 3:
            name += f", {shift_correlation(table, measure, column).text()}"
        fig.add_trace(go.Scatter(
            x=table[measure], y=table[column], mode="markers+text" if column == "span_shift" else "markers",
            text=labels if column == "span_shift" else None, textposition="top center", textfont=dict(size=10),
            name=name,
            marker=dict(color=color, symbol=symbol, size=9, opacity=0.85), customdata=labels,
            hovertemplate=f"%{{customdata}}<br>{measure} %{{x:.3g}}<br>{column} %{{y:.2f}}<extra></extra>",
        ))
    fig.update_xaxes(title_text=MEASURE_TITLES.get(measure, measure))
    fig.update_yaxes(title_text="explanation shift (0 same, 1 all new)", range=[-0.05, 1.05])
    fig.update_layout(legend=dict(orientation="h", y=-0.2, x=0, yanchor="top"))
    return styled(fig, title or "Weight change vs explanation shift, per head", height=480)


def head_comparison_bars(tables: Mapping[str, pd.DataFrame], column: str, title: str | None = None) -> go.Figure:
    """One value per head for several runs side by side (grouped bars, heads in the first run's order)."""
    fig = go.Figure()
    order: list[str] = []
    for table in tables.values():
        order += [head_label(l, h) for l, h in zip(table["layer"], table["head"]) if head_label(l, h) not in order]
    for i, (name, table) in enumerate(tables.items()):
        fig.add_trace(go.Bar(
            x=[head_label(l, h) for l, h in zip(table["layer"], table["head"])], y=table[column], name=name,
            marker_color=QUALITATIVE[i % len(QUALITATIVE)], hovertemplate=f"{name}<br>%{{x}}: %{{y:.3g}}<extra></extra>",
        ))
    label = MEASURE_TITLES.get(column) or SHIFT_TITLES.get(column, column)
    fig.update_xaxes(title_text="layer · head", type="category", categoryorder="array", categoryarray=order)
    fig.update_yaxes(title_text=label, rangemode="tozero")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))
    return styled(fig, title or label, height=420)
