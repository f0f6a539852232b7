"""Explanation shift: both scores on planted before/after sets whose answer is known, the per-head table, the
rank correlation, and the Explain page starting from the Heads ranking (AppTest)."""
import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from clipsvd.analysis.explanation_shift import (
    ENTERED,
    KEPT,
    LEFT,
    explanation_shifts,
    head_shift,
    layers_to_explain,
    marked_texts,
    principal_angles,
    shift_correlation,
    span_shift,
    text_set_shift,
    top_changed_heads,
)
from clipsvd.analysis.textspan import HeadTexts, TextSpanResult
from clipsvd.errors import ConfigError

D = 12
BASIS = np.eye(D)


# ----- the two scores on planted sets -----------------------------------------------------------------

def test_text_shift_identical_disjoint_partial():
    assert text_set_shift(["a", "b", "c", "d"], ["d", "c", "b", "a"]) == 0.0  # order does not matter
    assert text_set_shift(["a", "b"], ["c", "d"]) == 1.0
    assert text_set_shift(["a", "b", "c", "d"], ["a", "b", "x", "y"]) == pytest.approx(0.5)
    assert text_set_shift(["a", "b", "c", "d", "e"], ["a", "x", "y", "z", "w"]) == pytest.approx(0.8)
    assert text_set_shift(["a", "b", "c", "d"], ["a", "b"]) == pytest.approx(0.5)  # stopped early: missing = changed
    assert text_set_shift([], []) == 0.0 and text_set_shift(["a"], []) == 1.0


def test_span_shift_identical_orthogonal_partial():
    assert span_shift(BASIS[:4], BASIS[[3, 1, 0, 2]]) == pytest.approx(0.0, abs=1e-12)
    assert span_shift(BASIS[:4], 3.0 * BASIS[:4]) == pytest.approx(0.0, abs=1e-12)  # lengths do not matter
    assert span_shift(BASIS[:3], BASIS[3:6]) == pytest.approx(1.0)
    assert span_shift(BASIS[:4], BASIS[[0, 1, 6, 7]]) == pytest.approx(0.5)  # two of four directions kept
    assert span_shift(np.zeros((0, D)), np.zeros((0, D))) == 0.0


def test_span_shift_of_one_rotated_text_is_sin_squared_over_k():
    """Turn one of k orthonormal texts by θ towards a new direction: one principal angle θ, shift sin²θ / k."""
    theta = math.radians(30)
    after = BASIS[:4].copy()
    after[3] = math.cos(theta) * BASIS[3] + math.sin(theta) * BASIS[9]
    angles = principal_angles(BASIS[:4], after)
    assert np.degrees(angles.max()) == pytest.approx(30.0) and np.allclose(angles[:3], 0, atol=1e-7)
    assert span_shift(BASIS[:4], after) == pytest.approx(math.sin(theta) ** 2 / 4)


def test_span_shift_sees_a_paraphrase_the_text_shift_does_not():
    """Different words, same direction ("a red disc" / "a crimson circle"): the text shift counts a change, the span
    shift none; a dependent extra text adds no dimension."""
    before = np.stack([BASIS[0], BASIS[1]])
    after = np.stack([BASIS[0], 2 * BASIS[1], BASIS[0] + BASIS[1]])
    assert span_shift(before, after) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="dimensions"):
        span_shift(BASIS[:2], np.ones((2, D + 1)))


# ----- per head, on a planted TextSpan result ------------------------------------------------------------

def _corpus() -> tuple[list[str], torch.Tensor]:
    """±e_i for i < D: the corpus mean is 0, so centring leaves the planted directions as they are."""
    texts = [f"p{i}" for i in range(D)] + [f"n{i}" for i in range(D)]
    return texts, torch.tensor(np.concatenate([BASIS, -BASIS]), dtype=torch.float32)


def _head(layer: int, head: int, texts: list[str], corpus: list[str]) -> HeadTexts:
    shares = [0.4, 0.2, 0.1, 0.05, 0.05, 0.02][: len(texts)]
    return HeadTexts(layer, head, [corpus.index(t) for t in texts], texts, shares, shares, 1.0, D)


