"""The transfer protocols on the dashboard and in the reports: the Train page's targets widget (validated as the
CLI validates), the Compare/Reproduce table of source, targets and target average with the published averages
(none is published), the run report's target section, and the time estimate counting the targets' images."""
from __future__ import annotations

import time

import pandas as pd

import pytest

from clipsvd.data import DatasetSpec
from clipsvd.runs import RunStore
from tests.conftest import TINY
from tests.test_app import app_at, assert_clean
from tests.test_transfer import build_coop_tree

IMAGENET = "ImageNet"


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory):
    return build_coop_tree(tmp_path_factory.mktemp("DATA"))


def _train_page(tmp_path, root, name=IMAGENET):
    return app_at("pages/2_Train.py", tmp_path, dataset_spec=DatasetSpec("coop", name, str(root)))


# ---------------------------------------------------------------------------- Train page

def test_train_page_offers_the_targets_found_and_defaults_to_the_official_ones(tmp_path, coop_root):
    at = _train_page(tmp_path, coop_root)
    keys = [w.key for w in at.multiselect]
    assert not any(k.startswith("_w_train_targets") for k in keys)  # few-shot: no targets
    at.radio(key="_w_train_protocol").set_value("domain-generalization").run()
    assert_clean(at)
    [targets] = [w for w in at.multiselect if w.key.startswith("_w_train_targets")]
    assert targets.options == ["DescribableTextures", "EuroSAT", "ImageNetV2", "ImageNetSketch", "ImageNetA",
                               "ImageNetR"]  # what the data root holds, the source left out
    assert targets.value == ["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
    assert "datasets the trained run is also tested on" in targets.help  # the config field's help
    at.radio(key="_w_train_protocol").set_value("cross-dataset").run()
    [targets] = [w for w in at.multiselect if w.key.startswith("_w_train_targets")]
    assert targets.value == ["DescribableTextures", "EuroSAT"]  # the official ones found
    missing = " ".join(c.value for c in at.caption)
    assert "Official cross-dataset targets not under the data root: Caltech101" in missing
    assert "ucf101" in missing and "UCF-101-midframes" in missing
    targets.set_value([]).run()
    assert any("Choose at least one target" in w.value for w in at.warning)
    assert at.button(key="start_training").disabled


def test_train_page_shows_the_validation_message_and_starts_nothing(tmp_path, coop_root):
    at = _train_page(tmp_path, coop_root, name="imagenet_a")
    at.radio(key="_w_train_protocol").set_value("domain-generalization").run()
    assert not at.exception
    assert any("imagenet\\_a is test only (CoOp trains on none" in e.value for e in at.error), \
        [e.value for e in at.error]
    assert at.button(key="start_training").disabled


def test_train_page_runs_the_source_and_each_chosen_target(tmp_path, coop_root):
    at = _train_page(tmp_path, coop_root)
    at.radio(key="_w_train_protocol").set_value("cross-dataset").run()
    [targets] = [w for w in at.multiselect if w.key.startswith("_w_train_targets")]
    targets.set_value(["EuroSAT", "ImageNetR"]).run()
    [iterations] = [w.key for w in at.text_input if w.key.startswith("hp-clip-svd-") and w.key.endswith("-iterations")]
    at.text_input(key=iterations).input("2").run()
    at.button(key="start_training").click().run()
    assert_clean(at)
    deadline = time.time() + 120
    while time.time() < deadline and not any(s.value == "Runs of this job" for s in at.subheader):
        time.sleep(1)
        at.run()
    assert_clean(at)
    [run] = RunStore(tmp_path).list()
    assert run.status == "completed" and run.config["targets"] == ["EuroSAT", "ImageNetR"]
    assert run.metrics["targets"] == ["EuroSAT", "ImageNetR"] and run.metrics["steps"] == 2
    assert run.metrics["n_test_ImageNetR"] == 4 and run.metrics["target_average"] is not None


# ---------------------------------------------------------------------------- tables across runs

def _run(method, seed, accuracy, targets: dict, protocol="cross-dataset", run_id=None):
    from clipsvd.runs import Run
    from clipsvd.runs.metrics import target_average

    metrics = {"accuracy": accuracy, "targets": list(targets), "target_average": target_average(list(targets.values())),
               **{f"accuracy_{t}": a for t, a in targets.items()},
               **{f"n_test_{t}": 10 for t in targets}, **{f"n_test_split_{t}": 40 for t in targets}}
    config = {"method": method, "seed": seed, "protocol": protocol, "shots": 16, "targets": [],
              "dataset": {"kind": "coop", "name": IMAGENET, "root": "/data"}, "model": TINY.to_dict()}
    return Run(run_id or f"{method}-{seed}", config, metrics)


def test_transfer_summary_gives_source_each_target_and_their_average_over_seeds():
    from clipsvd.reproduce.transfer import target_names, transfer_rows, transfer_summary, transfer_view

    runs = [_run("clip-svd", 1, 70.0, {"EuroSAT": 40.0, "DescribableTextures": 50.0}),
            _run("clip-svd", 2, 72.0, {"EuroSAT": 44.0, "DescribableTextures": 52.0}),
            _run("linear-probe", 1, 60.0, {"EuroSAT": None, "DescribableTextures": None}),
            _run("zero-shot", 1, 66.0, {"EuroSAT": 30.0, "DescribableTextures": 45.0}, protocol="few-shot")]
    rows = transfer_rows(runs)
    assert len(rows) == 3  # the few-shot run is no transfer run
    targets = target_names(rows)
    assert targets == ["EuroSAT", "DescribableTextures"]  # the runs' order
    summary = transfer_summary(rows).set_index("method")
    svd = summary.loc["clip-svd"]
    assert svd["accuracy_mean"] == pytest.approx(71.0) and svd["accuracy_std"] == pytest.approx(2 ** 0.5)
    assert svd["accuracy_EuroSAT_mean"] == pytest.approx(42.0)
    assert svd["target_average_mean"] == pytest.approx((45.0 + 48.0) / 2)
    assert svd["published"].startswith("not published: HealthX-Lab/CLIP-SVD@022b1eda02df README.md")
    probe = summary.loc["linear-probe"]
    assert pd.isna(probe["target_average_mean"]) and "cannot score new classes" in probe["note"]
    view = transfer_view(transfer_summary(rows), targets).set_index("method")
    assert list(view.columns[:6]) == ["runs", "seeds", "source", "EuroSAT", "DescribableTextures", "target average"]
    assert view.loc["clip-svd", "source"] == "71.00 ± 1.41"
    assert view.loc["clip-svd", "target average"] == "46.50 ± 2.12"
    assert view.loc["linear-probe", "EuroSAT"] == "—"
    assert set(view["published target average"]) == {"not published"}


def test_a_method_scored_on_different_targets_gets_no_average():
    from clipsvd.reproduce.transfer import transfer_rows, transfer_summary

    rows = transfer_rows([_run("clip-svd", 1, 70.0, {"EuroSAT": 40.0}),
                          _run("clip-svd", 2, 72.0, {"EuroSAT": 44.0, "DescribableTextures": 52.0})])
    [row] = transfer_summary(rows).to_dict("records")
    assert pd.isna(row["target_average_mean"]) and "different targets" in row["note"]
    assert pd.isna(row["accuracy_DescribableTextures_mean"])  # seed 1 has none: no mean of one seed's value


def test_published_target_average_says_why_none_ships():
    from clipsvd.reproduce.transfer import published_target_average

    for method, where in (("prolip", "Table 4"), ("clipfit", "minglllli/CLIPFit@0058c6ca5e51"),
                          ("coop", "no official README")):
        value, why = published_target_average(method, "domain-generalization")
        assert value is None and why.startswith("not published") and where in why
    with pytest.raises(ValueError, match="few-shot is not a transfer protocol"):
        published_target_average("clip-svd", "few-shot")


# ---------------------------------------------------------------------------- run report

def test_report_lists_each_target_and_the_average():
    from clipsvd.report.content import RunAnalysis
    from clipsvd.report.html import _config, _Figures, _metrics

    run = _run("clip-svd", 1, 70.0, {"EuroSAT": 40.0, "DescribableTextures": 52.5})
    html = _metrics(RunAnalysis(run, "tiny", "ov_change"), _Figures())
    assert "<h3>Targets (cross-dataset)</h3>" in html
    assert "<td>EuroSAT</td><td class=\"num\">40.00</td><td>10 of 40</td>" in html
    assert "<td>DescribableTextures</td><td class=\"num\">52.50</td>" in html
    assert "target average 46.25 %" in html
    assert "EuroSAT, DescribableTextures" in _config(RunAnalysis(run, "tiny", "ov_change"), _Figures())
    few = _run("clip-svd", 1, 70.0, {}, protocol="few-shot")
    assert "Targets" not in _metrics(RunAnalysis(few, "tiny", "ov_change"), _Figures())


# ---------------------------------------------------------------------------- time estimate

def test_estimate_counts_each_targets_test_images(coop_root):
    from clipsvd.training import ExperimentConfig
    from clipsvd.training.estimate import Rates, estimate_run

    rates = Rates(0.5, 0.01, "given")
    source = DatasetSpec("coop", IMAGENET, str(coop_root))

    def images(method="zero-shot", **kw):
        return estimate_run(ExperimentConfig(method=method, model=TINY, dataset=source, shots=1, **kw), rates
                            ).test_images

    alone = images()
    assert alone == 4  # ImageNet's val images
    assert images(protocol="cross-dataset", targets=["DTD"]) == alone + 6
    assert images(protocol="cross-dataset", targets=["DTD", "EuroSAT"]) == alone + 6 + 4
    assert images(protocol="domain-generalization") == alone + 4 + 4 + 4 + 4
    assert images(protocol="domain-generalization", max_test_per_class=1) == alone + 4 + 4 + 2 + 2
    # a method that cannot score new classes skips the targets: they cost nothing
    assert images("linear-probe", protocol="cross-dataset", targets=["DTD"]) == alone


# ---------------------------------------------------------------------------- Compare and Reproduce pages

@pytest.fixture(scope="module")
def transfer_store(coop_root, tmp_path_factory):
    """Domain-generalization runs of the tiny model: zero-shot over two seeds, CLIP-SVD (2 steps) over one."""
    from clipsvd.training import ExperimentConfig, run_experiment

    store = RunStore(tmp_path_factory.mktemp("runs"))
    for method, seed in (("zero-shot", 1), ("zero-shot", 2), ("clip-svd", 1)):
        config = ExperimentConfig(method=method, model=TINY, dataset=DatasetSpec("coop", IMAGENET, str(coop_root)),
                                  protocol="domain-generalization", shots=1, seed=seed, device="cpu",
                                  hyperparameters={"iterations": 2} if method == "clip-svd" else {})
        assert run_experiment(config, store).status == "completed"
    return store


def _shown_table(at):
    """The transfer table on a page: source accuracy and the published target average."""
    return next(d.value for d in at.dataframe if {"source", "published target average"} <= set(d.value.columns))


def test_compare_page_shows_source_targets_and_average(transfer_store):
    at = app_at("pages/7_Compare.py", transfer_store.root)
    assert_clean(at)
    assert at.selectbox(key="_w_cmp_protocol").value == "domain-generalization"
    assert any(s.value == "Source, targets and their average" for s in at.subheader)
    table = _shown_table(at).set_index("method")
    assert list(table.columns[2:8]) == ["source", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR",
                                        "target average"]
    runs = {r.config["method"]: r for r in transfer_store.list() if r.config["seed"] == 1}
    assert table.loc["clip-svd", "ImageNetA"] == f"{runs['clip-svd'].metrics['accuracy_ImageNetA']:.2f}"
    assert table.loc["clip-svd", "target average"] == f"{runs['clip-svd'].metrics['target_average']:.2f}"
    assert set(table["published target average"]) == {"not published"}


def test_reproduce_page_lists_the_stores_transfer_runs(transfer_store, tmp_path):
    at = app_at("pages/9_Reproduce.py", transfer_store.root)
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.value == "Cross-dataset and domain generalisation" for s in at.subheader)
    assert any("source ImageNet · 1-shot" in m.value for m in at.markdown)
    table = _shown_table(at).set_index("method")
    assert table.loc["zero-shot", "runs"] == 2 and table.loc["zero-shot", "seeds"] == "1, 2"
    empty = app_at("pages/9_Reproduce.py", tmp_path)
    assert any("No completed cross-dataset or domain-generalization run" in c.value for c in empty.caption)


