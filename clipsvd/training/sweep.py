"""Sweeps: a grid of datasets × shots × seeds × methods run on Ray, each run landing in the run store.

`run_configs` runs any list of experiments this way (`reproduce` gives it the cells a published table still
lacks); `run_sweep` builds the list from a `SweepSpec` and calls it.

Ray runs in-process by default (`ray.init()` starts a local instance using this machine's cores);
give an address ("auto" or "ray://host:10001") to use a cluster, whose workers must see the same
run-store folder (a shared filesystem). Each run is one Ray task that calls `run_experiment`, so a
sweep run is the same as one started from the CLI or the dashboard.
"""
from __future__ import annotations

import itertools
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from clipsvd.data import DatasetSpec
from clipsvd.errors import ConfigError
from clipsvd.models import ModelSpec
from clipsvd.runs import RunStore
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
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    max_test_per_class: int | None = None

    def configs(self, sweep_id: str) -> list[ExperimentConfig]:
        if not (self.methods and self.datasets and self.shots and self.seeds):
            raise ConfigError("sweep: methods, datasets, shots and seeds each need at least one value")
        unknown = set(self.hyperparameters) - set(self.methods)
        if unknown:
            raise ConfigError(f"sweep hyperparameters name methods not in the sweep: {sorted(unknown)}")
        configs = [
            ExperimentConfig(method=method, model=self.model, dataset=dataset, shots=shots, seed=seed,
                             protocol=self.protocol, hyperparameters=dict(self.hyperparameters.get(method, {})),
                             device=self.device, max_test_per_class=self.max_test_per_class, sweep=sweep_id)
            for dataset, shots, method, seed in itertools.product(self.datasets, self.shots, self.methods, self.seeds)
        ]
        for config in configs:
            config.validate()
            config.method_config()  # reject bad hyperparameters before anything starts
        return configs


def _run_one(config: dict[str, Any], store_root: str, threads: int) -> dict[str, Any]:
    """One Ray task: rebuild the config, train, evaluate, save; returns the run's summary row."""
    import torch

    from clipsvd.training.experiment import run_experiment

    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        run = run_experiment(ExperimentConfig.from_dict(config), RunStore(store_root))
    except Exception as exc:  # reported per run; the rest of the grid goes on
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "method": config["method"],
                "seed": config["seed"], "shots": config["shots"], "dataset": config["dataset"]["name"]}
    peak_kib = _peak_rss_kib()
    return {**run.summary(), "wall_seconds": time.perf_counter() - start, "peak_rss_mib": peak_kib / 1024}


def _peak_rss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_sweep(
    spec: SweepSpec,
    store: RunStore,
    address: str | None = None,
    workers: int | None = None,
    on_result: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Run every config of the grid on Ray; returns one summary row per run (failed runs included)."""
    sweep_id = f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    return run_configs(spec.configs(sweep_id), store, address, workers, on_result).assign(sweep=sweep_id)


def run_configs(
    configs: list[ExperimentConfig],
    store: RunStore,
    address: str | None = None,
    workers: int | None = None,
    on_result: Callable[[int, int, dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Run a list of experiments as Ray tasks (a local Ray unless `address` names a cluster, or Ray is already
    initialised by the caller); `on_result(done, total, row)` after each. One summary row per config, in the
    order they finished; a failed run is a row with status "failed" and its error."""
    import ray

    store.root.mkdir(parents=True, exist_ok=True)
    if not configs:
        return pd.DataFrame(columns=["run_id", "status", "method", "dataset", "shots", "seed"])
    started_here = not ray.is_initialized()
    if started_here:
        cpus = workers or os.cpu_count() or 1
        init_args = {"address": address} if address else {"num_cpus": cpus, "include_dashboard": False}
        ray.init(**init_args, log_to_driver=False, configure_logging=False)
    try:
        slots = workers or int(ray.cluster_resources().get("CPU", 1))
        threads = max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, slots))
        task = ray.remote(num_cpus=1)(_run_one)
        env = {"env_vars": {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}}
        pending = [task.options(runtime_env=env).remote(c.to_dict(), str(store.root), threads) for c in configs]
        rows = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            rows.append(ray.get(done[0]))
            if on_result:
                on_result(len(rows), len(configs), rows[-1])
    finally:
        if started_here:
            ray.shutdown()
    return pd.DataFrame(rows)


def result_line(done: int, total: int, row: dict[str, Any]) -> str:
    """One progress line per finished run: what it was, and its score or error."""
    score = row.get("accuracy") if row.get("accuracy") is not None else row.get("hm")
    detail = row.get("error") or (f"{score:.2f}" if score is not None else row.get("status"))
    return (f"  [{done}/{total}] {row['method']} · {row['dataset']} · {row['shots']}-shot · seed {row['seed']}: "
            f"{row['status']} {detail}")


__all__ = ["SweepSpec", "result_line", "run_configs", "run_sweep"]
