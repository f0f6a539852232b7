"""Imported runs analysed like trained ones, and two runs of the same base compared directly (issue 24): an imported
copy of one of our own runs gives the run's own analyses; "compare with" equals the difference computed from the two
merged models; different bases are refused by name; `report --compare` writes the difference section; the Model &
data page imports through its form."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import save_file

from clipsvd.analysis.heads import head_changes
from clipsvd.analysis.run_pair import check_same_base, load_run_pair, run_sv_shifts
from clipsvd.analysis.weights import singular_value_shifts
from clipsvd.cli import main
from clipsvd.data import DatasetSpec
from clipsvd.errors import ConfigError
from clipsvd.importing import import_checkpoint
from clipsvd.models import TINY_MODEL_NAME, ModelSpec, load_model
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, run_experiment
from tests.conftest import TINY
from tests.test_app import app_at, assert_clean

KEYS = ["encoder", "layer", "kind"]
HEAD_KEYS = ["layer", "head"]
HEAD_MEASURES = ["value_change", "out_change", "ov_change", "qk_change"]


def merged_state(run) -> dict:
    """A run's fine-tuned model as one plain state dict (what a full fine-tune elsewhere would save)."""
    pair = load_run_pair(run, "cpu")
    return {k: v.detach().contiguous().clone() for k, v in pair.method.merge().state_dict().items()}


def plain_model(state: dict):
    """The tiny CLIP with `state` loaded: the direct difference is computed on these, not through the run pair."""
    loaded = load_model(TINY, "cpu")
    loaded.model.load_state_dict(state)
    return loaded.model.eval()


@pytest.fixture(scope="module")
def store_with_copies(tmp_path_factory):
    """A CLIP-SVD and a CLIP-LoRA run of the tiny CLIP (2 iterations), each exported as a full fine-tune and
    imported back against the same base; one more import against another base (the tiny CLIP of seed 7)."""
    root = tmp_path_factory.mktemp("import-compare")
    store = RunStore(root / "runs")
    base = ExperimentConfig(method="clip-svd", model=TINY, dataset=DatasetSpec("builtin", "animal-shape"), shots=1,
                            seed=1, device="cpu", hyperparameters={"iterations": 2, "lr": 1e-2},
                            max_test_per_class=2)
    runs = {}
    for name in ("clip-svd", "clip-lora"):
        run = run_experiment(dataclasses.replace(base, method=name), store)
        assert run.status == "completed", run.message
        runs[name] = run
        path = root / f"{name}-full.safetensors"
        save_file(merged_state(run), str(path))
        runs[f"imported {name}"] = import_checkpoint(store, TINY, path)
    other_base = ModelSpec(TINY_MODEL_NAME, seed=7)
    other = {k: v.clone() for k, v in load_model(other_base, "cpu").model.state_dict().items()}
    other["visual.transformer.resblocks.0.attn.in_proj_weight"] += 0.01
    save_file(other, str(root / "other-base.safetensors"))
    runs["other base"] = import_checkpoint(store, other_base, root / "other-base.safetensors")
    return store, runs


def by_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


@pytest.mark.parametrize("method", ["clip-svd", "clip-lora"])
def test_an_imported_copy_of_a_run_gives_the_runs_own_analyses(store_with_copies, method):
    store, runs = store_with_copies
    own, copy = load_run_pair(runs[method], "cpu"), load_run_pair(runs[f"imported {method}"], "cpu")
    assert copy.method.name == "imported" and copy.reference is None
    # σ shifts: the copy's (plain weights) against the run's own, from plain weights as well where the run keeps σ
    expected = run_sv_shifts(own) if method == "clip-lora" else singular_value_shifts(own.before, own.method)
    got = run_sv_shifts(copy)
    assert (expected["rel_change"] > 1e-4).any()  # the run changed something measurable
    pd.testing.assert_frame_equal(by_keys(got, KEYS), by_keys(expected, KEYS), atol=1e-5, rtol=0)
    heads_own = head_changes(own.before, own.method, "visual", "ov_change")
    heads_copy = head_changes(copy.before, copy.method, "visual", "ov_change")
    assert (heads_own["ov_change"] > 1e-4).any()
    np.testing.assert_allclose(by_keys(heads_copy, HEAD_KEYS)[HEAD_MEASURES].to_numpy(),
                               by_keys(heads_own, HEAD_KEYS)[HEAD_MEASURES].to_numpy(), atol=1e-5, rtol=0)
    assert tuple(heads_copy.iloc[0][HEAD_KEYS]) == tuple(heads_own.iloc[0][HEAD_KEYS])  # the same top head
    # and against each other the two are (nearly) one model: the direct difference is ~0 everywhere
    pair = load_run_pair(runs[f"imported {method}"], "cpu", reference=runs[method])
    assert run_sv_shifts(pair)["rel_change"].max() < 1e-5


