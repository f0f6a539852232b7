"""One look for every figure: a plotly template, colours, and label helpers.

The template is applied per figure (never set as plotly's global default), so figures made
elsewhere in the process keep their own style.
"""
from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

TEMPLATE_NAME = "clipsvd"
FONT = "Inter, Helvetica Neue, Arial, sans-serif"
# Okabe–Ito: distinguishable with colour-vision deficiencies.
QUALITATIVE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
BEFORE_COLOR = "#8C8C8C"  # pretrained: neutral grey
AFTER_COLOR = "#0072B2"  # fine-tuned: blue
HIGHLIGHT_COLOR = "#D55E00"
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"


def _template() -> go.layout.Template:
    base = pio.templates["plotly_white"]
    template = go.layout.Template(base)
    template.layout.update(
        font=dict(family=FONT, size=13, color="#222222"),
        title=dict(font=dict(size=17), x=0.01, xanchor="left"),
        colorway=QUALITATIVE,
        margin=dict(l=70, r=30, t=70, b=60),
        hoverlabel=dict(font=dict(family=FONT)),
        legend=dict(bgcolor="rgba(255,255,255,0.8)"),
    )
    template.layout.xaxis.update(showline=True, linecolor="#BBBBBB", ticks="outside", title=dict(standoff=8))
    template.layout.yaxis.update(showline=True, linecolor="#BBBBBB", ticks="outside", title=dict(standoff=8))
    return template


if TEMPLATE_NAME not in pio.templates:
    pio.templates[TEMPLATE_NAME] = _template()


def styled(fig: go.Figure, title: str, height: int | None = None, width: int | None = None) -> go.Figure:
    """Apply the template and a title (size only when given, so the dashboard can stretch figures)."""
    fig.update_layout(template=TEMPLATE_NAME, title_text=title)
    if height:
        fig.update_layout(height=height)
    if width:
        fig.update_layout(width=width)
    return fig


def head_label(layer: int, head: int) -> str:
    return f"L{layer}·H{head}"


def shorten(text: str, limit: int = 48) -> str:
    """Keep axis labels readable; the full text stays in the hover."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