def _result(corpus, embeddings, heads: dict) -> TextSpanResult:
    layers = tuple(sorted({layer for layer, _ in heads}))
    n_heads = 1 + max(head for _, head in heads)
    built = {key: _head(*key, texts, corpus) for key, texts in heads.items()}
    return TextSpanResult(layers, corpus, built, torch.zeros(3, len(layers), n_heads, D), embeddings)


PLANTED_BEFORE = {(0, 0): ["p0", "p1", "p2", "p3"], (0, 1): ["p4", "p5", "p6", "p7"], (1, 0): ["p0", "p1", "p2", "p3"],
                  (1, 1): ["p8", "p9", "p10", "p11"]}
PLANTED_AFTER = {(0, 0): ["p0", "p1", "p2", "p3"],  # identical
                 (0, 1): ["p8", "p9", "p10", "p11"],  # disjoint and orthogonal
                 (1, 0): ["p0", "p1", "p8", "p9"],  # half kept
                 (1, 1): ["n8", "p9", "p10", "p11"]}  # a paraphrase: -e8 spans the same line as e8


def test_head_shift_and_marks_on_planted_heads():
    corpus, embeddings = _corpus()
    before, after = _result(corpus, embeddings, PLANTED_BEFORE), _result(corpus, embeddings, PLANTED_AFTER)
    expected = {(0, 0): (0.0, 0.0), (0, 1): (1.0, 1.0), (1, 0): (0.5, 0.5), (1, 1): (0.25, 0.0)}
    for key, (text, span) in expected.items():
        shift = head_shift(before.head(*key), after.head(*key), embeddings, corpus, k=4)
        assert (shift.text_shift, shift.span_shift) == (pytest.approx(text), pytest.approx(span, abs=1e-9)), key
    half = head_shift(before.head(1, 0), after.head(1, 0), embeddings, corpus, k=4)
    assert (half.kept, half.entered, half.left) == (["p0", "p1"], ["p8", "p9"], ["p2", "p3"])
    assert half.explained_before == pytest.approx(0.75) and half.largest_angle == pytest.approx(90.0)
    marks = marked_texts(before.head(1, 0), after.head(1, 0), k=4)
    assert marks["mark_before"].tolist() == [KEPT, KEPT, LEFT, LEFT]
    assert marks["mark_after"].tolist() == [KEPT, KEPT, ENTERED, ENTERED]
    assert head_shift(before.head(1, 0), after.head(1, 0), embeddings, corpus, k=2).text_shift == 0.0  # top 2 kept
    with pytest.raises(ConfigError, match="at least 1"):
        head_shift(before.head(1, 0), after.head(1, 0), embeddings, corpus, k=0)


def test_explanation_table_follows_the_weight_ranking():
    corpus, embeddings = _corpus()
    before, after = _result(corpus, embeddings, PLANTED_BEFORE), _result(corpus, embeddings, PLANTED_AFTER)
    changes = pd.DataFrame({"layer": [1, 0, 0, 1, 2], "head": [1, 1, 0, 0, 0], "ov_change": [0.9, 0.5, 0.1, 0.3, 0.8]})
    changes = changes.sort_values("ov_change", ascending=False, ignore_index=True).assign(rank=range(1, 6))
    table = explanation_shifts(before, after, changes, k=4)
    assert list(zip(table["layer"], table["head"])) == [(1, 1), (0, 1), (1, 0), (0, 0)]  # layer 2 not analysed
    assert table["rank"].tolist() == [1, 3, 4, 5]
    assert table["text_shift"].tolist() == pytest.approx([0.25, 1.0, 0.5, 0.0])
    assert table["texts_before"].iloc[2] == "p0 | p1 | p2" and table["entered_texts"].iloc[2] == "p8 | p9"
    assert top_changed_heads(changes, 2) == [(1, 1), (2, 0)]
    assert top_changed_heads(changes, 2, layers=(0, 1)) == [(1, 1), (0, 1)]
    assert layers_to_explain(12, changes, 3) == (0, 1, 2, 8, 9, 10, 11)  # last four + those of the top three
    with pytest.raises(ConfigError, match="does not cover"):
        explanation_shifts(before, after, changes[changes["layer"] != 0], k=4)
    other = dataclasses.replace(after, corpus=list(reversed(corpus)))
    with pytest.raises(ConfigError, match="different corpora"):
        explanation_shifts(before, other, changes)


