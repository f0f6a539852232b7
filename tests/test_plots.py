"""Every analysis figure builds from real analysis output; exports give the right file types."""
import copy

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from clipsvd.analysis import explain_heads, head_changes, load_corpus, singular_value_shifts, spectra
from clipsvd.plots import (
    ExportError,
    export_figure,
    export_table,
    find_browser,
    head_heatmap,
    head_ranking_bar,
    spectra_figure,
    sv_shift_heatmap,
    textspan_figure,
    umap_figure,
)
from clipsvd.plots.style import BEFORE_COLOR, HIGHLIGHT_COLOR

needs_browser = pytest.mark.skipif(find_browser() is None,
                                   reason="static export needs Chromium (/usr/bin/chromium is not installed)")


@pytest.fixture(scope="module")
def before_after():
    from clipsvd.models import load_model
    from tests.conftest import TINY

    before = load_model(TINY, "cpu")
    after = copy.deepcopy(before)
    with torch.no_grad():
        after.model.visual.transformer.resblocks[1].attn.in_proj_weight[128:160] *= 1.3
        after.model.transformer.resblocks[0].mlp.c_fc.weight *= 0.9
    return before, after


@pytest.fixture(scope="module")
def figures(before_after):
    before, after = before_after
    shifts = singular_value_shifts(before, after)
    heads = head_changes(before, after)
    texts = load_corpus("general")[:200]
    torch.manual_seed(0)
    images = torch.randn(16, 3, 64, 64)
    span_before = explain_heads(before, [images], texts, texts_per_head=6)
    span_after = explain_heads(after, [images], texts, texts_per_head=6)
    rng = np.random.default_rng(0)
    layout = pd.DataFrame({  # the columns umap_before_after returns (UMAP itself is tested in test_analysis)
        "x": rng.normal(size=40), "y": rng.normal(size=40), "label": ["cat", "dog"] * 20,
        "which": ["before"] * 20 + ["after"] * 20, "index": list(range(20)) * 2,
    })
    return {
        "sv_shift_heatmap": sv_shift_heatmap(shifts),
        "sv_shift_mean": sv_shift_heatmap(shifts, value="mean_shift"),
        "spectra": spectra_figure(spectra(before, after, "visual", 1, "v")),
        "head_ranking": head_ranking_bar(heads, top=3),
        "head_heatmap": head_heatmap(heads),
        "textspan_pair": textspan_figure(span_before.head(1, 0), span_after.head(1, 0)),
        "textspan_single": textspan_figure(span_before.head(0, 1)),
        "umap": umap_figure(layout),
    }


def test_figures_build_with_titles_and_axes(figures):
    for name, fig in figures.items():
        assert isinstance(fig, go.Figure), name
        assert fig.layout.title.text, name
        assert len(fig.data) > 0, name
        assert fig.layout.template.layout.font.family, name
        titled = [axis for key, axis in fig.layout.to_plotly_json().items() if key.startswith(("xaxis", "yaxis"))
                  and not (name == "textspan_pair" and key == "yaxis2")]  # paired TextSpan panels: one y title
        assert all(axis.get("title", {}).get("text") for axis in titled), name


def test_head_ranking_puts_the_changed_head_on_top(figures):
    bars = figures["head_ranking"].data[0]
    assert list(bars.y)[-1] == "L1·H0"  # horizontal bars: the last category is drawn at the top


def test_textspan_figure_marks_texts_in_one_list_only(figures):
    before, after = figures["textspan_pair"].data
    assert len(before.y) == 6 and len(after.y) == 6
    assert before.xaxis == "x" and after.xaxis == "x2"
    only_before = set(before.customdata) - set(after.customdata)
    for text, color in zip(before.customdata, before.marker.color):
        assert (color == HIGHLIGHT_COLOR) == (text in only_before)
    assert figures["textspan_single"].data[0].marker.color == BEFORE_COLOR


def test_export_html_and_csv(figures):
    html = export_figure(figures["spectra"], "html")
    assert html.lower().startswith((b"<html", b"<!doctype html")) and b"plotly" in html
    assert len(html) > 1_000_000  # plotly.js itself is embedded: the page works offline
    csv = export_table(pd.DataFrame({"text": ["a, b", "c"], "value": [1.5, 2.0]}))
    assert csv.decode().splitlines() == ["text,value", '"a, b",1.5', "c,2.0"]
    with pytest.raises(ExportError, match="jpeg"):
        export_figure(figures["spectra"], "jpeg")


