"""TextSpan figures: the texts that describe a head, with the variance each explains, before vs after."""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from clipsvd.analysis.textspan import HeadTexts
from clipsvd.plots.style import AFTER_COLOR, BEFORE_COLOR, HIGHLIGHT_COLOR, head_label, shorten, styled


def _bars(head: HeadTexts, color: str, shared: set[str] | None) -> go.Bar:
    """Bars of one head's texts; with `shared` (comparing), texts outside it get the highlight colour."""
    labels = [f"{i + 1}. {shorten(text)}" for i, text in enumerate(head.texts)]
    return go.Bar(
        x=[100 * v for v in head.explained_variance], y=labels, orientation="h",
        marker_color=color if shared is None else [color if t in shared else HIGHLIGHT_COLOR for t in head.texts],
        customdata=head.texts, showlegend=False,
        hovertemplate="%{customdata}<br>%{x:.2f}% of the head's variance<extra></extra>",
    )


def textspan_figure(before: HeadTexts, after: HeadTexts | None = None, title: str | None = None) -> go.Figure:
    """One head's TextSpan texts as bars of explained variance; with `after`, side by side.

    Side by side, texts found in only one of the two lists are drawn in the highlight colour.
    """
    panels = [("before (pretrained)", before, BEFORE_COLOR)]
    if after is not None:
        panels.append(("after (fine-tuned)", after, AFTER_COLOR))
    shared = set(before.texts) & set(after.texts) if after is not None else None
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.32)
    for col, (_, head, color) in enumerate(panels, start=1):
        fig.add_trace(_bars(head, color, shared), row=1, col=col)
        fig.update_yaxes(title_text="text, in the order chosen", autorange="reversed", type="category",
                         automargin=True, row=1, col=col)
        fig.update_xaxes(title_text="explained variance (%)", rangemode="tozero", row=1, col=col)
    steps = max(len(before.texts), len(after.texts) if after else 0)
    name = head_label(before.layer, before.head)
    subtitle = " · orange: text in only one list" if after is not None else ""
    return styled(fig, title or f"TextSpan texts of head {name}{subtitle}", height=180 + 24 * steps,
                  width=1200 if after is not None else 700)
