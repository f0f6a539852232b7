"""TextSpan figures: the texts that describe a head, with the variance each explains (%), before vs after.

Paired panels are laid out by hand rather than by plotly's automargin: the second panel's text labels sit in a
gap reserved for them, so at the export width (EXPORT_WIDTH) labels never run under the first panel's bars.
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clipsvd.analysis.textspan import HeadTexts
from clipsvd.plots.style import AFTER_COLOR, BEFORE_COLOR, HIGHLIGHT_COLOR, head_label, styled, wrap_text

EXPORT_WIDTH = 1400  # px: the figure's own width, and the width its layout is checked at
WRAP = 34  # characters per label line
LABEL_FONT = 11  # px
CHAR_PX = 0.62 * LABEL_FONT  # a generous mean character width of the template's sans-serif font
LINE_PX = 14  # height of one label line
MIN_HEIGHT = 340  # px: room for the y title when a head has few texts
LABEL_PX = int(WRAP * CHAR_PX) + 24  # room for the longest label line, its step number and the tick gap
Y_TITLE = "text (TextSpan order)"
X_TITLE = "explained variance (%)"


def text_labels(head: HeadTexts) -> list[str]:
    """Whole texts, numbered in TextSpan's order and wrapped onto lines (<br>): tick labels of one panel."""
    return ["<br>".join(wrap_text(f"{i + 1}. {text}", WRAP)) for i, text in enumerate(head.texts)]


def _bars(head: HeadTexts, color: str, shared: set[str] | None) -> go.Bar:
    """Bars of one head's texts; with `shared` (comparing), texts outside it get the highlight colour."""
    return go.Bar(
        x=[100 * v for v in head.explained_variance], y=text_labels(head), orientation="h",
        marker_color=color if shared is None else [color if t in shared else HIGHLIGHT_COLOR for t in head.texts],
        customdata=head.texts, showlegend=False, texttemplate="%{x:.1f}%", textposition="outside",
        cliponaxis=False, textfont=dict(size=LABEL_FONT),
        hovertemplate="%{customdata}<br>%{x:.2f}% of the head's variance<extra></extra>",
    )


def textspan_figure(before: HeadTexts, after: HeadTexts | None = None, title: str | None = None) -> go.Figure:
    """One head's TextSpan texts as bars of explained variance (%); with `after`, two panels side by side on one
    x scale, texts found in only one of the two lists drawn in the highlight colour."""
    panels = [("before (pretrained)", before, BEFORE_COLOR)]
    if after is not None:
        panels.append(("after (fine-tuned)", after, AFTER_COLOR))
    shared = set(before.texts) & set(after.texts) if after is not None else None
    width = EXPORT_WIDTH if after is not None else EXPORT_WIDTH // 2
    margin = dict(l=LABEL_PX + 40, r=30, t=90, b=60)  # left: the first panel's labels and the one y title
    plot_px = width - margin["l"] - margin["r"]
    gap = (LABEL_PX + 30) / plot_px  # the second panel's labels live in this gap, right of the first panel
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels],
                        horizontal_spacing=gap if after is not None else 0.2)
    largest = max(max(head.explained_variance, default=0) for _, head, _ in panels) * 100
    for col, (_, head, color) in enumerate(panels, start=1):
        fig.add_trace(_bars(head, color, shared), row=1, col=col)
        fig.update_yaxes(title_text=Y_TITLE if col == 1 else None, autorange="reversed", type="category",
                         automargin=False, tickfont=dict(size=LABEL_FONT), row=1, col=col)
        fig.update_xaxes(title_text=X_TITLE, range=[0, 1.22 * largest or 1], ticksuffix="%", row=1, col=col)
    labels = [label for _, head, _ in panels for label in text_labels(head)]
    steps = max(len(head.texts) for _, head, _ in panels)
    row_px = max(24, LINE_PX * max((label.count("<br>") + 1 for label in labels), default=1) + 6)
    name = head_label(before.layer, before.head)
    subtitle = " · orange: text in only one list" if after is not None else ""
    fig = styled(fig, title or f"TextSpan texts of head {name}{subtitle}",
                 height=max(MIN_HEIGHT, margin["t"] + margin["b"] + row_px * max(steps, 1)), width=width)
    return fig.update_layout(margin=margin)
