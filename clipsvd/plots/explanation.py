"""Figures joining weight change and explanation shift (clipsvd.analysis.explanation_shift)."""
from __future__ import annotations

from typing import Mapping

import pandas as pd
import plotly.graph_objects as go

from clipsvd.analysis.explanation_shift import by_explanation_shift, shift_correlation
from clipsvd.plots.heads import MEASURE_TITLES
from clipsvd.plots.style import AFTER_COLOR, HIGHLIGHT_COLOR, QUALITATIVE, head_label, styled

SHIFT_TITLES = {"text_shift": "text shift (share of top-k texts replaced)",
                "span_shift": "span shift (mean sin² of principal angles)"}


LABELLED_HEADS = 3  # heads named on the scatter: the top few by weight change and by span shift (hover: all)
_TEXT_POSITIONS = ("top center", "bottom center", "middle right", "middle left")


def _labelled(table: pd.DataFrame, measure: str, k: int) -> list[int]:
    """Row positions of the k heads that changed most in weights and the k whose span moved most."""
    def largest(column: str) -> list[int]:
        return list(table[column].to_numpy().argsort(kind="stable")[::-1][:k])

    rows = largest("span_shift") + (largest(measure) if (table[measure] > 0).any() else [])
    return sorted(set(int(i) for i in rows), key=lambda i: (float(table[measure].iloc[i]), i))


def shift_scatter(table: pd.DataFrame, measure: str = "ov_change", title: str | None = None,
                  labelled: int = LABELLED_HEADS) -> go.Figure:
    """Each analysed head at (weight change, explanation shift), both scores, Spearman's ρ in the legend:
    do the heads that changed most in weights also change most in words?

    Span shift: filled circles; text shift: open diamonds, so a head whose two scores coincide shows both.
    Only the `labelled` top heads by weight change and by span shift carry their name on the span point
    (names of neighbours would overlap, "L0·H2L2·H3"), in alternating positions; hovering names every head.
    """
    fig = go.Figure()
    labels = [head_label(l, h) for l, h in zip(table["layer"], table["head"])]
    named = _labelled(table, measure, labelled)
    text = [""] * len(table)
    positions = ["top center"] * len(table)
    for i, row in enumerate(named):
        text[row], positions[row] = labels[row], _TEXT_POSITIONS[i % len(_TEXT_POSITIONS)]
    styles = (("span_shift", AFTER_COLOR, "circle", 0.75), ("text_shift", HIGHLIGHT_COLOR, "diamond-open", 1.0))
    for column, color, symbol, opacity in styles:
        name = SHIFT_TITLES[column].split(" (")[0]
        if len(table) >= 3:
            name += f", {shift_correlation(table, measure, column).text()}"
        span = column == "span_shift"
        fig.add_trace(go.Scatter(
            x=table[measure], y=table[column], mode="markers+text" if span else "markers",
            text=text if span else None, textposition=positions if span else None, textfont=dict(size=10),
            name=name, marker=dict(color=color, symbol=symbol, size=10 if span else 11, opacity=opacity,
                                   line=dict(width=1.5 if not span else 0.5, color=color if not span else "white")),
            customdata=labels, hovertemplate=f"%{{customdata}}<br>{measure} %{{x:.3g}}<br>{column} %{{y:.2f}}"
                                             "<extra></extra>",
        ))
    fig.update_xaxes(title_text=MEASURE_TITLES.get(measure, measure))
    fig.update_yaxes(title_text="explanation shift (0 same, 1 all new)", range=[-0.05, 1.05])
    fig.update_layout(legend=dict(orientation="h", y=-0.2, x=0, yanchor="top"))
    return styled(fig, title or "Weight change vs explanation shift, per head", height=480)


def shift_ranking_bar(table: pd.DataFrame, top: int | None = None, title: str | None = None) -> go.Figure:
    """Heads ordered by explanation shift (span, then text), both shifts as bars, largest at the top: for a
    run whose attention weights did not change, which heads' words moved although their weights did not."""
    ordered = by_explanation_shift(table).head(top or len(table)).iloc[::-1]
    labels = [head_label(l, h) for l, h in zip(ordered["layer"], ordered["head"])]
    fig = go.Figure()
    for column, color in (("text_shift", HIGHLIGHT_COLOR), ("span_shift", AFTER_COLOR)):
        fig.add_trace(go.Bar(x=ordered[column], y=labels, orientation="h", marker_color=color,
                             name=SHIFT_TITLES[column],
                             hovertemplate=f"%{{y}}: {column} %{{x:.2f}}<extra></extra>"))
    fig.update_xaxes(title_text="explanation shift (0 same, 1 all new)", range=[0, 1.02])
    fig.update_yaxes(title_text="layer · head", type="category")
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.15, x=0, yanchor="top"))
    return styled(fig, title or "Heads by explanation shift (no attention weight changed)",
                  height=200 + 34 * len(ordered))


def explanation_shift_figure(table: pd.DataFrame, measure: str = "ov_change", title: str | None = None) -> go.Figure:
    """The weight-change vs shift scatter, or — where no head's weights changed under `measure`, so every
    point would sit at x = 0 — the heads ordered by explanation shift."""
    if (table[measure] > 0).any():
        return shift_scatter(table, measure, title)
    return shift_ranking_bar(table, title=title)


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
