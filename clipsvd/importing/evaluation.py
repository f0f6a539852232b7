"""Evaluate an imported run on demand: it has no dataset of its own until the user picks one, and then it keeps
that dataset (analyses read their images from it) and the metrics, as a trained run keeps those of its training."""
from __future__ import annotations

import dataclasses

from clipsvd.data import DatasetSpec
from clipsvd.errors import ConfigError
from clipsvd.methods import get_method
from clipsvd.runs import Run, RunStore
from clipsvd.training.experiment import ExperimentConfig, evaluate_method, prepare_data, restore_run


def evaluate_imported(store: RunStore, run: Run, dataset: DatasetSpec, protocol: str = "few-shot",
                      device: str = "auto", max_test_per_class: int | None = None) -> Run:
    """Accuracy, per class and (base2novel) base/novel/HM of an imported run on `dataset`, saved into the run."""
    if get_method(run.config.get("method", "")).runnable:
        raise ConfigError(f"run {run.run_id} was trained on {(run.config.get('dataset') or {}).get('name')}; only "
                          "imported runs take a dataset to be evaluated on")
    config = dataclasses.replace(ExperimentConfig.from_dict(run.config), dataset=dataset, protocol=protocol,
                                 shots=None, max_test_per_class=max_test_per_class, device=device)
    config.validate()
    _, method = restore_run(run, device)
    metrics = evaluate_method(method, prepare_data(config), config.eval_batch_size, lambda progress: None)
    run.config.update(dataset=dataset.to_dict(), protocol=protocol, max_test_per_class=max_test_per_class,
                      setting=config.setting().to_dict())
    run.config["imported"]["evaluated_on"] = dataset.to_dict()
    run.metrics.update(metrics)
    return store.update(run)
