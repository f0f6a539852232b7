"""The first ten minutes: the generated world's datasets start from README's measured presets (library, CLI, Train
page), explicit values still win, and the Train page says how long a run will take before it starts."""
import dataclasses
import json

import pytest
from streamlit.testing.v1 import AppTest

from clipsvd.cli import main as cli_main
from clipsvd.data import DatasetSpec, load_dataset
from clipsvd.methods.presets import Setting, official_preset
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, planned_steps, resolved_config, run_experiment
from clipsvd.training.estimate import (
    Rates,
    estimate_run,
    full_size_note,
    measured_rates,
    recorded_rates,
)
from tests.conftest import TINY

WORLD = "world-shape-microscopy"
SEARCH = "Adaptation on the microscopy-like style"
# README, "Adaptation on the microscopy-like style": the best setting of each method (16 shots, seeds 1-3).
WORLD_FEW_SHOT = {"clip-svd": {"lr": 2e-3, "epochs": 100}, "prolip": {"lr": 1e-3, "epochs": 100, "cached_views": 0},
                  "clipfit": {"lr": 1e-2, "epochs": 100}, "linear-probe": {"lr": 1e-3, "epochs": 50},
                  "clip-lora": {"lr": 2e-3, "epochs": 100}}


@pytest.fixture(scope="module")
def world_data():
    return load_dataset(DatasetSpec("builtin", WORLD))


@pytest.mark.parametrize("method, expected", WORLD_FEW_SHOT.items())
def test_world_datasets_start_from_the_measured_search(method, expected):
    for dataset in (WORLD, "world-colour-sketch", "world-object-clean"):
        config = ExperimentConfig(method=method, dataset=DatasetSpec("builtin", dataset))
        assert config.setting().backbone == "world"
        values = config.method_config().to_dict()
        assert {k: values[k] for k in expected} == expected, dataset
        preset = config.preset()
        for key in ("lr", "epochs") if method != "linear-probe" else ("epochs",):
            assert preset.sources[key].startswith("clipsvd README.md:") and SEARCH in preset.sources[key]
        assert "bench_world_adaptation.py" in preset.sources["epochs"]
        official = [k for k, where in preset.sources.items() if not where.startswith("clipsvd README.md:")]
        assert bool(preset.differences) == bool(official)  # a repository's caveats come with its values only


def test_world_base_to_novel_and_other_datasets():
    b2n = ExperimentConfig(method="clip-svd", protocol="base2novel",
                           dataset=DatasetSpec("builtin", "world-object-microscopy"))
    assert (b2n.method_config().lr, b2n.method_config().epochs) == (2e-3, 25)
    assert "Base -> novel" in b2n.preset().sources["epochs"]
    assert ExperimentConfig(method="zero-shot").method_config().epochs == 0  # nothing trains
    other = ExperimentConfig(method="clip-svd", dataset=DatasetSpec("builtin", "animal-shape"))
    assert other.setting().backbone is None and other.preset().values == {}  # no measured search there
    natural = ExperimentConfig(method="clip-svd", backbone="natural", shots=4)  # a chosen family wins over the data
    assert natural.method_config().iterations == 800 and natural.method_config().lr == 5e-4
    assert official_preset("clip-svd", Setting("few-shot", 16, WORLD, "world")).values == {"lr": 2e-3, "epochs": 100}


def test_explicit_values_override_the_world_preset():
    config = ExperimentConfig(method="clip-svd", hyperparameters={"lr": 1e-4})
    assert config.method_config().lr == 1e-4 and config.method_config().epochs == 100