# ---------------------------------------------------------------------------- one transfer run: Runs page, CLI, report

def _transfer_run(store):
    return next(r for r in store.list() if r.config["method"] == "clip-svd")


def _expected_rows(run) -> list[tuple]:
    """(dataset, role, accuracy) straight from the run's metrics.json, the order the run was scored in."""
    m = run.metrics
    return ([(IMAGENET, "source", m["accuracy"])] + [(t, "target", m[f"accuracy_{t}"]) for t in m["targets"]]
            + [("target average", "average", m["target_average"])])


def _assert_rows(table: pd.DataFrame, run) -> None:
    expected = _expected_rows(run)
    assert list(zip(table["dataset"], table["role"])) == [(d, r) for d, r, _ in expected]
    assert list(table["accuracy"]) == pytest.approx([a for _, _, a in expected])


def test_run_transfer_table_has_source_targets_and_average_and_nothing_for_few_shot():
    from clipsvd.runs import run_transfer_table

    run = _run("linear-probe", 1, 70.0, {"EuroSAT": None, "DescribableTextures": 52.5})
    table = run_transfer_table(run)
    assert list(table["dataset"]) == [IMAGENET, "EuroSAT", "DescribableTextures", "target average"]
    assert list(table["role"]) == ["source", "target", "target", "average"]
    assert table["accuracy"].iloc[0] == 70.0 and table["accuracy"].iloc[2] == 52.5
    assert pd.isna(table["accuracy"].iloc[1]) and pd.isna(table["accuracy"].iloc[3])  # no score: no average
    assert list(table["test_images"])[1:3] == ["10 of 40", "10 of 40"]
    assert run_transfer_table(_run("clip-svd", 1, 70.0, {}, protocol="few-shot")).empty


