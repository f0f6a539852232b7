"""UMAP layouts of image features before and after fine-tuning, side by side, coloured by class."""
from __future__ import annotations

from html import escape

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clipsvd.plots.style import MANY, class_colors, styled


def umap_figure(layout: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Scatter of `umap_before_after` output: before on the left, after on the right, one colour per class."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["before (pretrained)", "after (fine-tuned)"],
                        horizontal_spacing=0.06)
    labels = list(dict.fromkeys(layout["label"]))
    colors = class_colors(len(labels))
    for i, label in enumerate(labels):
        # Plotly draws trace names and hover texts as its own HTML subset (<b>, <a href>, …) and reads %{…} in a
        # hovertemplate: a class folder is named by whoever made the data, so its name is escaped and reaches the
        # hover only as the trace's name, never as template text.
        name = escape(str(label))
        color = colors[i]
        symbol = ["circle", "diamond", "square", "triangle-up"][(i // len(MANY)) % 4]
        for col, which in enumerate(("before", "after"), start=1):
            points = layout[(layout["label"] == label) & (layout["which"] == which)]
            fig.add_trace(go.Scatter(
                x=points["x"], y=points["y"], mode="markers", name=name, legendgroup=name,
                showlegend=col == 1, marker=dict(color=color, symbol=symbol, size=6, opacity=0.8),
                customdata=points["index"] if "index" in points else None,
                hovertemplate="%{fullData.name}<br>image %{customdata}<extra></extra>",
            ), row=1, col=col)
    fig.update_xaxes(showticklabels=False, title_text="UMAP 1")
    fig.update_yaxes(showticklabels=False, title_text="UMAP 2")
    fig.update_layout(legend=dict(title=dict(text="class"), itemsizing="constant"))
    return styled(fig, title or "Image features (UMAP): before vs after", height=520)
