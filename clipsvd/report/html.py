"""One self-contained HTML file per report: what a researcher sends a co-author.

plotly.js is embedded once, inline (no CDN: the file opens offline and in ten years), figures follow as
divs; images are inline PNG data. Two runs put each section side by side, with joint figures of their head
changes and explanation shifts.
"""
from __future__ import annotations

import base64
import html
import io
import json
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from clipsvd.analysis.explanation_shift import KEPT, SHIFT_COLUMNS, marked_texts, shift_correlation
from clipsvd.analysis.heads import HeadChange, head_change_note, pair_head_change_note, unchanged_weights_note
from clipsvd.analysis.prompts import nearest_reading
from clipsvd.errors import ConfigError
from clipsvd.formatting import bytes_text, fraction_text, number_text, test_images_text
from clipsvd.methods.registry import get_method
from clipsvd.plots import head_heatmap, head_ranking_bar, sv_rotation_heatmap, sv_shift_heatmap, umap_figure
from clipsvd.plots.explanation import SHIFT_TITLES, explanation_shift_figure, head_comparison_bars
from clipsvd.plots.heads import MEASURE_TITLES
from clipsvd.plots.style import FONT, head_label
from clipsvd.plots.weights import ROTATION_TITLES
from clipsvd.plots.training import history_figure
from clipsvd.report.content import RunAnalysis
from clipsvd.report.latex import explanation_latex, transfer_latex
from clipsvd.runs.aggregate import evaluated_images, run_target_table

FIGURE_CLASS = "report-figure"  # every figure's container: tests count them
METRIC_KEYS = ("accuracy", "base", "novel", "hm", "trainable", "trainable_fraction", "steps", "train_seconds",
               "checkpoint_bytes")
# every score with its unit, as on the dashboard (scores are stored in %; shares as fractions, shown as %)
METRIC_LABELS = {"accuracy": "accuracy (%)", "base": "base accuracy (%)", "novel": "novel accuracy (%)",
                 "hm": "harmonic mean (%)", "trainable": "trainable values", "trainable_fraction": "trainable share",
                 "steps": "training steps", "train_seconds": "train time (s)", "checkpoint_bytes": "checkpoint"}
TEST_IMAGES_LABEL = "test images (n of N)"
STYLE = f"""
body {{ font-family: {FONT}; color: #222; margin: 0 auto; max-width: 1040px; padding: 16px; font-size: 14px; }}
h1 {{ font-size: 24px; margin-bottom: 4px; }} h2 {{ border-bottom: 2px solid #0072B2; padding-bottom: 4px;
margin-top: 32px; }} h3 {{ margin: 18px 0 6px; }}
table {{ border-collapse: collapse; margin: 8px 0; font-size: 12px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }}
th {{ border-bottom: 2px solid #888; }} td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.runs {{ display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 16px; }}
.run-name {{ font-weight: 600; color: #0072B2; margin: 6px 0; }}
.mark {{ font-size: 11px; padding: 0 5px; border-radius: 3px; color: #fff; white-space: nowrap; }}
.mark-kept {{ background: #8C8C8C; }} .mark-entered {{ background: #0072B2; }} .mark-left {{ background: #D55E00; }}
.note {{ color: #555; font-size: 12px; }} .failure {{ color: #B00020; }}
.thumbs {{ display: flex; gap: 6px; flex-wrap: wrap; margin: 4px 0 10px; }}
.thumbs figure {{ margin: 0; font-size: 11px; text-align: center; }}
.thumbs img {{ width: 80px; height: 80px; image-rendering: pixelated; display: block; }}
pre {{ background: #f6f6f6; padding: 8px; font-size: 11px; white-space: pre-wrap; word-break: break-all; }}
.{FIGURE_CLASS} {{ break-inside: avoid; page-break-inside: avoid; }}
@page {{ size: A4 landscape; margin: 10mm; }}
@media print {{ body {{ max-width: none; padding: 0; }} .modebar-container {{ display: none; }} h2 {{ break-after: avoid; }} details > * {{ display: block; }} }}
"""


