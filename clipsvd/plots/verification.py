"""Figures of the verification: where a head writes a text on the image (patch maps over the images, before and
after on one colour scale) and what ablating heads costs (accuracy intact vs ablated, both models)."""
from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clipsvd.plots.style import AFTER_COLOR, BEFORE_COLOR, DIVERGING, shorten, styled

MAP_OPACITY = 0.6
ROW_TITLES = ("before (pretrained)", "after (fine-tuned)")


def patch_map_figure(maps: Any, title: str | None = None) -> go.Figure:
    """The images a head writes most along one text (columns), with each patch's contribution along the text
    laid over them: pretrained above, fine-tuned below, one diverging colour scale centred on 0 and shared by
    every panel (`maps.limit`), one colour bar; the patch grid is named in the title.

    maps: a verification.TextMaps (images, labels, before/after (k, rows, cols), limit, grid_text())."""
    k = len(maps.images)
    if k == 0:
        raise ValueError("patch_map_figure: no images")
    fig = make_subplots(rows=2, cols=k, horizontal_spacing=0.01, vertical_spacing=0.06,
                        column_titles=[shorten(label, 18) for label in maps.labels], row_titles=list(ROW_TITLES))
    rows, cols = maps.grid
    for r, values in enumerate((maps.before, maps.after), start=1):
        for c in range(k):
            image = maps.images[c]
            height, width = image.shape[:2]
            fig.add_trace(go.Image(z=image, hoverinfo="skip"), row=r, col=c + 1)
            fig.add_trace(go.Heatmap(z=values[c], x0=width / cols / 2, dx=width / cols, y0=height / rows / 2,
                                     dy=height / rows, coloraxis="coloraxis", opacity=MAP_OPACITY,
                                     hovertemplate="patch row %{y:.0f} col %{x:.0f}<br>contribution %{z:.3g}"
                                                   "<extra></extra>"),
                          row=r, col=c + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    head = f"L{maps.layer}·H{maps.head}"
    title = title or (f"{head}, text {maps.mark}: “{shorten(maps.text, 60)}” — {maps.grid_text()}, images chosen "
                      f"by the {maps.chosen_by} model")
    fig.update_layout(coloraxis=dict(colorscale=DIVERGING, cmin=-maps.limit, cmid=0, cmax=maps.limit,
                                     colorbar=dict(title=dict(text="along the text", side="right"), thickness=14, x=1.07)),
                      showlegend=False)
    return styled(fig, title, height=170 * 2 + 110, width=max(520, 150 * k + 160))


def ablation_figure(per_class: pd.DataFrame, title: str = "Accuracy lost by the ablation, per class") -> go.Figure:
    """Points of accuracy each class loses when the heads are mean-ablated, pretrained beside fine-tuned."""
    fig = go.Figure()
    for model, color in (("pretrained", BEFORE_COLOR), ("fine-tuned", AFTER_COLOR)):
        part = per_class[per_class["model"] == model]
        if len(part):
            fig.add_trace(go.Bar(x=part["class"], y=part["drop"], name=model, marker_color=color,
                                 customdata=part[["accuracy", "accuracy_ablated"]].to_numpy(),
                                 hovertemplate="%{x}: %{customdata[0]:.1f}% → %{customdata[1]:.1f}% "
                                               "(drop %{y:.1f} points)<extra>" + model + "</extra>"))
    fig.update_layout(barmode="group", xaxis_title="class", yaxis_title="accuracy drop (points)")
    return styled(fig, title, height=380)
