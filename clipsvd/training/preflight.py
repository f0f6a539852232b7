"""Fail before the work: the run store is checked writable, with room for the run, before a run starts (`clipsvd
train`, sweeps and reproduce through `run_configs`, the dashboard's job creation), so a store that cannot take the
run is found in a second, not after an hour of training.

The room a run needs is its adapter file plus its JSON records. The adapter's size is known exactly from the run
store when a completed run of the same method and model is there (`checkpoint_bytes`); otherwise the model's own
size bounds it (a parameter-efficient method stores a part of the model's parameters, never more), and nothing is
stored by a method that trains nothing.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from clipsvd.methods import get_method
from clipsvd.models.checkpoints.loaders import create_model_for_weights
from clipsvd.models.spec import ModelSpec, looks_like_path
from clipsvd.models.tiny import register_tiny_model
from clipsvd.runs import RunStatus, RunStore
from clipsvd.training.experiment import ExperimentConfig

RECORD_BYTES = 1024 * 1024  # run.json, config.json, metrics.json, history.jsonl: far less than this


@functools.lru_cache(maxsize=32)
def _architecture_bytes(architecture: str) -> int | None:
    """fp32 bytes of the architecture's parameters, from a build on the meta device (shapes only, no memory)."""
    register_tiny_model()
    try:
        with torch.device("meta"):
            model = create_model_for_weights(architecture, device="meta")
    except Exception:  # an architecture open_clip cannot build offline by name (hub models): the caller says so
        return None
    return sum(p.numel() for p in model.parameters()) * 4


def model_bytes(model: ModelSpec) -> tuple[int | None, str]:
    """The model's size in bytes and how it was found; None when it cannot be known without loading it."""
    if looks_like_path(model.weights) and Path(model.weights).expanduser().is_file():
        return Path(model.weights).expanduser().stat().st_size, f"the size of {Path(model.weights).name}"
    size = _architecture_bytes(model.architecture)
    return size, f"{model.architecture}'s parameters in fp32"


def expected_run_bytes(config: ExperimentConfig, store: RunStore | None = None) -> tuple[int, str]:
    """Bytes one run of `config` writes into the store, and the basis of the estimate (a phrase)."""
    if not get_method(config.method).trains:
        return RECORD_BYTES, "its records (the method stores no tensors)"
    if store is not None:
        model = config.model.to_dict()
        recorded = [run.metrics.get("checkpoint_bytes") or 0 for run in store.list()
                    if run.status == RunStatus.COMPLETED and run.config.get("method") == config.method
                    and run.config.get("model") == model]
        if recorded:
            return max(recorded) + RECORD_BYTES, f"the largest of {len(recorded)} stored {config.method} run(s)"
    size, basis = model_bytes(config.model)
    if size is None:
        return RECORD_BYTES, f"its records only ({config.model.architecture}'s size is unknown before loading it)"
    return size + RECORD_BYTES, basis


def check_store(store: RunStore, configs: Sequence[ExperimentConfig]) -> None:
    """StoreError naming the folder and the reason unless the store can be written and has room for the largest
    run of `configs` (runs are saved one at a time)."""
    needed = max((expected_run_bytes(config, store) for config in configs), default=(0, ""))
    store.check_writable(*needed)


__all__ = ["RECORD_BYTES", "check_store", "expected_run_bytes", "model_bytes"]
