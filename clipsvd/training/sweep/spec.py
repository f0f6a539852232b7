"""A sweep's grid: methods × datasets × K × seeds, expanded into experiment configs (hyperparameters checked before
anything runs)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from clipsvd.data import DatasetSpec
from clipsvd.errors import ConfigError
from clipsvd.models import ModelSpec
from clipsvd.training.experiment import ExperimentConfig


@dataclass
class SweepSpec:
    """The grid. `hyperparameters` maps a method name to its overrides (e.g. {"clip-svd": {"lr": 1e-3}})."""

    methods: list[str]
    datasets: list[DatasetSpec]
    shots: list[int | None] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    model: ModelSpec = field(default_factory=ModelSpec.default)
    protocol: str = "few-shot"
    targets: list[str] = field(default_factory=list)  # ExperimentConfig.targets of every run (transfer protocols)
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    max_test_per_class: int | None = None
    num_workers: int | None = None  # ExperimentConfig.num_workers of every run

    def configs(self, sweep_id: str | None = None) -> list[ExperimentConfig]:
        if not (self.methods and self.datasets and self.shots and self.seeds):
            raise ConfigError("sweep: methods, datasets, shots and seeds each need at least one value")
        unknown = set(self.hyperparameters) - set(self.methods)
        if unknown:
            raise ConfigError(f"sweep hyperparameters name methods not in the sweep: {sorted(unknown)}")
        configs = [
            ExperimentConfig(method=method, model=self.model, dataset=dataset, shots=shots, seed=seed,
                             protocol=self.protocol, targets=list(self.targets), hyperparameters=dict(self.hyperparameters.get(method, {})),
                             device=self.device, max_test_per_class=self.max_test_per_class,
                             num_workers=self.num_workers, sweep=sweep_id)
            for dataset, shots, method, seed in itertools.product(self.datasets, self.shots, self.methods, self.seeds)
        ]
        for config in configs:
            config.validate()
            config.method_config()  # reject bad hyperparameters before anything starts
        return configs