def test_runs_page_shows_a_transfer_runs_source_targets_and_average(transfer_store, tmp_path):
    run = _transfer_run(transfer_store)
    at = app_at("pages/8_Runs.py", transfer_store.root, run_id=run.run_id)
    assert_clean(at)
    assert at.selectbox(key="_w_runs_page").value == run.run_id
    assert at.tabs[0].label == "Source and targets"
    shown = next(d.value for d in at.dataframe if "role" in d.value.columns)
    _assert_rows(shown, run)
    assert shown["test_images"].iloc[1] == f"{run.metrics['n_test_ImageNetV2']} of " \
                                           f"{run.metrics['n_test_split_ImageNetV2']}"
    assert "domain-generalization: trained on ImageNet" in " ".join(c.value for c in at.caption)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "CSV" in labels and "LaTeX (booktabs)" in labels
    # a few-shot run has no such tab
    few = RunStore(tmp_path)
    few.save(_run("clip-svd", 1, 70.0, {}, protocol="few-shot", run_id="few-shot-run"), {})
    at = app_at("pages/8_Runs.py", few.root, run_id="few-shot-run")
    assert_clean(at)
    assert "Source and targets" not in [t.label for t in at.tabs]
    assert not any("role" in d.value.columns for d in at.dataframe)


def test_runs_show_prints_the_transfer_table_beside_the_json(transfer_store, capsys):
    import json

    from clipsvd.cli import main

    run = _transfer_run(transfer_store)
    assert main(["--runs-dir", str(transfer_store.root), "runs", "show", run.run_id]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["metrics"]["targets"] == run.metrics["targets"]  # stdout stays JSON
    lines = printed.err.splitlines()
    assert lines[0] == "domain-generalization: trained on ImageNet, scored unchanged on each target"
    assert lines[1].split() == ["dataset", "role", "accuracy", "(%)", "test", "images"]
    for line, (dataset, role, accuracy) in zip(lines[2:], _expected_rows(run), strict=True):
        head = dataset.split() + [role, f"{accuracy:.2f}"]
        assert line.split()[:len(head)] == head, line
    assert lines[-3].split()[-3:] == [str(run.metrics["n_test_ImageNetA"]), "of",
                                      str(run.metrics["n_test_split_ImageNetA"])]
    few = _run("zero-shot", 1, 70.0, {}, protocol="few-shot", run_id="few")
    transfer_store.save(few, {})
    try:
        assert main(["--runs-dir", str(transfer_store.root), "runs", "show", "few"]) == 0
        assert capsys.readouterr().err == ""
    finally:
        transfer_store.delete("few")


def test_transfer_latex_escapes_and_refuses_a_run_without_targets():
    from clipsvd.errors import ConfigError
    from clipsvd.report import transfer_latex

    run = _run("clip-svd", 1, 70.0, {"Food_101": 40.0, "EuroSAT": None})
    tex = transfer_latex(run)
    assert r"\begin{tabular}{llrr}" in tex and r"dataset & role & accuracy (\%) & test images \\" in tex
    assert r"ImageNet & source & 70.00 & " in tex
    assert r"Food\_101 & target & 40.00 & 10 of 40 \\" in tex
    assert r"EuroSAT & target & -- & 10 of 40 \\" in tex and r"target average & average & -- & --- \\" in tex
    with pytest.raises(ConfigError, match="few-shot.*has no targets"):
        transfer_latex(_run("clip-svd", 1, 70.0, {}, protocol="few-shot"))


def test_report_writes_the_targets_table_as_csv_and_latex(transfer_store, tmp_path, capsys, monkeypatch):
    from clipsvd.cli import main

    def layout(pair, dataset, seed=0):  # UMAP's first fit compiles for ~10 s (tested in test_analysis)
        n = len(dataset.test)
        return pd.DataFrame({"x": [float(i) for i in range(2 * n)], "y": [0.0] * (2 * n),
                             "label": [dataset.classnames[i] for i in dataset.test.labels] * 2,
                             "which": ["before"] * n + ["after"] * n, "index": list(range(n)) * 2})

    monkeypatch.setattr("clipsvd.report.content.run_umap", layout)
    run = _transfer_run(transfer_store)
    out = tmp_path / "report.html"
    code = main(["--runs-dir", str(transfer_store.root), "report", run.run_id, "--out", str(out),
                 "--images-per-class", "1", "--texts-per-head", "4", "--top-heads", "1", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    csv = pd.read_csv(tmp_path / "report-targets.csv")
    _assert_rows(csv, run)
    tex = (tmp_path / "report-targets.tex").read_text(encoding="utf-8")
    assert f"ImageNetA & target & {run.metrics['accuracy_ImageNetA']:.2f} &" in tex
    assert f"target average & average & {run.metrics['target_average']:.2f} &" in tex
    html = out.read_text(encoding="utf-8")
    assert "<h3>Targets (domain-generalization)</h3>" in html and "LaTeX (booktabs)" in html
    assert "ImageNetSketch &amp; target" in html  # the same LaTeX, escaped into the page the PDF prints
