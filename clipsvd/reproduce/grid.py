"""A published table's grid as experiment configs: which cells the run store already holds, what the rest
will cost, and running them on Ray.

A cell is *done* when the store holds a completed run whose config matches the cell's on everything that
decides the result (method, dataset kind, name and root, K, seed, protocol, backbone, model, the resolved
method config, the test cap: `clipsvd.runs.cells.cell_key`); a finished run is never re-run, a failed or
cancelled one is.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clipsvd.data import ClassificationDataset, DatasetSpec, canonical_dataset_name, load_dataset
from clipsvd.errors import ClipsvdError, ConfigError
from clipsvd.formatting import seconds_text
from clipsvd.methods import available_methods
from clipsvd.models import ModelSpec
from clipsvd.reproduce.published import FOLDER_ALIASES, Table, get_table
from clipsvd.runs import RunStore
from clipsvd.runs.cells import cell_key, cell_status, config_record, run_record
from clipsvd.runs.status import CellStatus
from clipsvd.training.estimate import measure_seconds_per_step
from clipsvd.training.experiment import ExperimentConfig, planned_steps
from clipsvd.training.sweep import Launch, run_grid

GRID_COLUMNS = ["method", "dataset", "shots", "seed", "steps", "status", "run_id", "previous", "data"]
LAYOUT_HELP = {
    "coop": "CoOp's DATA folder: one folder per dataset (caltech-101, dtd, eurosat, fgvc_aircraft, food-101, "
            "imagenet, oxford_flowers, oxford_pets, stanford_cars, sun397, ucf101), each with its images and "
            "split_zhou_<Name>.json (FGVC-Aircraft: its variant lists; ImageNet: class folders), as in CoOp's "
            "DATASETS.md",
    "biomedcoop": "BiomedCoOp's layout: <root>/<Name>/split_<Name>.json with the images under <root>/<Name>/<Name>/ "
                  "(BTMRI, BUSI, CHMNIST, COVID_19 or COVID-QU-Ex, CTKidney, KneeXray, Kvasir, LungColon, OCTMNIST, "
                  "RETINA), as in BiomedCoOp's DATASETS.md",
}


def _as_table(table: Table | str) -> Table:
    return get_table(table) if isinstance(table, str) else table


def _table_dataset(table: Table, name: str) -> str:
    """The table's name for a user-given dataset name ("dtd", "COVID-QU-Ex" ...); ConfigError if not in it."""
    candidates = [name, table.dataset_of(name)]
    if table.layout == "coop":
        try:
            candidates.append(canonical_dataset_name(DatasetSpec("coop", name)))
        except ClipsvdError:
            pass
    for candidate in candidates:
        if candidate in table.datasets:
            return candidate
    raise ConfigError(f"dataset '{name}' is not in table {table.name}; expected one of {', '.join(table.datasets)}")


def _folder(table: Table, name: str, root: str | None) -> str:
    """The folder a dataset is read from: its table name, or a known alias when only that exists under root."""
    if table.layout == "biomedcoop" and root and not (Path(root) / name).is_dir():
        for alias in FOLDER_ALIASES.get(name, ()):
            if (Path(root) / alias).is_dir():
                return alias
    return name


def grid(
    table: Table | str,
    data_root: str | Path | None,
    model_spec: ModelSpec,
    seeds: list[int] | None = None,
    shots: list[int] | None = None,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    *,
    device: str = "auto",
    max_test_per_class: int | None = None,
    hyperparameters: dict[str, dict[str, Any]] | None = None,
) -> list[ExperimentConfig]:
    """The table's cells (datasets × K × methods × seeds) as configs: protocol, backbone and data layout from
    the table, no hyperparameter overrides (the official presets apply) unless a custom table or the caller
    gives some. Filters narrow the table's lists; extra seeds, K or registered methods may be added."""
    table = _as_table(table)
    root = str(Path(data_root).expanduser().resolve()) if data_root else None
    names = [_table_dataset(table, d) for d in datasets] if datasets else list(table.datasets)
    methods = list(methods or table.methods)
    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise ConfigError(f"methods {unknown} are not registered; expected some of {', '.join(available_methods())}")
    overrides = {**table.hyperparameters, **(hyperparameters or {})}
    configs = [
        ExperimentConfig(method=method, model=model_spec,
                         dataset=DatasetSpec(table.layout, _folder(table, name, root), root), shots=int(k),
                         seed=int(seed), protocol=table.protocol, backbone=table.backbone,
                         hyperparameters=dict(overrides.get(method, {})), device=device,
                         max_test_per_class=max_test_per_class)
        for name in dict.fromkeys(names) for k in dict.fromkeys(shots or table.shots) for method in methods
        for seed in dict.fromkeys(seeds or table.seeds)
    ]
    for config in configs:
        config.validate()
        config.method_config()  # a bad override fails here, before anything runs
    return configs


def load_data(configs: list[ExperimentConfig]) -> dict[str, ClassificationDataset | str]:
    """Each distinct dataset of the grid, loaded once; the error text where it cannot be read."""
    out: dict[str, ClassificationDataset | str] = {}
    for config in configs:
        name = config.dataset.name
        if name in out:
            continue
        if config.dataset.root is None:
            out[name] = "no data root given"
            continue
        try:
            out[name] = load_dataset(config.dataset)
        except ClipsvdError as exc:
            out[name] = str(exc)
    return out


def _steps(config: ExperimentConfig, data: ClassificationDataset | str | None) -> int | None:
    """planned_steps from the data when it was read (and the steps depend on it), else from the dataset's known
    class count."""
    method_config = config.method_config()
    needs_data = method_config.iterations is None and not method_config.cached_views and method_config.epochs
    try:
        return planned_steps(config, data if needs_data and isinstance(data, ClassificationDataset) else None)
    except ClipsvdError:
        return None


