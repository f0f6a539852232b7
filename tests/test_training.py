import dataclasses
import math
import threading

import pytest
import torch

from clipsvd.data import DatasetSpec, eval_transform, few_shot, load_dataset
from clipsvd.errors import ConfigError
from clipsvd.methods import create_method
from clipsvd.models import load_model
from clipsvd.runs import RunStatus, RunStore
from clipsvd.training import (
    ExperimentConfig,
    evaluate_method,
    harmonic_mean,
    hm_summary,
    prepare_data,
    restore_run,
    run_experiment,
    train,
)
from clipsvd.training.loop import cosine_with_warmup
from tests.conftest import TINY

ANIMALS = DatasetSpec("builtin", "animal-shape")


@pytest.fixture(scope="module")
def animals():
    return load_dataset(ANIMALS)


def quick_config(method: str, **changes) -> ExperimentConfig:
    base = ExperimentConfig(method=method, model=TINY, dataset=ANIMALS, shots=2, seed=1, device="cpu",
                            hyperparameters={"epochs": 1}, max_test_per_class=3)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("name, lr", [("clip-svd", 5e-2), ("clipfit", 0.5), ("prolip", 1e-2), ("linear-probe", 1e-2)])
def test_each_method_lowers_its_training_loss_on_real_images(name, lr, animals):
    split = few_shot(animals.train, 4, seed=1)
    loaded = load_model(TINY, "cpu")
    mini_batches = {"cached_views": 0} if name == "prolip" else {}  # ProLIP's own procedure: test_protocols.py
    method = create_method(name, {"epochs": 6, "batch_size": 20, "lr": lr, **mini_batches}).attach(loaded, animals.prompts())
    # No augmentation here, so the loss curve reflects learning rather than crop noise.
    result = train(method, split, animals.prompts(), eval_transform(loaded.image_size, loaded.mean, loaded.std))
    assert result.status == RunStatus.COMPLETED and result.steps == 12
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0] - 0.01, losses


def test_run_is_stored_and_restores_to_the_same_accuracy(tmp_path):
    store = RunStore(tmp_path)
    config = quick_config("clip-svd", hyperparameters={"epochs": 2, "lr": 5e-2})
    run = run_experiment(config, store)
    assert run.status == RunStatus.COMPLETED and run.path.is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    assert run.metrics["trainable"] == 1536 and 0 <= run.metrics["accuracy"] <= 100
    assert run.metrics["n_test_all"] == 30 and len(run.metrics["per_class"]) == 10
    assert len(run.history) == 2 and run.metrics["checkpoint_bytes"] == run.adapter_bytes > 0

    reloaded = store.load(run.run_id)
    assert reloaded.config["method_config"]["lr"] == 5e-2
    _, method = restore_run(reloaded, "cpu")
    metrics = evaluate_method(method, prepare_data(config), 64, lambda progress: None)
    assert metrics["accuracy"] == pytest.approx(run.metrics["accuracy"])
    assert metrics["per_class"] == pytest.approx(run.metrics["per_class"])


def test_cancelled_run_is_saved_as_cancelled(tmp_path):
    cancel = threading.Event()

    def stop_after_first_step(progress):
        if progress.phase == "train" and progress.step >= 1:
            cancel.set()

    config = quick_config("clipfit", hyperparameters={"epochs": 3, "batch_size": 4})
    run = run_experiment(config, RunStore(tmp_path), on_progress=stop_after_first_step, cancel=cancel)
    assert run.status == RunStatus.CANCELLED and "cancelled at step 1/" in run.message
    stored = RunStore(tmp_path).load(run.run_id)
    assert stored.status == RunStatus.CANCELLED and "accuracy" not in stored.metrics
    assert set(stored.adapter_tensors()) == set(create_method("clipfit").attach(load_model(TINY, "cpu"), ["a", "b"]).adapter_state())


def test_nan_loss_stops_and_keeps_last_finite_parameters(animals):
    loaded = load_model(TINY, "cpu")
    method = create_method("prolip", {"epochs": 3, "batch_size": 4, "lr": 1e30, "optimizer": "sgd", "momentum": 0.0,
                                       "cached_views": 0})
    method.attach(loaded, animals.prompts())
    result = train(method, few_shot(animals.train, 2, 1), animals.prompts(),
                   eval_transform(loaded.image_size, loaded.mean, loaded.std))
    assert result.status == RunStatus.DIVERGED and "Lower the learning rate" in result.message
    assert torch.isfinite(method.proj).all()


def test_base_to_novel_reports_base_novel_and_hm(tmp_path):
    run = run_experiment(quick_config("zero-shot", protocol="base2novel", hyperparameters={}), RunStore(tmp_path))
    m = run.metrics
    assert m["n_test_base"] == 15 and m["n_test_novel"] == 15
    assert m["hm"] == pytest.approx(harmonic_mean(m["base"], m["novel"]))
    probe = run_experiment(quick_config("linear-probe", protocol="base2novel"), RunStore(tmp_path))
    assert probe.metrics["novel"] is None and probe.metrics["hm"] is None and probe.metrics["base"] is not None