def test_config_shows_the_world_preset_and_a_given_lr_wins(capsys, world_data):
    resolved = resolved_config(ExperimentConfig(method="clip-svd"), world_data)  # what `clipsvd config` prints
    assert resolved["setting"]["backbone"] == "world"
    assert resolved["method_config"]["lr"] == 2e-3 and resolved["method_config"]["epochs"] == 100
    assert resolved["steps"] == 400  # 100 epochs × 128 images / batch 32
    assert SEARCH in resolved["preset"]["sources"]["lr"]
    assert cli_main(["config", "--method", "clip-svd", "--dataset", WORLD, "--lr", "0.0001"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["method_config"]["lr"] == 1e-4 and printed["hyperparameters"] == {"lr": 1e-4}
    assert printed["method_config"]["epochs"] == 100 and printed["steps"] == 400  # the rest stays the preset's
    assert printed["preset"] == resolved["preset"]


def test_cli_train_says_what_it_starts_from(tmp_path, capsys):
    code = cli_main(["--runs-dir", str(tmp_path), "train", "--method", "clip-svd", "--arch", "clipsvd-tiny",
                     "--dataset", WORLD, "--shots", "1", "--epochs", "1", "--max-test-per-class", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "lr 0.002 · 1 epochs · given: epochs · preset from clipsvd README.md:" in out


# ----- the time a run will take --------------------------------------------------------------------------------
def tiny_config(**change) -> ExperimentConfig:
    base = ExperimentConfig(method="clip-svd", model=TINY, shots=1, device="cpu", hyperparameters={"epochs": 2},
                            max_test_per_class=2)
    return dataclasses.replace(base, **change)


def test_recorded_rates_come_from_runs_with_the_same_model_method_and_batch(tmp_path, world_data):
    store = RunStore(tmp_path)
    run = run_experiment(tiny_config(), store, dataset=world_data)
    rates = recorded_rates(tiny_config(), store)
    assert rates is not None and rates.basis.startswith("recorded: median of 1 ")
    assert rates.seconds_per_step == pytest.approx(run.metrics["train_seconds"] / run.metrics["steps"])
    assert rates.seconds_per_test_image == pytest.approx(run.metrics["eval_seconds"] / run.metrics["n_test_all"])
    assert recorded_rates(tiny_config(hyperparameters={"epochs": 2, "batch_size": 4}), store) is None
    assert recorded_rates(tiny_config(method="clipfit"), store) is None
    estimate = estimate_run(tiny_config(hyperparameters={"epochs": 5}), rates, world_data)
    assert estimate.steps == planned_steps(tiny_config(hyperparameters={"epochs": 5}), world_data) == 5
    assert estimate.test_images == 16  # 8 classes × the cap of 2
    assert estimate.seconds == pytest.approx(5 * rates.seconds_per_step + 16 * rates.seconds_per_test_image)
    assert estimate.sentence().startswith("about ") and "5 steps" in estimate.sentence()


def test_measured_rates_time_real_steps(world_data):
    rates = measured_rates(tiny_config(), world_data, steps=2)
    assert rates.seconds_per_step > 0 and rates.seconds_per_test_image > 0
    assert rates.basis.startswith("measured now on this machine: 2 steps")
    zero = measured_rates(tiny_config(method="zero-shot"), world_data)
    assert zero.seconds_per_step == 0 and estimate_run(tiny_config(method="zero-shot"), zero, world_data).steps == 0


def test_full_size_note_uses_the_readme_step_time():
    note = full_size_note(16)
    assert "3,200 steps" in note and "22.3 s" in note and "about 20 h" in note
    assert Rates(1.0, None, "x").seconds_per_test_image is None


def test_train_page_shows_the_world_preset_and_the_time_before_start(tmp_path):
    from tests.test_app import app_at, assert_clean

    at = app_at("pages/2_Train.py", tmp_path)
    assert_clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "CLIP-SVD starts from lr=0.002, epochs=100 — from clipsvd README.md:" in captions and SEARCH in captions
    assert "full size" in captions and "22.3 s" in captions
    texts = " ".join(t.value for t in at.text)
    assert "no run of this model, method and batch size recorded yet" in texts
    at.button(key="measure_steps").click().run()
    assert_clean(at)
    texts = " ".join(t.value for t in at.text)
    assert "CLIP-SVD, per run: about " in texts and "measured now on this machine" in texts
    assert any("Estimated time on this machine: " in m.value for m in at.markdown)