class _Figures:
    """Figure divs with deterministic ids; sizes left to the page so columns and print can fit them."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: go.Figure) -> str:
        self.count += 1
        fig.update_layout(width=None, autosize=True)
        div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"figure-{self.count}",
                          config={"displaylogo": False, "responsive": True})
        return f'<div class="{FIGURE_CLASS}">{div}</div>'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _number(value: Any, digits: int = 3) -> str:
    if not _is_number(value):
        return _e(value)
    if pd.isna(value):
        return "—"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return number_text(float(value), digits, grouping=True)


def _table(frame: pd.DataFrame, columns: dict[str, str], digits: int = 3) -> str:
    """An HTML table of `columns` (column -> header), text escaped, numbers right-aligned."""
    head = "".join(f"<th>{_e(title)}</th>" for title in columns.values())
    rows = []
    for _, row in frame.iterrows():
        cells = []
        for column in columns:
            value = row[column]
            cells.append(f'<td class="num">{_number(value, digits)}</td>' if _is_number(value)
                         else f"<td>{_e(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _key_values(pairs: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_number(v)}</td></tr>"
                   for k, v in pairs.items() if v is not None)
    return f"<table>{rows}</table>"


def _png(image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _failure(analysis: RunAnalysis, name: str) -> str:
    reason = analysis.failures.get(name)
    return f'<p class="failure">{_e(name)} could not be computed: {_e(reason)}</p>' if reason else ""


# ----- sections, one run each -------------------------------------------------------------------------

def _config(a: RunAnalysis, fig: _Figures) -> str:
    cfg = a.run.config
    dataset = cfg.get("dataset") or {}
    overview = _key_values({
        "run": a.run.run_id, "created": a.run.created, "method": cfg.get("method"), "model": a.model_label,
        "dataset": f"{dataset.get('name')} ({dataset.get('kind')})", "protocol": cfg.get("protocol"),
        "targets": ", ".join((a.run.metrics.get("targets") or cfg.get("targets") or [])) or None,
        "shots per class": "all" if cfg.get("shots") is None else cfg.get("shots"), "seed": cfg.get("seed"),
        "hyperparameters set": json.dumps(cfg.get("hyperparameters") or {}),
    })
    full = f"<details><summary>Full config (JSON)</summary><pre>{_e(json.dumps(cfg, indent=2))}</pre></details>"
    return overview + full


def _metrics(a: RunAnalysis, fig: _Figures) -> str:
    metrics = a.run.metrics
    shown = {METRIC_LABELS[key]: metrics.get(key) for key in METRIC_KEYS}
    shown[METRIC_LABELS["trainable_fraction"]] = fraction_text(metrics.get("trainable_fraction"))
    shown[METRIC_LABELS["checkpoint_bytes"]] = bytes_text(metrics.get("checkpoint_bytes")) \
        if metrics.get("checkpoint_bytes") is not None else None
    n, total = evaluated_images(metrics, a.run.config)  # the scores above were measured on these images
    shown[TEST_IMAGES_LABEL] = test_images_text(n, total) if n is not None else None
    out = _key_values(shown)
    if n is not None and total != n:
        out += ('<p class="note">Scored on a subset of the test split (max test images per class): not comparable '
                'with scores on the whole split.</p>' if total is not None else
                '<p class="note">N (the test split size) was not recorded by this older run.</p>')
    out += _targets(a)
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict) and per_class:
        out += "<h3>Per-class accuracy (%)</h3>" + _table(pd.DataFrame([per_class]), {c: c for c in per_class}, 1)
    if a.run.history:
        out += fig(history_figure(pd.DataFrame(a.run.history), f"Training history — {a.short_name}"))
    return out


def _targets(a: RunAnalysis) -> str:
    """Cross-dataset / domain generalisation: each target's accuracy of the unchanged trained model, and their
    average; the accuracy above is the source's."""
    targets = run_target_table(a.run)
    if targets.empty:
        return ""
    average = a.run.metrics.get("target_average")
    source = (a.run.config.get("dataset") or {}).get("name")
    return (f"<h3>Targets ({_e(a.run.config.get('protocol'))})</h3>"
            + _table(targets, {"target": "target", "accuracy": "accuracy (%)", "test_images": TEST_IMAGES_LABEL}, 2)
            + f'<p class="note">Trained on {_e(source)} (the accuracy above), scored unchanged on each target; '
            + f"target average {_number(average, 2) if average is not None else '— (a target has no score)'} %.</p>"
            + f"<details><summary>LaTeX (booktabs)</summary><pre>{_e(transfer_latex(a.run))}</pre></details>")


ROTATION_ROWS = 10  # the most-turned matrices listed under the rotation figure


