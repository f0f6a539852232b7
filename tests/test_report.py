"""The report: the paper table in LaTeX (structure, escaping), and the HTML report — written by the CLI for one
run and for two side by side — opened in Chromium with every figure drawn, offline; its PDF."""
import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipsvd.cli import main
from clipsvd.data import DatasetSpec
from clipsvd.errors import ConfigError
from clipsvd.report import explanation_latex, latex_escape, latex_table
from clipsvd.report.html import FIGURE_CLASS
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, run_experiment
from tests.conftest import TINY

CHROMIUM = Path("/usr/bin/chromium")
NASTY = r"50% of cells_with & #1 {x} ~ ^ $5 \ <b>"


# ----- LaTeX -------------------------------------------------------------------------------------------

def _explanation_table() -> pd.DataFrame:
    return pd.DataFrame({
        "rank": [1, 2, 3], "layer": [3, 0, 2], "head": [1, 0, 3], "ov_change": [0.2, 0.15, float("nan")],
        "text_shift": [0.4, 0.0, 1.0], "span_shift": [0.21, 0.0, 0.9], "explained_before": [0.6, 0.5, 0.4],
        "explained_after": [0.55, 0.5, 0.3], "texts_before": [NASTY + " | a red_disc", "b | c", "d"],
        "texts_after": ["x | y", "b | c", "100% stain"], "k": 5})


def _unescaped(text: str, char: str) -> int:
    return len(re.findall(r"(?<!\\)" + re.escape(char), text))


def test_latex_table_is_balanced_booktabs_with_escaped_cells():
    latex = explanation_latex(_explanation_table())
    lines = latex.splitlines()
    for env in ("table", "tabular"):
        assert latex.count(rf"\begin{{{env}}}") == latex.count(rf"\end{{{env}}}") == 1
    assert lines.index(r"\toprule") < lines.index(r"\midrule") < lines.index(r"\bottomrule")
    spec = re.search(r"\\begin\{tabular\}\{(.*)\}$", latex, re.M).group(1)
    n_columns = len(re.findall(r"[lcr]|p\{[^}]*\}", spec))
    rows = lines[lines.index(r"\toprule") + 1: lines.index(r"\bottomrule")]
    rows = [row for row in rows if row != r"\midrule"]
    assert len(rows) == 1 + 3  # header + one per head
    for row in rows:
        assert row.endswith(r" \\") and _unescaped(row, "&") == n_columns - 1, row
        for char in "%_#":
            assert _unescaped(row, char) == 0, (char, row)
        assert _unescaped(row, "$") % 2 == 0, row  # only the math of our own signs (L3$\cdot$H1), balanced
    body = "\n".join(rows)
    assert r"50\% of cells\_with \& \#1 \{x\} \textasciitilde{} \textasciicircum{} \$5 \textbackslash{}" in body
    assert r"ov\_change" in rows[0] and r"L3$\cdot$H1" in body and "--" in rows[3]  # NaN shown as --
    assert "a red\\_disc" in body and "; " in body  # texts separated by semicolons, not bars
    assert latex.count("{") - latex.count(r"\{") == latex.count("}") - latex.count(r"\}")  # braces balanced
    assert r"\label{tab:explanation-shift}" in latex


def test_tiny_numbers_stay_readable_in_tables_the_report_and_latex():
    from clipsvd.formatting import column_number_format, number_text
    from clipsvd.report.html import _number
    from clipsvd.report.latex import _cell

    assert number_text(3e-10) == "3e-10" and number_text(0.1234) == "0.123" and number_text(0.0) == "0.000"
    assert number_text(12345.678, grouping=True) == "12,345.678" and number_text(float("nan")) == "—"
    assert _number(np.float64(3e-10)) == "3e-10" and _cell(3e-10, 3) == "3e-10"  # not "0.000"
    assert _number(np.float64(0.5)) == "0.500" and _cell(0.5, 2) == "0.50"
    # Streamlit's NumberColumn reads printf formats: the tiny column gets significant digits, as the report.
    assert column_number_format([0.5, 3e-10, 0.0]) == "%.3g" and "%.3g" % 3e-10 == "3e-10"
    assert column_number_format([0.5, 0.0, float("nan")]) == "%.3f"
    assert "0000000003" not in ("%.3g" % 3e-10) + number_text(3e-10)


def test_latex_table_refuses_bad_input_and_escapes_captions():
    frame = pd.DataFrame({"a": ["x_1"], "b": [0.5]})
    assert latex_table(frame, {"a": "A_%", "b": "B"}, ["l", "r"], caption="a 5% caption").count(r"\%") == 2
    assert latex_escape("σ·ρ → 1") == r"$\sigma$$\cdot$$\rho$ $\to$ 1"
    with pytest.raises(ConfigError, match="alignments"):
        latex_table(frame, {"a": "A"}, ["l", "r"])
    with pytest.raises(ConfigError, match="no columns"):
        latex_table(frame, {"c": "C"}, ["l"])
    with pytest.raises(ConfigError, match="label"):
        latex_table(frame, {"a": "A"}, ["l"], label="bad label}")


# ----- the report ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[RunStore, list[str]]:
    """CLIP-SVD and CLIPFit of the tiny CLIP on the same data: what the report compares."""
    store = RunStore(tmp_path_factory.mktemp("report-runs"))
    base = ExperimentConfig(method="clip-svd", model=TINY, dataset=DatasetSpec("builtin", "animal-shape"), shots=1,
                            seed=1, device="cpu", hyperparameters={"epochs": 2, "lr": 1e-2}, max_test_per_class=2)
    runs = [run_experiment(base, store), run_experiment(dataclasses.replace(base, method="clipfit"), store)]
    assert all(run.status == "completed" for run in runs)
    return store, [run.run_id for run in runs]