def test_shift_correlation_is_spearman_with_a_permutation_p_value():
    rng = np.random.default_rng(0)
    x = rng.normal(size=16)
    table = pd.DataFrame({"ov_change": x, "up": np.exp(x), "down": -x ** 3, "noise": rng.normal(size=16)})
    up = shift_correlation(table, "ov_change", "up")
    assert up.rho == pytest.approx(1.0) and up.p_value < 1e-3 and up.n == 16
    assert shift_correlation(table, "ov_change", "down").rho == pytest.approx(-1.0)
    stats = pytest.importorskip("scipy.stats")
    noise = shift_correlation(table, "ov_change", "noise")
    reference = stats.spearmanr(table["ov_change"], table["noise"])
    assert noise.rho == pytest.approx(reference.statistic)
    assert noise.p_value == pytest.approx(reference.pvalue, abs=0.03)
    assert "n = 16 heads" in noise.text()
    with pytest.raises(ConfigError, match="at least 3"):
        shift_correlation(table.head(2), "ov_change", "up")
    with pytest.raises(ConfigError, match="no column"):
        shift_correlation(table, "qk_change", "up")


# ----- the Explain page starts from the Heads ranking (AppTest) ------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One CLIP-SVD run of the tiny CLIP (2 layers × 2 heads), trained enough to move every head."""
    from clipsvd.data import DatasetSpec
    from clipsvd.runs import RunStore
    from clipsvd.training import ExperimentConfig, run_experiment
    from tests.conftest import TINY

    store = RunStore(tmp_path_factory.mktemp("explain-runs"))
    config = ExperimentConfig(method="clip-svd", model=TINY, dataset=DatasetSpec("builtin", "animal-shape"), shots=1,
                              seed=1, device="cpu", hyperparameters={"epochs": 2, "lr": 1e-2}, max_test_per_class=2)
    run = run_experiment(config, store)
    assert run.status == "completed"
    return store, run


def _ranking(run, measure: str) -> pd.DataFrame:
    from clipsvd.analysis import head_changes
    from clipsvd.analysis.run_pair import load_run_pair

    pair = load_run_pair(run, "cpu")
    return head_changes(pair.before, pair.method, "visual", measure)


def _shown_heads(at):
    [heads] = [m for m in at.multiselect if m.label == "Heads to explain"]
    return heads.value


def test_explain_defaults_to_the_top_of_the_heads_ranking_under_the_measure_chosen_on_heads(tiny_run):
    from tests.test_app import app_at, assert_clean

    store, run = tiny_run
    at = app_at("pages/4_Heads.py", store.root)
    assert_clean(at)
    at.selectbox(key="_w_heads_measure").select("qk_change").run()
    assert_clean(at)
    assert at.selectbox(key="_w_heads_measure").value == "qk_change"  # the choice survives its own rerun
    assert at.session_state["heads_measure"] == "qk_change" and at.query_params["measure"] in ("qk_change",
                                                                                               ["qk_change"])
    at.switch_page("pages/5_Explain.py")
    at.run()
    assert at.selectbox(key="_w_explain_measure").value == "qk_change"  # carried across pages
    at.button(key="run-textspan").click().run()
    assert_clean(at)
    ranking = _ranking(run, "qk_change")
    assert _shown_heads(at) == top_changed_heads(ranking, 3)
    assert [m.value for m in at.metric if m.label == "Weight-change rank"] == ["#1 of 4", "#2 of 4", "#3 of 4"]
    assert [m.value for m in at.metric if m.label == "qk_change"] == [f"{v:.3g}" for v in ranking["qk_change"][:3]]
    assert {m.label for m in at.metric} >= {"Text shift", "Span shift"}
    assert any("kept" in m.value or "entered" in m.value for m in at.markdown)  # marked side-by-side lists
    assert any("Spearman rank correlation" in m.value for m in at.markdown)
    at.radio(key="_w_ts_order").set_value("variance after fine-tuning").run()  # the old ordering stays available
    assert_clean(at)
    assert len(_shown_heads(at)) == 3


