"""Training on cached features of augmented views: the official ProLIP procedure, for any method whose
trainable part follows a frozen backbone (`Method.frozen_backbone()`).

The frozen backbone runs once per view: `cached_views` passes over the training split in order,
each with fresh random augmentation (torch's RNG seeded with the run's seed). Training then takes
one full-batch step per view, step i on view (i + 1) mod V as the official loop does
(astra-vision/ProLIP methods/ProLIP.py), under the run's learning-rate schedule.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable

import torch

from clipsvd.data import ImageSplit, TransformedSplit
from clipsvd.errors import ConfigError
from clipsvd.methods.base import Method
from clipsvd.runs.status import RunStatus
from clipsvd.training.loop import (
    MixedPrecision,
    Progress,
    ProgressCallback,
    TrainResult,
    build_optimizer,
    finish,
    lr_factor,
    restore_parameters,
)

FEATURE_BATCH = 64  # images per forward pass while caching (memory only; the features do not depend on it)


def cache_view_features(
    backbone: Callable[[torch.Tensor], torch.Tensor], split: ImageSplit, transform: Callable, views: int, seed: int,
    device: torch.device, precision: MixedPrecision, report: ProgressCallback, cancel: threading.Event | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(views × images × d features, labels); None when cancelled. View v is the v-th in-order pass; the
    augmentations draw from torch's RNG seeded once, image after image (no DataLoader draws in between).

    The features are written into one tensor allocated up front (a list joined by torch.stack held every view
    twice at its peak) and kept in the autocast dtype under fp16/bf16, the precision the projection reads them in
    anyway: 300 views of 16-shot ImageNet (16,000 images × 768) take 7.4 GB instead of a 29 GB fp32 peak."""
    torch.manual_seed(seed)
    images = TransformedSplit(split, transform)
    features: torch.Tensor | None = None
    for view in range(views):
        if cancel is not None and cancel.is_set():
            return None
        for start in range(0, len(images), FEATURE_BATCH):
            stop = min(start + FEATURE_BATCH, len(images))
            batch = torch.stack([images[i][0] for i in range(start, stop)])
            with torch.no_grad(), precision.autocast():
                part = backbone(batch.to(device, non_blocking=True))
            if features is None:
                features = torch.empty(views, len(images), *part.shape[1:], device=device,
                                       dtype=precision.dtype or part.dtype)
            features[view, start:stop] = part
            del part
        report(Progress("load", view + 1, views, message=f"caching features of augmented view {view + 1}/{views}"))
    return features, torch.tensor(split.labels, device=device)


def train_on_cached_views(
    method: Method, split: ImageSplit, class_prompts: list, transform: Callable, precision: MixedPrecision, *,
    seed: int = 0, on_progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
) -> TrainResult:
    cfg, device = method.config, method.loaded.device
    backbone = method.frozen_backbone()
    if backbone is None:
        raise ConfigError(f"cached_views: {method.name} trains its backbone, so its features cannot be cached; "
                          "set cached_views=0")
    report = on_progress or (lambda progress: None)
    start = time.perf_counter()
    cached = cache_view_features(backbone, split, transform, cfg.cached_views, seed, device, precision, report, cancel)
    if cached is None:
        return finish(method, RunStatus.CANCELLED, 0, start, [], precision, "cancelled while caching features")
    features, labels = cached
    params = method.trainable_parameters()
    n_steps = cfg.cached_views
    optimizer = build_optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, 1, n_steps))
    history, last_good = [], None
    method.model.train()
    for step in range(n_steps):
        if cancel is not None and cancel.is_set():
            return finish(method, RunStatus.CANCELLED, step, start, history, precision, f"cancelled at step {step}/{n_steps}")
        with precision.autocast():
            weights = method.class_weights(class_prompts)
            logits = method.logits_from_features(features[(step + 1) % n_steps], weights)
            loss = method.loss(logits, labels, weights)
        loss_value = loss.item()
        if not precision.tolerates(loss_value):  # fp16: a few non-finite losses are the scaler's to skip
            restore_parameters(params, last_good)
            return finish(method, RunStatus.DIVERGED, step, start, history, precision,
                          precision.divergence_message(loss_value, step + 1, cfg.lr))
        if math.isfinite(loss_value):
            last_good = [param.detach().clone() for param in params]
        precision.step(loss, optimizer)
        scheduler.step()
        accuracy = (logits.argmax(dim=-1) == labels).float().mean().item()
        report(Progress("train", step + 1, n_steps, step + 1, n_steps, loss_value, optimizer.param_groups[0]["lr"],
                        time.perf_counter() - start))
        history.append({"epoch": step + 1, "step": step + 1,
                        "loss": loss_value if math.isfinite(loss_value) else None, "train_accuracy": accuracy,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
    return finish(method, RunStatus.COMPLETED, n_steps, start, history, precision)