@pytest.fixture
def quick_umap(monkeypatch):
    """UMAP's first fit compiles for ~10 s; it is tested in test_analysis. Here a layout of the right shape."""
    def layout(pair, dataset, seed=0):
        n = len(dataset.test)
        labels = [dataset.classnames[i] for i in dataset.test.labels]
        xy = np.random.default_rng(seed).normal(size=(2 * n, 2))
        return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": labels * 2,
                             "which": ["before"] * n + ["after"] * n, "index": list(range(n)) * 2})
    monkeypatch.setattr("clipsvd.report.content.run_umap", layout)


def _rendered_figures(html_file: Path) -> tuple[int, int, list[str]]:
    """(figure containers, those with a drawn plotly SVG, requests that left the file) in a real Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
    outside: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox",
                                             "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.route(re.compile(r"^(?!file:|data:)"), lambda route: (outside.append(route.request.url),
                                                                       route.abort()))
            page.goto(html_file.as_uri(), wait_until="load")
            selector = f".{FIGURE_CLASS} .js-plotly-plot .main-svg"
            page.wait_for_function(f"document.querySelectorAll('.{FIGURE_CLASS}').length === "
                                   f"new Set([...document.querySelectorAll('{selector}')].map("
                                   f"s => s.closest('.{FIGURE_CLASS}'))).size", timeout=60_000)
            total = page.locator(f".{FIGURE_CLASS}").count()
            drawn = page.evaluate(f"new Set([...document.querySelectorAll('{selector}')].map("
                                  f"s => s.closest('.{FIGURE_CLASS}'))).size")
        finally:
            browser.close()
    return total, drawn, outside


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)")
def test_cli_report_of_two_runs_opens_in_chromium_with_every_figure(two_runs, quick_umap, tmp_path, capsys):
    store, (svd_run, clipfit_run) = two_runs
    out = tmp_path / "report.html"
    code = main(["--runs-dir", str(store.root), "report", svd_run, "--compare", clipfit_run, "--out", str(out),
                 "--images-per-class", "2", "--texts-per-head", "6", "--top-heads", "2", "--pdf"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    html = out.read_text(encoding="utf-8")
    assert "<script src" not in html and 'src="http' not in html  # plotly.js and images inline: opens offline
    # per run: training history, σ shifts, singular-vector turns, head bar + heatmap, weight vs shift scatter, UMAP;
    # joint: 2 bars. CLIPFit changes no attention weight: no head bar or heatmap (a line says why), shift bars for
    # the scatter. Same base: CLIP-SVD against CLIPFit directly adds σ shifts, turns, head bar + heatmap, scatter.
    expected = 7 + 5 + 2 + 5
    body = html.split("</head>", 1)[1]  # plotly.js itself is full of NaN
    assert not re.search(r"\bnan\b", body, re.IGNORECASE)
    assert "This run changed none of the image tower&#x27;s attention weights: CLIPFit trains" in body
    assert "no correlation: no head&#x27;s weights changed" in body and "by explanation shift" in body
    assert html.count(f'class="{FIGURE_CLASS}"') == expected
    total, drawn, outside = _rendered_figures(out)
    assert (total, drawn) == (expected, expected) and outside == []
    for text in ("Configuration", "Metrics", "Singular-value shifts", "How far the top 8 singular vectors turned",
                 "trains only σ and keeps every singular vector", "Head ranking", "Explanations before vs after",
                 "Embeddings (UMAP)", "Side by side", "The two runs against each other", svd_run, clipfit_run, "clipfit · seed 1", "mark-entered",
                 r"\begin{tabular}", "Spearman"):
        assert text in html, text
    assert "data:image/png;base64," in html or "entered" not in html  # images of entered texts, inline
    pdf = out.with_suffix(".pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
    for run_id in (svd_run, clipfit_run):
        table = pd.read_csv(tmp_path / f"report-{run_id}.csv")
        assert {"rank", "ov_change", "text_shift", "span_shift", "texts_before", "texts_after"} <= set(table.columns)
        assert (tmp_path / f"report-{run_id}.tex").read_text().startswith(r"\begin{table}")


def test_cli_report_refuses_a_bad_measure_and_the_same_run_twice(two_runs, capsys):
    store, (run_id, _) = two_runs
    assert main(["--runs-dir", str(store.root), "report", run_id, "--measure", "nonsense"]) == 2
    assert "--measure" in capsys.readouterr().err
    assert main(["--runs-dir", str(store.root), "report", run_id, "--compare", run_id]) == 2
    assert "different run" in capsys.readouterr().err


def test_report_metrics_say_their_units_and_the_test_images_measured_on():
    from clipsvd.report.content import RunAnalysis
    from clipsvd.report.html import _Figures, _metrics
    from clipsvd.runs import Run

    run = Run("r1", {"method": "clip-svd", "seed": 1, "max_test_per_class": 2},
              {"accuracy": 12.5, "n_test_all": 16, "n_test_split_all": 800, "trainable_fraction": 0.001},
              history=[{"epoch": 1, "loss": 2.0, "train_accuracy": 0.125}])
    html = _metrics(RunAnalysis(run, "tiny", "ov_change"), _Figures())
    assert "accuracy (%)" in html and "12.500" in html and "16 of 800" in html and "subset" in html
    assert "0.1000% of the model" in html
    older = Run("r0", {"method": "clip-svd", "seed": 1, "max_test_per_class": 2}, {"accuracy": 12.5, "n_test_all": 16})
    html = _metrics(RunAnalysis(older, "tiny", "ov_change"), _Figures())
    assert "16 of ?" in html and "not recorded" in html