def _sigma(a: RunAnalysis, fig: _Figures) -> str:
    if not a.method_changes_weights and a.reference is not None:
        return f'<p class="note">{_e(pair_head_change_note(a.before_name, a.after_name, "weights"))}</p>'
    if not a.method_changes_weights:
        note = unchanged_weights_note(get_method(a.run.config.get("method")), "attention or MLP matrices")
        return f'<p class="note">{_e(note)}</p>'
    if a.sv_shifts is None or not len(a.sv_shifts):
        return _failure(a, "σ shifts") or '<p class="note">No matrix of this run has singular values to compare.</p>'
    return fig(sv_shift_heatmap(a.sv_shifts, title=f"Singular-value shift — {a.short_name}")) + _rotation(a, fig)


def _rotation(a: RunAnalysis, fig: _Figures) -> str:
    """How far the top singular vectors turned: the figure, and the most-turned matrices as a table."""
    if a.sv_rotation is None or not len(a.sv_rotation):
        return _failure(a, "singular-vector rotation")
    top = int(a.sv_rotation["top"].max())
    out = f"<h3>How far the top {top} singular vectors turned</h3>"
    if a.keeps_singular_vectors:
        out += (f'<p class="note">{_e(get_method(a.run.config.get("method")).display_name)} trains only σ and keeps '
                "every singular vector, so the angles are 0 by construction; a nonzero one can only come from σ "
                "changing places across the top-k boundary.</p>")
    turned = a.sv_rotation.sort_values(["left_angle_deg", "right_angle_deg"], ascending=False).head(ROTATION_ROWS)
    out += fig(sv_rotation_heatmap(a.sv_rotation, title=f"Output-span angle of the top {top} singular vectors — "
                                                        f"{a.short_name}"))
    return out + _table(turned, {"encoder": "encoder", "layer": "layer", "kind": "matrix",
                                 **{c: ROTATION_TITLES[c] for c in ROTATION_TITLES}}, 3)


def _prompt(a: RunAnalysis, fig: _Figures) -> str:
    """A learned prompt's nearest vocabulary words (CoOp), or why there is none."""
    if a.prompt_words is None:
        return _failure(a, "nearest words") or '<p class="note">This run learns no prompt context.</p>'
    reading = nearest_reading(a.prompt_words)
    return ('<p class="note">Nearest vocabulary token (Euclidean, token-embedding space) to each learned context '
            "vector; a large distance says the vector is not a word. class −1: one context shared by all classes."
            "</p>" + _table(reading, {"class": "class", "nearest_words": "nearest words, in order",
                                      "mean_distance": "mean distance"})
            + _table(a.prompt_words, {c: c for c in a.prompt_words.columns}))


def _unchanged_note(a: RunAnalysis, instead: str = "") -> str:
    """The one line saying why this run has no ranking by weight change (zero-shot, CLIPFit, ProLIP), or ""."""
    if a.head_change is None:
        return ""
    if a.reference is not None:
        if a.head_change.ranks_by_weight:
            return ""
        measure = a.measure if a.head_change is HeadChange.NOT_BY_MEASURE else None
        note = pair_head_change_note(a.before_name, a.after_name, "image tower's attention weights", measure, instead)
        return f'<p class="note">{_e(note)}</p>'
    method = get_method(a.run.config.get("method"))  # the report loaded the run, so its method exists
    note = head_change_note(a.head_change, "image tower's attention weights", method.display_name, method.summary,
                            a.measure, instead)
    return f'<p class="note">{_e(note)}</p>' if note else ""


def _heads(a: RunAnalysis, fig: _Figures) -> str:
    if a.heads is None:
        return _failure(a, "head ranking")
    if not a.ranks_by_weight:  # no chart of zeros, no "most changed" head
        return _unchanged_note(a, "Heads are ordered by explanation shift below.")
    best = a.heads.iloc[0]
    return (f"<p>Most changed: <b>{_e(head_label(best['layer'], best['head']))}</b>, "
            f"{_e(MEASURE_TITLES[a.measure])} = {best[a.measure]:.3g}.</p>"
            + fig(head_ranking_bar(a.heads, a.measure, 16, f"Most-changed image heads — {a.short_name}"))
            + fig(head_heatmap(a.heads, a.measure, f"Per-head change by layer — {a.short_name}")))


def _marked_list(frame: pd.DataFrame, side: str) -> str:
    items = []
    for _, row in frame.iterrows():
        text, mark, share = row[f"text_{side}"], row[f"mark_{side}"], row[f"explained_{side}"]
        if text is None:
            continue
        items.append(f'<li><span class="mark mark-{_e(mark)}">{_e(mark)}</span> {_e(text)} '
                     f'<span class="note">{100 * share:.1f}%</span></li>')
    return f"<ol>{''.join(items)}</ol>"