@needs_browser
def test_export_static_formats(figures):
    fig = figures["sv_shift_heatmap"]
    assert export_figure(fig, "png").startswith(b"\x89PNG")
    assert export_figure(fig, "pdf").startswith(b"%PDF")
    svg = export_figure(figures["textspan_pair"], "svg")
    assert svg.startswith((b"<svg", b"<?xml"))
    assert export_figure(figures["umap"], "png", width=600, height=400).startswith(b"\x89PNG")


def test_one_colour_per_method_and_enough_colours_for_classes():
    import pandas as pd

    from clipsvd.plots.compare import method_bars
    from clipsvd.plots.style import METHOD_COLORS, class_colors, method_color

    summary = pd.DataFrame({"method": ["zero-shot", "clip-svd"], "accuracy_mean": [50.0, 70.0],
                            "accuracy_std": [None, 1.0], "n": [1, 3]})
    bars = method_bars(summary, ["accuracy"])
    colours = {x: c for trace in bars.data for x, c in zip(trace.x, trace.marker.color)}
    assert colours == {"zero-shot": METHOD_COLORS["zero-shot"], "clip-svd": METHOD_COLORS["clip-svd"]}
    one_seed = next(t for t in bars.data if list(t.x) == ["zero-shot"])
    assert one_seed.error_y.array is None  # one seed: no error bar (its own trace, not a zero-length bar)
    assert method_color("a-new-method") == method_color("a-new-method") not in METHOD_COLORS.values()
    assert len(set(class_colors(10))) == 10 and len(set(class_colors(20))) == 20


def test_spectrum_log_axis_has_decade_ticks_only():
    import pandas as pd

    from clipsvd.plots import spectra_figure

    spectrum = pd.DataFrame({"index": [0, 1, 2], "sigma_before": [10.0, 1.0, 0.1], "sigma_after": [9.0, 1.1, 0.2]})
    axis = spectra_figure(spectrum).layout.yaxis
    assert axis.type == "log" and axis.dtick == 1 and axis.exponentformat == "power"


@needs_browser
def test_textspan_pair_exports_at_1400_px_with_whole_texts_and_separate_panels(tmp_path):
    """Before/after panels at the export width: every text whole (wrapped, never cut with "…"), the second panel's
    labels inside the gap between the panels, one y title, % on the axes and bars; the PNG has that size."""
    import io

    from PIL import Image

    from clipsvd.analysis.textspan import HeadTexts
    from clipsvd.plots.textspan import CHAR_PX, EXPORT_WIDTH, LABEL_PX

    long = "a densely stained round nucleus with a thin bright membrane at the upper left of the field"
    before = HeadTexts(1, 0, [0, 1, 2], [long, "a small blue square", "three overlapping triangles in a sketchy style"],
                       [0.31, 0.12, 0.05], [0.31, 0.2, 0.1], 1.0)
    after = HeadTexts(1, 0, [1, 3, 4], ["a small blue square", long + " again", "an empty background"],
                      [0.4, 0.2, 0.01], [0.4, 0.3, 0.02], 1.0)
    fig = textspan_figure(before, after)
    layout = fig.layout
    assert layout.width == EXPORT_WIDTH
    for bars, head in zip(fig.data, (before, after)):
        lines = [label.split("<br>") for label in bars.y]
        assert [" ".join(parts).split(". ", 1)[1] for parts in lines] == head.texts  # whole texts, in order
        assert not any("…" in label for label in bars.y)
        longest = max(len(line) for parts in lines for line in parts) * CHAR_PX
        assert longest + 10 <= LABEL_PX
    plot_px = layout.width - layout.margin.l - layout.margin.r
    gap_px = (layout.xaxis2.domain[0] - layout.xaxis.domain[1]) * plot_px
    assert layout.xaxis.domain[1] < layout.xaxis2.domain[0] and gap_px >= LABEL_PX  # labels of panel 2 fit the gap
    assert layout.margin.l >= LABEL_PX  # and those of panel 1 the left margin
    assert layout.yaxis.title.text and not layout.yaxis2.title.text  # one y title
    assert layout.xaxis.ticksuffix == "%" and fig.data[0].texttemplate.endswith("%")
    assert layout.xaxis.range == layout.xaxis2.range  # one scale for before and after
    titles = [a.text for a in layout.annotations]
    assert titles == ["before (pretrained)", "after (fine-tuned)"]
    png = export_figure(fig, "png", scale=1)
    (tmp_path / "textspan.png").write_bytes(png)
    image = Image.open(io.BytesIO(png))
    assert image.size == (EXPORT_WIDTH, layout.height)