def test_compare_with_equals_the_difference_of_the_two_merged_models(store_with_copies):
    store, runs = store_with_copies
    a, b = runs["clip-svd"], runs["imported clip-lora"]
    pair = load_run_pair(a, "cpu", reference=b)
    assert pair.reference.run_id == b.run_id and pair.before_name == f"run {b.run_id}"
    model_a, model_b = plain_model(merged_state(a)), plain_model(merged_state(b))
    direct = singular_value_shifts(model_b, model_a)
    pd.testing.assert_frame_equal(by_keys(run_sv_shifts(pair), KEYS), by_keys(direct, KEYS), atol=1e-6, rtol=0)
    heads = head_changes(pair.before, pair.method, "visual", "qk_change")
    direct_heads = head_changes(model_b, model_a, "visual", "qk_change")
    np.testing.assert_allclose(by_keys(heads, HEAD_KEYS)[HEAD_MEASURES].to_numpy(),
                               by_keys(direct_heads, HEAD_KEYS)[HEAD_MEASURES].to_numpy(), atol=1e-6, rtol=0)
    # not each against the pretrained model: A vs pretrained differs from A vs B
    against_pretrained = run_sv_shifts(load_run_pair(a, "cpu"))
    assert not np.allclose(by_keys(against_pretrained, KEYS)["rel_change"], by_keys(direct, KEYS)["rel_change"],
                           atol=1e-4)


def test_runs_of_different_bases_are_refused_naming_both(store_with_copies):
    _, runs = store_with_copies
    with pytest.raises(ConfigError, match=r"different bases \(.*seed 0.* vs .*seed 7"):
        check_same_base(runs["clip-svd"], runs["other base"])
    with pytest.raises(ConfigError, match="compared with itself"):
        check_same_base(runs["clip-svd"], runs["clip-svd"])


def test_heads_page_compares_with_a_second_run(store_with_copies):
    store, runs = store_with_copies
    a, b = runs["clip-svd"], runs["imported clip-lora"]
    at = app_at("pages/4_Heads.py", store.root, run_id=a.run_id)
    at.selectbox(key="_w_compare").set_value(b.run_id).run()
    assert_clean(at)
    assert any(f"Before: run {b.run_id}" in c.value.replace("\\", "") for c in at.caption)
    shown = next(d.value for d in at.dataframe if "ov_change" in d.value.columns)
    direct = head_changes(plain_model(merged_state(b)), plain_model(merged_state(a)), "visual", "ov_change")
    np.testing.assert_allclose(by_keys(shown, HEAD_KEYS)[HEAD_MEASURES].to_numpy(),
                               by_keys(direct, HEAD_KEYS)[HEAD_MEASURES].to_numpy(), atol=1e-6, rtol=0)
    # the choice follows to Singular values (one selection, carried in the URL)
    at.switch_page("pages/3_Singular_values.py").run()
    assert_clean(at)
    assert at.selectbox(key="_w_compare").value == b.run_id
    assert any("matched by rank" in c.value for c in at.caption)
    # another base: one clear message, no figure
    at.selectbox(key="_w_compare").set_value(runs["other base"].run_id).run()
    assert not at.exception and not at.get("plotly_chart")
    assert any("different bases" in e.value for e in at.error)


def test_explain_compares_the_words_of_two_runs(store_with_copies):
    store, runs = store_with_copies
    a, b = runs["clip-svd"], runs["imported clip-lora"]
    at = app_at("pages/5_Explain.py", store.root, run_id=a.run_id, compare_run=b.run_id)
    assert at.selectbox(key="_w_compare").value == b.run_id  # remembered from another page
    at.button(key="run-textspan").click().run()
    assert_clean(at)
    shown = " ".join(m.value for m in at.markdown).replace("\\", "")
    assert f"Before (run {b.run_id})" in shown and f"After (run {a.run_id})" in shown
    assert "Before (pretrained)" not in shown


