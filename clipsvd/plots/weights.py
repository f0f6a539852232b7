"""Figures for singular-value shifts (clipsvd.analysis.weights)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clipsvd.models.layout import ENCODERS, MATRIX_KINDS
from clipsvd.plots.style import AFTER_COLOR, BEFORE_COLOR, DIVERGING, SEQUENTIAL, log_axis, styled

MEASURE_TITLES = {
    "rel_change": "‖σ − σ₀‖ / ‖σ₀‖",
    "mean_shift": "mean(σ − σ₀)",
    "max_abs_shift": "max |σ − σ₀|",
}

ROTATION_TITLES = {  # the columns of analysis.weights.singular_vector_rotation
    "left_angle_deg": "output-span angle (°)",
    "right_angle_deg": "input-span angle (°)",
    "min_abs_cos": "min |cos| of matched vectors",
}


def sv_shift_heatmap(shifts: pd.DataFrame, value: str = "rel_change", title: str | None = None) -> go.Figure:
    """Layer × matrix-kind heatmap per encoder: where the singular values moved."""
    return _layer_kind_heatmap(shifts, value, MEASURE_TITLES.get(value, value),
                               title or "Singular-value shift per layer and matrix", diverging=value == "mean_shift")


def sv_rotation_heatmap(rotation: pd.DataFrame, value: str = "left_angle_deg", title: str | None = None) -> go.Figure:
    """Layer × matrix-kind heatmap per encoder: how far the top singular vectors turned (a
    `singular_vector_rotation` table); angles from 0°, |cos| on 0…1."""
    if value not in ROTATION_TITLES:
        raise ValueError(f"sv_rotation_heatmap: value must be one of {list(ROTATION_TITLES)}, got '{value}'")
    top = int(rotation["top"].max()) if len(rotation) else 0
    return _layer_kind_heatmap(rotation, value, ROTATION_TITLES[value],
                               title or f"Turn of the top {top} singular vectors per layer and matrix",
                               zrange=(0.0, 1.0) if value == "min_abs_cos" else None)


def _layer_kind_heatmap(table: pd.DataFrame, value: str, label: str, title: str, diverging: bool = False,
                        zrange: tuple[float, float] | None = None) -> go.Figure:
    encoders = [e for e in ENCODERS if e in set(table["encoder"])]
    if not encoders:
        raise ValueError("layer × matrix heatmap: the table has no rows")
    fig = make_subplots(rows=1, cols=len(encoders), subplot_titles=[f"{e} encoder" for e in encoders],
                        horizontal_spacing=0.12)
    zmax = float(table[value].abs().max()) or 1.0
    zmin, zmax = zrange or (-zmax if diverging else 0.0, zmax)
    for col, encoder in enumerate(encoders, start=1):
        part = table[table["encoder"] == encoder]
        kinds = [k for k in MATRIX_KINDS if k in set(part["kind"])]
        grid = part.pivot_table(index="layer", columns="kind", values=value, aggfunc="first").reindex(columns=kinds)
        fig.add_trace(go.Heatmap(
            z=grid.to_numpy(), x=kinds, y=grid.index.to_list(),
            colorscale=DIVERGING if diverging else SEQUENTIAL,
            zmin=zmin, zmax=zmax,
            coloraxis=None, showscale=col == len(encoders),
            colorbar=dict(title=dict(text=label, side="right")),
            hovertemplate=f"{encoder} layer %{{y}}, %{{x}}<br>{label} = %{{z:.3g}}<extra></extra>",
        ), row=1, col=col)
        fig.update_xaxes(title_text="matrix", row=1, col=col)
        fig.update_yaxes(title_text="layer", autorange="reversed", dtick=1 if len(grid) <= 24 else None, row=1, col=col)
    return styled(fig, title, height=420 + 8 * len(set(table["layer"])))


def spectra_figure(spectrum: pd.DataFrame, title: str | None = None, log_y: bool = True) -> go.Figure:
    """σ before and after for one matrix, largest first; the gap is what training did."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=spectrum["index"], y=spectrum["sigma_before"], name="before (pretrained)",
                             mode="lines", line=dict(color=BEFORE_COLOR, width=2)))
    fig.add_trace(go.Scatter(x=spectrum["index"], y=spectrum["sigma_after"], name="after (fine-tuned)",
                             mode="lines", line=dict(color=AFTER_COLOR, width=2, dash="dot")))
    positive = np.all(spectrum[["sigma_before", "sigma_after"]].to_numpy() > 0)
    fig.update_xaxes(title_text="singular value index (largest first)")
    fig.update_yaxes(title_text="σ")
    if log_y and positive:
        log_axis(fig)
    fig.update_layout(hovermode="x unified", legend=dict(x=0.99, xanchor="right", y=0.99))
    return styled(fig, title or "Singular value spectrum", height=420)