def test_explain_reads_the_measure_from_the_url_and_builds_the_report(tiny_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, TIMEOUT, assert_clean

    def quick_umap(pair, dataset, seed=0):  # UMAP's first fit compiles for ~10 s; tested in test_analysis
        n = len(dataset.test)
        return pd.DataFrame({"x": np.arange(2 * n, dtype=float), "y": np.zeros(2 * n),
                             "label": [dataset.classnames[i] for i in dataset.test.labels] * 2,
                             "which": ["before"] * n + ["after"] * n, "index": list(range(n)) * 2})

    monkeypatch.setattr("clipsvd.report.content.run_umap", quick_umap)
    store, run = tiny_run
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["runs_root"] = str(store.root)
    at.query_params["measure"] = "value_change"
    at.query_params["run"] = run.run_id
    at.switch_page("pages/5_Explain.py")
    at.run()
    assert_clean(at)
    assert at.selectbox(key="_w_explain_measure").value == "value_change"
    at.button(key="run-textspan").click().run()
    assert _shown_heads(at) == top_changed_heads(_ranking(run, "value_change"), 3)
    at.checkbox(key="_w_report_pdf").uncheck().run()
    at.button(key="build_report").click().run()
    assert_clean(at)
    files = at.session_state["report-files"]
    assert files["pdf"] is None and b"Explanations before vs after" in files["html"]
    assert run.run_id.encode() in files["html"] and not files["failures"]


def test_textspan_choice_is_stable_on_a_rank_deficient_head():
    """A head writes into few directions (at most its width); the span TextSpan projects onto stops at C's
    numerical rank, so a float32-sized perturbation of C no longer turns later choices (the explanation shift's
    noise floor: before this, a 1e-7 change of CLIP-SVD's σ changed the world CLIP's texts)."""
    from clipsvd.analysis.textspan import text_span

    generator = torch.Generator().manual_seed(0)
    contributions = torch.randn(200, 6, generator=generator, dtype=torch.float64) @ torch.randn(
        6, 64, generator=generator, dtype=torch.float64)  # rank 6 in 64 dimensions
    texts = torch.randn(150, 64, generator=generator, dtype=torch.float64)
    choice = text_span(contributions, texts, 6)
    assert choice.rank == 6
    for seed in range(3):
        noise = 1e-7 * torch.randn(contributions.shape, generator=torch.Generator().manual_seed(seed + 1),
                                   dtype=torch.float64)
        again = text_span(contributions + noise, texts, 6)
        assert again.indices == choice.indices
        assert np.allclose(again.explained_variance, choice.explained_variance, atol=1e-5)


# ----- runs that changed no attention weight (CLIPFit, ProLIP) and zero-shot ------------------------------------

def test_shift_correlation_says_why_there_is_none_instead_of_nan():
    table = pd.DataFrame({"ov_change": [0.0] * 16, "span_shift": np.linspace(0, 0.8, 16),
                          "text_shift": [0.4] * 16, "qk_change": np.linspace(0, 1, 16)})
    unchanged = shift_correlation(table, "ov_change", "span_shift")
    assert unchanged.rho is None and unchanged.p_value is None and unchanged.n == 16 and not unchanged.defined
    assert unchanged.text() == "no correlation: no head's weights changed"
    same = shift_correlation(table, "qk_change", "text_shift")
    assert same.text() == "no correlation: every head has the same text shift (0.4)"
    assert "nan" not in (unchanged.text() + same.text()).lower()
    assert shift_correlation(table, "qk_change", "span_shift").rho == pytest.approx(1.0)


def test_heads_of_an_unchanged_run_are_ordered_by_explanation_shift():
    from clipsvd.analysis.explanation_shift import by_explanation_shift, top_shifted_heads

    table = pd.DataFrame({"rank": [1, 2, 3, 4], "layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "ov_change": 0.0,
                          "span_shift": [0.1, 0.7, 0.7, 0.0], "text_shift": [0.2, 0.4, 0.8, 0.0]})
    ordered = by_explanation_shift(table)
    assert list(zip(ordered["layer"], ordered["head"])) == [(1, 0), (0, 1), (0, 0), (1, 1)]  # span, then text
    assert ordered["shift_rank"].tolist() == [1, 2, 3, 4] and "rank" not in ordered  # no rank of zeros
    assert by_explanation_shift(ordered)["shift_rank"].tolist() == [1, 2, 3, 4]  # idempotent
    assert top_shifted_heads(table, 2) == [(1, 0), (0, 1)]
    assert top_changed_heads(table, 2, measure="ov_change") == []  # no head is "most changed"
    assert layers_to_explain(12, table.assign(layer=[0, 0, 1, 1]), 2, "ov_change") == (8, 9, 10, 11)


def test_shift_scatter_shows_both_series_and_names_only_the_top_heads():
    from clipsvd.plots.explanation import explanation_shift_figure, shift_scatter

    rng = np.random.default_rng(1)
    n = 24
    table = pd.DataFrame({"layer": np.repeat(np.arange(6), 4), "head": np.tile(np.arange(4), 6),
                          "ov_change": rng.uniform(0, 0.1, n), "span_shift": rng.uniform(0, 1, n)})
    table["text_shift"] = table["span_shift"]  # the two scores coincide: one series must not hide the other
    fig = shift_scatter(table, "ov_change", labelled=3)
    span, text = fig.data
    assert span.visible in (None, True) and text.visible in (None, True) and span.showlegend is not False
    assert span.marker.symbol != text.marker.symbol and "open" in text.marker.symbol  # a hollow marker over a dot
    named = [t for t in span.text if t]
    assert 3 <= len(named) <= 6  # top 3 by span shift ∪ top 3 by weight change, not all 24
    top_span = table.nlargest(3, "span_shift")
    assert {f"L{l}·H{h}" for l, h in zip(top_span["layer"], top_span["head"])} <= set(named)
    assert len(set(p for p, t in zip(span.textposition, span.text) if t)) > 1  # alternating label positions
    assert len(span.customdata) == n  # every head named on hover
    assert "nan" not in " ".join(trace.name for trace in fig.data).lower()
    bars = explanation_shift_figure(table.assign(ov_change=0.0), "ov_change")
    assert [trace.type for trace in bars.data] == ["bar", "bar"]  # no column of points at x = 0
    assert list(bars.data[1].y)[::-1][:2] == [f"L{l}·H{h}" for l, h in zip(top_span["layer"], top_span["head"])][:2]


def test_measure_labels_are_plain_text():
    from clipsvd.plots.heads import MEASURE_TITLES

    for title in MEASURE_TITLES.values():
        assert "^" not in title and "_{" not in title and "\\" not in title and "$" not in title, title


@pytest.fixture(scope="module")
def unchanged_runs(tmp_path_factory):
    """A CLIPFit run of the tiny CLIP trained hard enough that its heads' explanations move (LayerNorms only:
    no attention weight changes), and a zero-shot run (nothing trained)."""
    from clipsvd.data import DatasetSpec
    from clipsvd.runs import RunStore
    from clipsvd.training import ExperimentConfig, run_experiment
    from tests.conftest import TINY

    store = RunStore(tmp_path_factory.mktemp("unchanged-runs"))
    config = ExperimentConfig(method="clipfit", model=TINY, dataset=DatasetSpec("builtin", "animal-shape"), shots=1,
                              seed=1, device="cpu", hyperparameters={"epochs": 2, "lr": 1.0}, max_test_per_class=2)
    clipfit = run_experiment(config, store)
    zero_shot = run_experiment(dataclasses.replace(config, method="zero-shot", hyperparameters={}), store)
    assert clipfit.status == zero_shot.status == "completed"
    return store, clipfit, zero_shot


def _page_texts(at) -> list[str]:
    """Every text an AppTest page shows: element values and labels, widget options, tables, figures' JSON."""
    texts = []

    def walk(node) -> None:
        for attribute in ("value", "label", "body", "options", "help"):
            try:
                value = getattr(node, attribute, None)
            except Exception:  # some elements compute `value` from state they do not have
                continue
            if isinstance(value, pd.DataFrame):
                texts.append(value.to_string())
            elif value is not None and not callable(value):
                texts.append(str(value))
        if getattr(node, "type", None) == "plotly_chart":
            texts.append(node.proto.spec)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return texts


def _no_nan(at) -> None:
    found = [t for t in _page_texts(at) if re.search(r"\bnan\b", t, re.IGNORECASE)]
    assert not found, found[:3]


def _no_tex(at) -> None:
    labels = [o for s in at.selectbox for o in s.options] + [s.label for s in at.selectbox]
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        for axis in ("xaxis", "yaxis"):
            labels.append(str(spec["layout"].get(axis, {}).get("title", {}).get("text", "")))
    assert labels and not [t for t in labels if "^" in t or "_{" in t], labels


def test_heads_page_of_clipfit_and_zero_shot_says_why_nothing_is_ranked(unchanged_runs):
    from tests.test_app import app_at, assert_clean

    store, clipfit, zero_shot = unchanged_runs
    at = app_at("pages/4_Heads.py", store.root, run_id=clipfit.run_id)
    assert_clean(at)
    [note] = [i.value for i in at.info if "changed none of the visual attention heads" in i.value]
    assert "CLIPFit trains" in note and "Explain shows which heads' words moved" in note
    assert not at.get("plotly_chart") and not any(m.label == "Most changed" for m in at.metric)
    _no_nan(at)
    _no_tex(at)
    at = app_at("pages/4_Heads.py", store.root, run_id=zero_shot.run_id)
    assert_clean(at)
    assert any("Zero-shot CLIP trains nothing" in i.value for i in at.info)
    assert not at.get("plotly_chart")
    _no_nan(at)


def test_explain_orders_a_clipfit_runs_heads_by_explanation_shift(unchanged_runs):
    from tests.test_app import app_at, assert_clean

    store, clipfit, _ = unchanged_runs
    at = app_at("pages/5_Explain.py", store.root, run_id=clipfit.run_id)
    assert_clean(at)
    assert [i.value for i in at.info if "ordered by explanation shift" in i.value]  # the one line
    at.button(key="run-textspan").click().run()
    assert_clean(at)
    assert not any(m.label in ("Weight-change rank", "ov_change") for m in at.metric)  # no rank of zeros
    ranks = [m.value for m in at.metric if m.label == "Explanation-shift rank"]
    assert ranks == ["#1 of 4 analysed", "#2 of 4 analysed", "#3 of 4 analysed"]
    spans = [float(m.value) for m in at.metric if m.label == "Span shift"]
    assert spans == sorted(spans, reverse=True) and spans[0] > 0.3  # words moved although no weight did
    [heads] = [m for m in at.multiselect if m.label == "Heads to explain"]
    assert all("span shift" in option for option in heads.options)
    assert at.radio(key="_w_ts_order-unchanged").options == ["explanation shift", "variance after fine-tuning"]
    assert any("Every analysed head by explanation shift" == s.value for s in at.subheader)
    assert not any("ρ =" in m.value for m in at.markdown)
    [table] = [d.value for d in at.dataframe if "shift_rank" in d.value]
    assert "rank" not in table and table["span_shift"].is_monotonic_decreasing
    _no_nan(at)
    _no_tex(at)


def test_explain_of_a_zero_shot_run_says_nothing_was_trained(unchanged_runs):
    from tests.test_app import app_at, assert_clean

    store, _, zero_shot = unchanged_runs
    at = app_at("pages/5_Explain.py", store.root, run_id=zero_shot.run_id)
    assert_clean(at)
    [note] = [i.value for i in at.info if "trains nothing" in i.value]
    assert note.startswith("Zero-shot CLIP trains nothing")
    assert not at.button or not any(b.key == "run-textspan" for b in at.button)  # nothing to compare
    _no_nan(at)


def test_cli_analyze_of_a_clipfit_run_says_why_it_draws_no_head_ranking(unchanged_runs, tmp_path, capsys):
    from clipsvd.cli import main

    store, clipfit, _ = unchanged_runs
    out = tmp_path / "analysis"
    assert main(["--runs-dir", str(store.root), "analyze", clipfit.run_id, "--out", str(out), "--what", "heads",
                 "--format", "html", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "changed none of the visual attention heads: CLIPFit trains" in printed and "nan" not in printed
    assert (out / "heads.csv").exists() and not (out / "heads.html").exists()  # the zeros, but no chart of them
