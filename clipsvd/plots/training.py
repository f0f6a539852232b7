"""Training curves: the live loss of a dashboard job, and a stored run's per-epoch history."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clipsvd.plots.style import AFTER_COLOR, HIGHLIGHT_COLOR, QUALITATIVE, styled


def loss_curve_figure(points: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Loss per training step, one line per run of a job (columns run, title, step, loss)."""
    fig = go.Figure()
    for i, (run, part) in enumerate(points.groupby("run", sort=True)):
        name = str(part["title"].iloc[0]) if "title" in part else f"run {run + 1}"
        fig.add_trace(go.Scatter(x=part["step"], y=part["loss"], mode="lines+markers" if len(part) < 30 else "lines",
                                 name=name, line=dict(color=QUALITATIVE[i % len(QUALITATIVE)], width=2),
                                 hovertemplate="step %{x}<br>loss %{y:.4f}<extra>" + name + "</extra>"))
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="training loss")
    fig.update_layout(legend=dict(orientation="h", y=-0.25, x=0), hovermode="x")
    return styled(fig, title or "Training loss", height=360)


def history_figure(history: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Per-epoch mean loss and training accuracy of one run (columns epoch, loss, train_accuracy as stored, 0..1);
    accuracy in percent through `history_table`, the same conversion as the Runs page's table and CSV."""
    from clipsvd.runs.aggregate import history_table  # lazy: clipsvd.runs loads torch

    history = history_table(history)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=history["epoch"], y=history["loss"], name="loss", mode="lines+markers",
                             line=dict(color=AFTER_COLOR, width=2)), secondary_y=False)
    if "train_accuracy_pct" in history:
        fig.add_trace(go.Scatter(x=history["epoch"], y=history["train_accuracy_pct"], name="train accuracy (%)",
                                 mode="lines+markers", line=dict(color=HIGHLIGHT_COLOR, width=2, dash="dot")),
                      secondary_y=True)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(history) <= 20 else None)
    fig.update_yaxes(title_text="mean training loss", secondary_y=False, rangemode="tozero")
    # 0-100 in steps of 20: round ticks that do not pretend to align with the loss axis
    fig.update_yaxes(title_text="training accuracy (%)", secondary_y=True, showgrid=False, range=[0, 100], dtick=20)
    fig.update_layout(legend=dict(orientation="h", y=-0.25, x=0))
    return styled(fig, title or "Training history", height=380)
