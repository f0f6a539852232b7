"""The peer methods (issue 23) end to end: each trains a few steps through the real `run_experiment` on the world
CLIP, its run opens on every page, its adapters reload with `clipsvd eval` to the same accuracy, the report shows
its singular-vector turns or its learned words, and a sweep of two of them runs on Ray."""
import dataclasses
import json

import pytest

from clipsvd.analysis.run_pair import analysis_images, load_run_pair
from clipsvd.cli import main
from clipsvd.data import DatasetSpec
from clipsvd.methods import get_method
from clipsvd.models import ModelSpec
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, run_experiment
from tests.test_app import PAGES, app_at, assert_clean

PEERS = ("clip-lora", "coop", "lora", "dora", "pissa")
WORLD = DatasetSpec("builtin", "world-shape-microscopy")
NO_WEIGHT = "changes no weight of the model"


@pytest.fixture(scope="module")
def peer_store(tmp_path_factory) -> tuple[RunStore, dict[str, str]]:
    """One tiny run per peer method on the world CLIP: 2 iterations, 1 shot, 2 test images per class."""
    store = RunStore(tmp_path_factory.mktemp("peer-runs"))
    base = ExperimentConfig(method="clip-lora", model=ModelSpec.default(), dataset=WORLD, shots=1, seed=1,
                            device="cpu", hyperparameters={"iterations": 2}, max_test_per_class=2)
    ids = {}
    for name in PEERS:
        run = run_experiment(dataclasses.replace(base, method=name), store)
        assert run.status == "completed", run.message
        assert run.metrics["steps"] == 2
        ids[name] = run.run_id
    return store, ids


@pytest.mark.parametrize("name", PEERS)
def test_a_peer_run_opens_on_every_page(name, peer_store):
    store, ids = peer_store
    method = get_method(name)
    for page, title in PAGES.items():
        at = app_at(page, store.root, run_id=ids[name])
        assert_clean(at)
        assert at.title[0].value == title
        infos = " ".join(i.value for i in at.info)
        if page == "pages/3_Singular_values.py":
            if method.changes_weights:  # σ heatmap, spectrum and how far the singular vectors turned
                assert len(at.get("plotly_chart")) >= 3
                assert any(s.value == "How far the top singular vectors turned" for s in at.subheader)
                assert NO_WEIGHT not in infos
            else:
                assert NO_WEIGHT in infos and not at.get("plotly_chart")
        if page in ("pages/4_Heads.py", "pages/5_Explain.py", "pages/10_Verify.py"):
            assert (NO_WEIGHT in infos) == (not method.changes_weights)
        if page == "pages/8_Runs.py":
            assert ("Learned prompt" in [t.label for t in at.tabs]) == method.learns_context
            if method.learns_context:
                words = [d.value for d in at.dataframe if "word" in d.value.columns]
                assert words and len(words[0]) == 16 * 3  # 16 context vectors × 3 nearest words
                assert (words[0]["distance"] >= 0).all()


@pytest.mark.parametrize("name", PEERS)
def test_clipsvd_eval_reloads_a_peer_run_to_the_same_accuracy(name, peer_store, capsys):
    store, ids = peer_store
    run = store.load(ids[name])
    code = main(["--runs-dir", str(store.root), "eval", run.run_id, "--device", "cpu", "--max-test-per-class", "2"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["accuracy"] == pytest.approx(run.metrics["accuracy"])


def test_the_report_shows_lora_turns_and_coop_words(peer_store, monkeypatch):
    from clipsvd.errors import ClipsvdError
    from clipsvd.report import analyse_run, report_html

    def skipped(*args, **kwargs):  # TextSpan and UMAP have their own report tests (test_report.py): minutes here
        raise ClipsvdError("not computed in this test")

    monkeypatch.setattr("clipsvd.report.content.run_textspan", skipped)
    monkeypatch.setattr("clipsvd.report.content.run_umap", skipped)
    store, ids = peer_store
    analyses = []
    for name in ("clip-lora", "coop"):
        pair = load_run_pair(store.load(ids[name]), "cpu")
        analyses.append(analyse_run(pair, analysis_images(pair.run, 1), corpus="world"))
    lora, coop = analyses
    assert lora.sv_rotation is not None and (lora.sv_rotation["left_angle_deg"] > 0).any()
    assert lora.prompt_words is None and coop.sv_rotation is None and coop.sv_shifts is None
    assert coop.prompt_words is not None and len(coop.prompt_words) == 16 * 3
    html = report_html(analyses)
    assert "How far the top 8 singular vectors turned" in html
    assert "Learned prompt: nearest words" in html and "This run learns no prompt context." in html
    assert f"CoOp {NO_WEIGHT}" in html


def test_a_sweep_of_two_peers_runs_on_ray(tmp_path, monkeypatch):
    from clipsvd.training.sweep import SweepSpec, run_sweep
    from tests.conftest import TINY

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    spec = SweepSpec(methods=["clip-lora", "coop"], datasets=[DatasetSpec("builtin", "animal-shape")], shots=[1],
                     seeds=[1], model=TINY, hyperparameters={"clip-lora": {"iterations": 2}, "coop": {"iterations": 2}},
                     device="cpu", max_test_per_class=2)
    table = run_sweep(spec, RunStore(tmp_path), workers=2)
    assert sorted(table["method"]) == ["clip-lora", "coop"] and (table["status"] == "completed").all()


def test_analyze_writes_lora_turns_and_coop_words(peer_store, tmp_path, capsys):
    store, ids = peer_store
    for name in ("clip-lora", "coop"):
        out = tmp_path / name
        code = main(["--runs-dir", str(store.root), "analyze", ids[name], "--what", "sv", "words", "--out", str(out),
                     "--device", "cpu"])
        assert code == 0
    assert {p.name for p in (tmp_path / "clip-lora").iterdir()} == {"sv_shifts.csv", "sv_shifts.html",
                                                                     "sv_rotation.csv", "sv_rotation.html"}
    assert [p.name for p in (tmp_path / "coop").iterdir()] == ["prompt_nearest_words.csv"]
    printed = capsys.readouterr().out
    assert f"CoOp {NO_WEIGHT}" in printed and "CLIP-LoRA learns no prompt context" in printed