def grid_frame(table: Table | str, configs: list[ExperimentConfig], store: RunStore | None,
               data: dict[str, ClassificationDataset | str] | None = None) -> pd.DataFrame:
    """The grid as a table: method, dataset (the table's name), K, seed, steps, status, run id, data found."""
    table = _as_table(table)
    data = data if data is not None else {}
    status = cell_status(configs, store) if store is not None else pd.DataFrame(
        {"key": [cell_key(config_record(c)) for c in configs], "status": CellStatus.MISSING, "run_id": "",
         "previous": ""})
    rows = []
    for config, (_, cell) in zip(configs, status.iterrows()):
        found = data.get(config.dataset.name)
        rows.append({"method": config.method, "dataset": table.dataset_of(config.dataset.name), "shots": config.shots,
                     "seed": config.seed, "steps": _steps(config, found), "status": cell["status"],
                     "run_id": cell["run_id"], "previous": cell["previous"],
                     "data": "" if found is None else "found" if isinstance(found, ClassificationDataset)
                     else f"not found: {found.splitlines()[0]}", "key": cell["key"]})
    return pd.DataFrame(rows, columns=[*GRID_COLUMNS, "key"]).astype({"steps": "Int64"})


@dataclass
class DryRun:
    """The grid with each cell's steps and status, and what the missing cells will cost on this machine."""

    table: Table
    configs: list[ExperimentConfig]
    frame: pd.DataFrame
    seconds_per_step: dict[str, float] = field(default_factory=dict)
    timing_note: str = ""

    @property
    def missing(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == CellStatus.MISSING]

    @property
    def missing_steps(self) -> int:
        return int(self.missing["steps"].fillna(0).sum())

    @property
    def estimated_seconds(self) -> float | None:
        """Training time of the missing cells (evaluation not included); None without timings."""
        if not self.seconds_per_step:
            return None
        rates = self.missing["method"].map(self.seconds_per_step)
        return float((self.missing["steps"].fillna(0).astype(float) * rates).sum())

    def resolved_configs(self) -> list[dict[str, Any]]:
        """Each cell's config as `resolved_config` records it (steps from the data where it was found)."""
        return [run_record(c, None if pd.isna(s) else int(s)) for c, s in zip(self.configs, self.frame["steps"])]

    def summary(self) -> str:
        f = self.frame
        shape = " × ".join(f"{f[c].nunique()} {label}" for c, label in (("dataset", "datasets"), ("shots", "K"),
                                                                         ("method", "methods"), ("seed", "seeds")))
        lines = [f"{self.table.name}: {len(f)} cells ({shape}); {int((f['status'] == CellStatus.DONE).sum())} done, "
                 f"{len(self.missing)} to run, {self.missing_steps:,} optimiser steps"]
        if self.seconds_per_step:
            rates = ", ".join(f"{m} {s:.3f} s/step" for m, s in self.seconds_per_step.items())
            lines.append(f"measured on this machine: {rates} → about {seconds_text(self.estimated_seconds)} of "
                         "training (evaluation not included)")
        if self.timing_note:
            lines.append(self.timing_note)
        return "\n".join(lines)


def dry_run(
    table: Table | str,
    data_root: str | Path | None,
    model_spec: ModelSpec,
    store: RunStore | None = None,
    seeds: list[int] | None = None,
    shots: list[int] | None = None,
    datasets: list[str] | None = None,
    methods: list[str] | None = None,
    *,
    timing: bool = True,
    device: str = "auto",
    max_test_per_class: int | None = None,
    hyperparameters: dict[str, dict[str, Any]] | None = None,
) -> DryRun:
    """The grid, its steps (from the data where it is found) and status against the store, and, with `timing`,
    seconds per step of each method measured on the first dataset found (its first K and seed)."""
    table = _as_table(table)
    configs = grid(table, data_root, model_spec, seeds, shots, datasets, methods, device=device,
                   max_test_per_class=max_test_per_class, hyperparameters=hyperparameters)
    data = load_data(configs)
    result = DryRun(table, configs, grid_frame(table, configs, store, data))
    if not timing:
        result.timing_note = "time per step not measured (timing off)"
        return result
    found = [c for c in configs if isinstance(data.get(c.dataset.name), ClassificationDataset)]
    if not found:
        result.timing_note = "time per step not measured: none of the datasets was found under the data root"
        return result
    first = found[0]
    try:
        for method in dict.fromkeys(c.method for c in configs):
            sample = next(c for c in found if c.method == method and c.dataset.name == first.dataset.name)
            result.seconds_per_step[method] = measure_seconds_per_step(sample, data[sample.dataset.name])
    except ClipsvdError as exc:
        result.seconds_per_step = {}
        result.timing_note = f"time per step not measured: {exc}"
        return result
    result.timing_note = (f"timed on {table.dataset_of(first.dataset.name)}, {first.shots}-shot, with "
                          f"{model_spec.label}, device {device}")
    return result


def missing_configs(dry: DryRun) -> list[ExperimentConfig]:
    return [c for c, status in zip(dry.configs, dry.frame["status"]) if status == CellStatus.MISSING]


def run_missing(configs: list[ExperimentConfig], store: RunStore, table: Table | str, launch: Launch | None = None
                ) -> pd.DataFrame:
    """Run the grid's missing cells on Ray as one sweep, `reproduce-TABLE-…`, continued when run again
    (`clipsvd.training.sweep.run_grid`). One row per cell."""
    return run_grid(configs, store, f"reproduce-{_as_table(table).name}", launch)


__all__ = ["DryRun", "LAYOUT_HELP", "dry_run", "grid", "grid_frame", "load_data", "missing_configs", "run_missing"]