def _explanations(a: RunAnalysis, fig: _Figures) -> str:
    if a.explanations is None:
        return _failure(a, "TextSpan") + _failure(a, "explanation shift")
    table, k, by_weight = a.shifts, a.settings["k"], a.ranks_by_weight
    out = []
    if by_weight and len(table) >= 3:
        correlations = "; ".join(f"{SHIFT_TITLES[c].split(' (')[0]}: {shift_correlation(table, a.measure, c).text()}"
                                 for c in SHIFT_COLUMNS)
        out.append(f"<p>Spearman rank correlation of {_e(a.measure)} with explanation shift across heads — "
                   f"{_e(correlations)}.</p>")
    elif not by_weight:
        out.append(f"<p>No correlation with {_e(a.measure)}: no head's weights changed under it. Heads ordered by "
                   "explanation shift — which heads' words moved although their weights did not.</p>")
    title = (f"Weight change vs explanation shift — {a.short_name}" if by_weight
             else f"Heads by explanation shift — {a.short_name}")
    out.append(fig(explanation_shift_figure(table, a.measure, title)))
    for layer, head in a.top_heads:
        row = table[(table["layer"] == layer) & (table["head"] == head)].iloc[0]
        marks = marked_texts(a.before.head(layer, head), a.after.head(layer, head), k)
        headline = (f"#{int(row['rank'])} {_e(head_label(layer, head))} — {_e(a.measure)} {row[a.measure]:.3g}, "
                    if by_weight else f"#{int(row['shift_rank'])} by explanation shift: {_e(head_label(layer, head))}"
                                      " — ")
        out.append(
            f"<h3>{headline}"
            f"text shift {row['text_shift']:.2f}, span shift {row['span_shift']:.2f}</h3>"
            f'<p class="note">Variance explained by the first {k} texts: {100 * row["explained_before"]:.1f}% '
            f'before, {100 * row["explained_after"]:.1f}% after.</p>'
            f'<div class="runs" style="--n: 2"><div><b>before ({_e(a.before_name)})</b>'
            f'{_marked_list(marks, "before")}</div>'
            f'<div><b>after ({_e(a.after_name)})</b>{_marked_list(marks, "after")}</div></div>')
        for entry in (e for e in a.entered if (e.layer, e.head) == (layer, head)):
            thumbs = "".join(f'<figure><img src="{_png(image)}" alt="{_e(label)}"><figcaption>{_e(label)}'
                             f"</figcaption></figure>" for image, label in entry.images)
            out.append(f'<p class="note">Images this head writes most along the entered text '
                       f'“{_e(entry.text)}”:</p><div class="thumbs">{thumbs}</div>')
    ranks = {"rank": "rank", "head_name": "head", a.measure: a.measure} if by_weight else {
        "shift_rank": "shift rank", "head_name": "head"}
    columns = {**ranks, "text_shift": "text shift", "span_shift": "span shift",
               "explained_before": f"expl. top-{k} before", "explained_after": f"expl. top-{k} after",
               "texts_before": "top texts before", "texts_after": "top texts after"}
    named = table.assign(head_name=[head_label(l, h) for l, h in zip(table["layer"], table["head"])])
    out.append(f"<h3>All analysed heads</h3>{_table(named, columns)}")
    out.append(f"<details><summary>LaTeX (booktabs)</summary><pre>{_e(explanation_latex(table, a.measure))}"
               "</pre></details>")
    return "".join(out)


def _umap(a: RunAnalysis, fig: _Figures) -> str:
    if a.umap is None:
        return _failure(a, "UMAP")
    return fig(umap_figure(a.umap, f"Image features (UMAP) — {a.short_name}")) + (
        '<p class="note">Layouts fitted separately before and after: compare how classes cluster, not positions.'
        "</p>")


def _verification(a: RunAnalysis, fig: _Figures) -> str:
    from clipsvd.report.verification import verification_html

    return _failure(a, "verification") or verification_html(a.verification, fig, _table, _e)


SECTIONS = (("Configuration", _config), ("Metrics", _metrics), ("Singular-value shifts", _sigma),
            ("Head ranking (image tower)", _heads), ("Explanations before vs after (TextSpan)", _explanations),
            ("Embeddings (UMAP)", _umap), ("Verification", _verification))


def _side_by_side(analyses: Sequence[RunAnalysis], render, fig: _Figures) -> str:
    if len(analyses) == 1:
        return render(analyses[0], fig)
    columns = "".join(f'<div><div class="run-name">{_e(a.name)}</div>{render(a, fig)}</div>' for a in analyses)
    return f'<div class="runs" style="--n: {len(analyses)}">{columns}</div>'