def test_report_compare_writes_the_difference_of_the_two_runs(store_with_copies, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("clipsvd.report.content.run_umap", lambda pair, dataset, seed=0: None)
    store, runs = store_with_copies
    a, b = runs["clip-svd"], runs["imported clip-lora"]
    out = tmp_path / "report.html"
    code = main(["--runs-dir", str(store.root), "report", a.run_id, "--compare", b.run_id, "--out", str(out),
                 "--images-per-class", "2", "--texts-per-head", "6", "--top-heads", "2", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    html = out.read_text(encoding="utf-8")
    section = html.split("The two runs against each other", 1)[1]
    assert f"\"Before\" is run {b.run_id}" in section
    for text in ("Singular-value shifts", "Head ranking (image tower)", "Explanation shift", "span shift",
                 f"before (run {b.run_id})", f"after (run {a.run_id})", "seed 1 vs imported"):
        assert text in section, text
    assert len(re.findall(r'class="report-figure"', section)) >= 4  # σ, turns, head bar + heatmap, scatter
    # runs of different bases: side by side still, the section says why there is no difference
    out2 = tmp_path / "report2.html"
    main(["--runs-dir", str(store.root), "report", a.run_id, "--compare", runs["other base"].run_id,
          "--out", str(out2), "--images-per-class", "2", "--texts-per-head", "6", "--device", "cpu"])
    html2 = out2.read_text(encoding="utf-8")
    assert "started from different bases" in html2.split("The two runs against each other", 1)[1]


def test_model_page_imports_a_fine_tune_through_its_form(store_with_copies, tmp_path):
    _, runs = store_with_copies
    path = tmp_path / "ft.safetensors"
    save_file(merged_state(runs["clip-lora"]), str(path))
    root = tmp_path / "store"
    at = app_at("pages/1_Model_and_data.py", root)
    assert at.button(key="import_model").disabled  # no fine-tuned source yet
    at.text_input(key="_w_imp_path").input(str(path))
    at.selectbox(key="_w_imp_arch").set_value(TINY_MODEL_NAME).run()
    at.radio(key="_w_imp_weight_source-open_clip").set_value("Random (seeded)").run()
    at.button(key="import_model").click().run()
    assert_clean(at)
    [run] = RunStore(root).list()
    assert run.config["method"] == "imported" and run.message == f"imported from {path.name}"
    assert any(run.run_id in s.value.replace("\\", "") for s in at.success)
    assert any(link.label == "Singular values" for link in at.get("page_link"))
    # the base itself: the specific error, shown as a message (no exception box), and no second run
    same = tmp_path / "base.safetensors"
    save_file({k: v.contiguous() for k, v in load_model(TINY, "cpu").model.state_dict().items()}, str(same))
    at.text_input(key="_w_imp_path").input(str(same)).run()
    at.button(key="import_model").click().run()
    assert not at.exception and len(RunStore(root).list()) == 1
    assert any("is identical to its base" in e.value for e in at.error)


def test_the_run_picker_names_an_imported_run_by_its_label_and_evaluation(store_with_copies, tmp_path):
    """An imported run has no training data: the picker shows its label and 'not evaluated yet', not the default
    dataset its config carries, then the dataset it was evaluated on (on a copy of the store: the module's runs stay
    unevaluated)."""
    import shutil

    from clipsvd.app.run_picker import run_title
    from clipsvd.importing.evaluation import evaluate_imported

    store, runs = store_with_copies
    run = runs["imported clip-svd"]
    title = run_title(run)
    assert "imported from clip-svd-full.safetensors · not evaluated yet" in title
    assert run.config["dataset"]["name"] not in title
    copy = RunStore(shutil.copytree(store.root, tmp_path / "runs"))
    evaluated = evaluate_imported(copy, copy.load(run.run_id), DatasetSpec("builtin", "animal-shape"),
                                  device="cpu", max_test_per_class=2)
    assert "imported from clip-svd-full.safetensors · evaluated on animal-shape · completed ·" in run_title(evaluated)