def test_method_defaults_follow_the_protocol():
    assert quick_config("clipfit", protocol="base2novel", hyperparameters={}).method_config().text_consistency_weight == 8
    assert quick_config("clipfit", hyperparameters={}).method_config().text_consistency_weight == 2
    assert quick_config("prolip", shots=4, hyperparameters={}).method_config().anchor_weight == 0.25
    assert quick_config("clip-svd", protocol="base2novel", hyperparameters={}).method_config().lr == 4e-4
    with pytest.raises(ConfigError, match="shots"):
        quick_config("clip-svd", shots=0).validate()
    with pytest.raises(ConfigError, match="protocol"):
        quick_config("clip-svd", protocol="zero").validate()


def test_experiment_config_round_trip():
    config = quick_config("clip-svd", hyperparameters={"lr": 1e-3, "layers": [1]})
    again = ExperimentConfig.from_dict(config.to_dict())
    assert again == config


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=2, total_steps=10, min_lr=0.01)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == 0.5 and lrs[1] == 1.0 and lrs[2] == 1.0
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    assert lrs[-1] == pytest.approx(0.01)


def test_hm_conventions():
    rows = [{"base": 80.0, "novel": 60.0}, {"base": 90.0, "novel": 30.0}]
    summary = hm_summary(rows)
    assert summary["hm_of_averages"] == pytest.approx(harmonic_mean(85.0, 45.0))
    assert summary["average_of_hms"] == pytest.approx((harmonic_mean(80, 60) + harmonic_mean(90, 30)) / 2)
    assert summary["hm_of_averages"] != pytest.approx(summary["average_of_hms"])
    assert math.isclose(harmonic_mean(50, 50), 50)


def test_a_run_restores_from_its_config_without_its_dataset(tmp_path):
    import shutil

    from tests.test_data import image_tree

    root = image_tree(tmp_path / "tree", {"cat": 6, "dog": 6, "fox": 6})
    config = quick_config("clip-svd", dataset=DatasetSpec("imagefolder", "pets", str(root)),
                          hyperparameters={"epochs": 1, "templates": ["a {} photo.", "art of a {}."]})
    run = run_experiment(config, RunStore(tmp_path / "runs"))
    assert run.config["prompts"] == [["a cat photo.", "art of a cat."], ["a dog photo.", "art of a dog."],
                                     ["a fox photo.", "art of a fox."]]
    shutil.rmtree(root)  # the data is gone (another machine, a moved disk): the run still restores
    _, method = restore_run(RunStore(tmp_path / "runs").load(run.run_id), "cpu")
    assert method.config.templates == ["a {} photo.", "art of a {}."]


@pytest.mark.parametrize("cached_views", [0, 6])
def test_fp16_loss_that_overflows_every_step_ends_as_diverged(tmp_path, monkeypatch, cached_views):
    """The fp16 scaler skips every step of a loss that overflows in the forward pass: the run must not be reported
    completed with NaN in its history. (CPU: GradScaler works on CPU; the loss is made to overflow float16.)"""
    import clipsvd.training.loop as loop
    import clipsvd.training.precision as precision

    monkeypatch.setattr(loop, "resolve_precision", lambda precision, device: "fp16")
    monkeypatch.setattr(precision, "MAX_SKIPPED_STEPS", 4)
    original = create_method("prolip").__class__.loss
    monkeypatch.setattr(type(create_method("prolip")), "loss",
                        lambda self, *args: original(self, *args).half() * 7e4)  # beyond float16's 65504
    config = quick_config("prolip", hyperparameters={"epochs": 2, "batch_size": 4, "cached_views": cached_views})
    run = run_experiment(config, RunStore(tmp_path))
    assert run.status == RunStatus.DIVERGED and "fp16 loss scaler skipped 3 steps in a row" in run.message
    assert "bf16" in run.message and run.metrics["steps"] == 3 and "accuracy" not in run.metrics
    assert all(row["loss"] is None or math.isfinite(row["loss"]) for row in run.history)
    stored = RunStore(tmp_path).load(run.run_id)
    assert stored.status == RunStatus.DIVERGED and stored.message == run.message
    assert RunStore(tmp_path).table()["status"].tolist() == [RunStatus.DIVERGED]  # what `runs list` prints


def test_a_run_records_what_resolved_config_promised_and_matches_its_cell(tmp_path):
    """One record builder (clipsvd.runs.cells.run_record): a run's config.json holds what `resolved_config`
    promised (setting, method config, preset, steps) plus what only the run knows, and its cell key is the one a
    grid computes for the config, so `sweep`/`reproduce` find it."""
    import json

    from clipsvd.runs.cells import cell_key, config_record, run_record
    from clipsvd.training import resolved_config

    config = quick_config("clip-svd", hyperparameters={"iterations": 2})
    run = run_experiment(config, RunStore(tmp_path))
    saved = RunStore(tmp_path).load(run.run_id).config
    promised = json.loads(json.dumps(resolved_config(config), default=str))
    assert {key: saved[key] for key in promised} == promised and promised["steps"] == 2
    assert set(saved) - set(promised) == {"prompts", "model_source"}
    assert cell_key(saved) == cell_key(config_record(config))
    assert cell_key(saved) != cell_key(config_record(dataclasses.replace(config, seed=2)))
    assert ExperimentConfig.from_dict(saved) == config  # every recorded-only field is known to from_dict
    with pytest.raises(TypeError, match="not recorded fields"):
        run_record(config, 2, weights="elsewhere")
