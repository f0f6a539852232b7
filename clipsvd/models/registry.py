"""Extension points of model building, per architecture name: steps run on the module right after open_clip
builds it (before any checkpoint file loads), and named weights that resolve to a local checkpoint file.

A plug-in (e.g. clipsvd.models.world_weights) imports this module and registers itself; this module imports no
plug-in and not the loader, which subscribes to changes (`on_change`) to drop the builds a registration makes stale.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

# `spec` below is a clipsvd.models.spec.ModelSpec, typed Any here: spec.py reads the labels registered here.
PostBuildStep = Callable[[torch.nn.Module, Any], "torch.nn.Module | None"]
WeightsResolver = Callable[[Any], Path]
_POST_BUILD: dict[str, list[PostBuildStep]] = {}
_WEIGHT_SOURCES: dict[tuple[str, str], WeightsResolver] = {}
_WEIGHT_LABELS: dict[tuple[str, str], str] = {}
_ON_CHANGE: list[Callable[[], None]] = []


def on_change(callback: Callable[[], None]) -> None:
    """Call `callback` after every registration (the loader clears its cache of built models)."""
    if callback not in _ON_CHANGE:
        _ON_CHANGE.append(callback)


def _changed() -> None:
    for callback in _ON_CHANGE:
        callback()


def register_post_build(architecture: str, step: PostBuildStep) -> None:
    """Run `step(model, spec)` on every `architecture` model after open_clip builds it (it may return a new module)."""
    steps = _POST_BUILD.setdefault(architecture, [])
    if step not in steps:
        steps.append(step)
    _changed()


def register_weights_source(architecture: str, name: str, resolve: WeightsResolver,
                            label: str | None = None) -> None:
    """Let `weights=name` on `architecture` mean the checkpoint file `resolve(spec)` returns (e.g. shipped
    weights); `label` says in words what those weights are, wherever the model is named."""
    _WEIGHT_SOURCES[(architecture, name)] = resolve
    if label:
        _WEIGHT_LABELS[(architecture, name)] = label
    _changed()


def post_build(model: torch.nn.Module, spec: Any) -> torch.nn.Module:
    """`model` after every step registered for its architecture."""
    for step in _POST_BUILD.get(spec.architecture, []):
        model = step(model, spec) or model
    return model


def weights_source(architecture: str, name: str) -> WeightsResolver | None:
    """The resolver registered for `weights=name` on `architecture`, if any."""
    return _WEIGHT_SOURCES.get((architecture, name))


def weights_label(architecture: str, name: str) -> str | None:
    """The words registered for `weights=name` on `architecture`, if any."""
    return _WEIGHT_LABELS.get((architecture, name))
