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
# One colour per method on every page and in every export; methods added later get the next free colour.
METHOD_COLORS = {"clip-svd": "#0072B2", "clipfit": "#E69F00", "prolip": "#009E73", "linear-probe": "#CC79A7",
                 "zero-shot": "#8C8C8C"}
# Classes beyond Okabe–Ito's eight: Kelly's 22 colours of maximum contrast (white and black left out).
MANY = ["#F3C300", "#875692", "#F38400", "#A1CAF1", "#BE0032", "#C2B280", "#848482", "#008856", "#E68FAC",
        "#0067A5", "#F99379", "#604E97", "#F6A600", "#B3446C", "#DCD300", "#882D17", "#8DB600", "#654522",
        "#E25822", "#2B3D26"]
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


def method_color(method: str) -> str:
    """The method's colour everywhere (figures on every page, exports, reports)."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    spare = [c for c in QUALITATIVE if c not in METHOD_COLORS.values()]
    return spare[sum(map(ord, method)) % len(spare)]


def class_colors(n: int) -> list[str]:
    """n distinct colours for classes: Okabe–Ito up to 8, Kelly's palette up to 20, then cycled (the legend keeps
    the class order, so a repeated colour is still told apart by position and hover)."""
    palette = QUALITATIVE if n <= len(QUALITATIVE) else MANY
    return [palette[i % len(palette)] for i in range(n)]


def log_axis(fig: go.Figure, axis: str = "y", **kwargs) -> go.Figure:
    """A clean log axis: ticks at decades only, as powers of ten, no crowded minor labels."""
    getattr(fig, f"update_{axis}axes")(type="log", dtick=1, exponentformat="power", minor=dict(ticks="", showgrid=False),
                                      **kwargs)
    return fig


def head_label(layer: int, head: int) -> str:
    return f"L{layer}·H{head}"


def wrap_text(text: str, width: int) -> list[str]:
    """A label cut into lines of at most `width` characters at spaces (a longer word gets a line of its own):
    figures for a paper show whole texts, never an ellipsis."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def shorten(text: str, limit: int = 48) -> str:
    """Keep axis labels readable; the full text stays in the hover."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