def _comparison(analyses: Sequence[RunAnalysis], fig: _Figures) -> str:
    """Joint figures of the compared runs' head changes and explanation shifts, and ρ per run."""
    if len({a.measure for a in analyses}) != 1:
        raise ConfigError("report: compared runs must rank heads by the same measure")
    measure = analyses[0].measure
    out = []
    heads = {a.name: a.heads.sort_values(["layer", "head"]) for a in analyses if a.heads is not None}
    if len(heads) > 1:
        out.append(fig(head_comparison_bars(heads, measure, f"Head change per run — {MEASURE_TITLES[measure]}")))
    shifts = {a.name: a.explanations.sort_values(["layer", "head"]) for a in analyses if a.explanations is not None}
    if len(shifts) > 1:
        out.append(fig(head_comparison_bars(shifts, "span_shift", "Explanation (span) shift per run")))
        rows = [{"run": name, **{c: shift_correlation(t, measure, c).text() for c in SHIFT_COLUMNS}}
                for name, t in shifts.items() if len(t) >= 3]
        out.append(_table(pd.DataFrame(rows), {"run": "run", "text_shift": f"ρ({measure}, text shift)",
                                               "span_shift": f"ρ({measure}, span shift)"}))
    return "".join(out)


DIFFERENCE_HEADING = "The two runs against each other (differences of the fine-tunes)"
DIFFERENCE_SECTIONS = (("Singular-value shifts", _sigma), ("Head ranking (image tower)", _heads),
                       ("Explanation shift", _explanations))


def _difference(d: RunAnalysis, fig: _Figures) -> str:
    """The first run measured against the second directly: its σ shifts, head ranking and explanation shift with
    the second run's fine-tuned model as "before": what differs between the two fine-tunes, not each vs
    pretrained."""
    intro = (f'<p class="note">"Before" is {_e(d.before_name)}, "after" {_e(d.after_name)}: both fine-tuned the same '
             "base, so every figure below shows where the two fine-tunes differ (zero where they changed the base "
             "alike).</p>")
    return intro + "".join(f"<h3>{_e(heading)}</h3>{render(d, fig)}" for heading, render in DIFFERENCE_SECTIONS)


def report_html(analyses: Sequence[RunAnalysis], title: str | None = None, difference: RunAnalysis | None = None,
                difference_note: str | None = None) -> str:
    """The whole report as one HTML string (a few MB: plotly.js is inside). `difference`: the first run analysed
    against the second (analyse_run of a pair with a reference run), shown after the side-by-side figures;
    `difference_note`: why there is none (e.g. the runs have different bases)."""
    if not analyses:
        raise ConfigError("report: no run to report on")
    if len({a.run.run_id for a in analyses}) != len(analyses):
        raise ConfigError("report: compare two different runs")
    fig = _Figures()
    names = " vs ".join(a.run.run_id for a in analyses)
    title = title or f"clipsvd report — {names}"
    a0 = analyses[0]
    settings = ", ".join(f"{k} {v}" for k, v in a0.settings.items() if v is not None)
    body = [f"<h1>{_e(title)}</h1>",
            (f'<p class="note">Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by clipsvd. Heads ranked by '
             f"{_e(a0.measure)} ({_e(MEASURE_TITLES[a0.measure])}). Analysis settings: {_e(settings)}. "
             f'Marks: <span class="mark mark-{KEPT}">kept</span> in both top lists, '
             '<span class="mark mark-entered">entered</span> only after, '
             '<span class="mark mark-left">left</span> only before.</p>')]
    if len(analyses) > 1:
        body.append("<h2>Side by side</h2>" + _comparison(analyses, fig))
    if difference is not None:
        body.append(f"<h2>{_e(DIFFERENCE_HEADING)}</h2>" + _difference(difference, fig))
    elif difference_note:
        body.append(f'<h2>{_e(DIFFERENCE_HEADING)}</h2><p class="note">{_e(difference_note)}</p>')
    sections = list(SECTIONS)
    if any(a.prompt_words is not None or "nearest words" in a.failures for a in analyses):
        sections.insert(3, ("Learned prompt: nearest words", _prompt))
    for heading, render in sections:
        body.append(f"<h2>{_e(heading)}</h2>" + _side_by_side(analyses, render, fig))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title)}</title><style>{STYLE}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{''.join(body)}</body></html>")
