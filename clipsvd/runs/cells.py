"""A run's record and a grid cell's identity: the one place that says what a run's config.json holds and which
of it decides the result.

`run_record` builds what a run records (experiments, dry runs), `config_record` the part that identifies its
result (a sweep's failed or cancelled cell records that much), `cell_key` hashes it so a grid cell finds the
runs that already measured it, and `cell_status` says which cells of a grid the store holds. The config is an
`clipsvd.training.ExperimentConfig` (a layer above; see `RunConfig`)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol, Sequence

import pandas as pd

from clipsvd.models.spec import looks_like_path
from clipsvd.runs.status import CellStatus, RunStatus
from clipsvd.runs.store import RunStore

# What a record adds to the config's own fields: written to config.json, never read back as inputs.
RECORDED_ONLY = ("setting", "method_config", "preset", "steps", "prompts", "model_source", "imported")
# Fields of a run's record that do not change its result (or repeat what the setting resolves).
VOLATILE = ("sweep", "device", "eval_batch_size", "num_workers", "preset", "steps", "hyperparameters", "model_source",
            "backbone", "prompts")


class _Recorded(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class RunConfig(_Recorded, Protocol):
    """What a record is built from: an experiment config, its setting, resolved method config and preset."""

    def setting(self) -> _Recorded: ...

    def method_config(self) -> _Recorded: ...

    def preset(self) -> _Recorded: ...


def config_record(config: RunConfig) -> dict[str, Any]:
    """The record's part that identifies a run's result: the config, its setting and the resolved method config
    (the official preset with the overrides applied)."""
    return dict(config.to_dict(), setting=config.setting().to_dict(), method_config=config.method_config().to_dict())


def run_record(config: RunConfig, steps: int | None, **recorded: Any) -> dict[str, Any]:
    """What a run's config.json holds: `config_record`, the preset's sources and differences, the optimiser steps
    (None where they are not known yet), and what only the run itself knows (`prompts`, `model_source`)."""
    unknown = set(recorded) - set(RECORDED_ONLY)
    if unknown:
        raise TypeError(f"run_record: {sorted(unknown)} are not recorded fields ({', '.join(RECORDED_ONLY)})")
    return dict(config_record(config), preset=config.preset().to_dict(), steps=steps, **recorded)


def _normal_path(value: str | None) -> str | None:
    return str(Path(value).expanduser().resolve()) if value else value


def cell_key(record: dict[str, Any]) -> str:
    """A stable key of what decides a run's result, from a run's config.json or a `config_record`: the record
    minus `VOLATILE` fields, with paths made absolute and the dataset named canonically."""
    kept = {k: v for k, v in record.items() if k not in VOLATILE}
    if not kept.get("targets"):
        kept.pop("targets", None)  # runs recorded before the transfer protocols keep their keys
    setting = kept.get("setting") or {}
    dataset = dict(kept.get("dataset") or {})
    dataset["root"] = _normal_path(dataset.get("root"))
    dataset["name"] = setting.get("dataset") or dataset.get("name")
    model = dict(kept.get("model") or {})
    if isinstance(model.get("weights"), str) and looks_like_path(model["weights"]):
        model["weights"] = _normal_path(model["weights"])
    kept.update(dataset=dataset, model=model)
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cell_status(configs: Sequence[RunConfig], store: RunStore) -> pd.DataFrame:
    """Per config (in order): key, status (done | missing), the completed run's id, and the status of the newest
    other matching run (failed, cancelled, diverged: the cell runs again)."""
    done: dict[str, str] = {}
    other: dict[str, str] = {}
    for run in store.list():  # newest first
        key = cell_key(run.config)
        if run.status == RunStatus.COMPLETED:
            done.setdefault(key, run.run_id)
        else:
            other.setdefault(key, run.status)
    rows = []
    for config in configs:
        key = cell_key(config_record(config))
        rows.append({"key": key, "status": CellStatus.DONE if key in done else CellStatus.MISSING,
                     "run_id": done.get(key, ""), "previous": "" if key in done else other.get(key, "")})
    return pd.DataFrame(rows, columns=["key", "status", "run_id", "previous"])


__all__ = ["RECORDED_ONLY", "VOLATILE", "RunConfig", "cell_key", "cell_status", "config_record", "run_record"]
