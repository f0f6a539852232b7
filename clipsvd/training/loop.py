"""The one training loop every method shares (nanoGPT-style: readable in one screen).

Its steps come from a batch source (`Batches`): augmented mini-batches from a DataLoader, or ProLIP's cached
features of augmented views. Class text features are recomputed at every step when the method trains the text
encoder. Progress goes to a callback and a threading.Event cancels between steps, so the loop runs the same from
the CLI, a notebook or a dashboard worker thread. A non-finite loss stops training and restores the parameters of
the last good step (under fp16, after the loss scaler skipped MAX_SKIPPED_STEPS steps in a row).
"""
from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch

from clipsvd.data import ImageSplit
from clipsvd.data.batches import training_loader
from clipsvd.errors import ConfigError
from clipsvd.methods.base import Method, MethodConfig
from clipsvd.runs.status import RunStatus
from clipsvd.training.cached_views import cache_view_features
from clipsvd.training.precision import MixedPrecision, resolve_precision


@dataclass
class Progress:
    """One report to the caller: which phase, how far, and the latest numbers."""

    phase: str  # load | train | evaluate | done
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    lr: float | None = None
    elapsed_s: float = 0.0
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.step or not self.total_steps:
            return None
        return self.elapsed_s / self.step * (self.total_steps - self.step)

    def to_dict(self) -> dict:
        return {**asdict(self), "fraction": self.fraction, "eta_s": self.eta_s}


@dataclass
class TrainResult:
    status: RunStatus
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)  # one row per epoch
    message: str = ""
    precision: str = "fp32"  # what the forward passes ran in


ProgressCallback = Callable[[Progress], None]


def build_optimizer(params: list[torch.nn.Parameter], cfg: MethodConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return optimizer(params, lr=cfg.lr, betas=(0.9, 0.999), eps=cfg.eps, weight_decay=cfg.weight_decay)


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine from the base lr down to min_lr at the last step (stepped per iteration)."""
    base_lr = optimizer.param_groups[0]["lr"]
    floor = min(min_lr / base_lr, 1.0)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return _cosine(floor, progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _cosine(floor: float, progress: float) -> float:
    """CosineAnnealingLR's closed form at t/T_max = progress (periodic beyond 1), as a fraction of the base lr."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_factor(cfg: MethodConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    """The learning rate at iteration `step` (0-based), as a fraction of cfg.lr, for every schedule in the configs.

    Warm-up lasts cfg.warmup_epochs epochs: linear ramps to lr, constant holds warmup_lr (Dassl's
    ConstantWarmupScheduler). Then cosine: one monotone cosine over the remaining steps; cosine-cyclic:
    CosineAnnealingLR(T_max=epochs) stepped every iteration after the warm-up (the official CLIP-SVD trainer),
    periodic with 2·epochs steps; cosine-epoch: Dassl's per-epoch cosine with T_max=epochs counted from the
    first epoch after warm-up; constant.
    """
    floor = min(cfg.min_lr / cfg.lr, 1.0)
    warmup_steps = cfg.warmup_epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps if cfg.warmup == "linear" else cfg.warmup_lr / cfg.lr
        if cfg.schedule == "cosine":
            return _cosine(floor, min((step - warmup_steps) / max(1, total_steps - warmup_steps), 1.0))
        if cfg.schedule == "cosine-cyclic":
            return _cosine(floor, (step - warmup_steps) / max(1, cfg.epochs))
        if cfg.schedule == "cosine-epoch":
            return _cosine(floor, (step // steps_per_epoch - cfg.warmup_epochs) / max(1, cfg.epochs))
        return 1.0

    return factor


def steps_per_epoch(n_images: int, batch_size: int, drop_last: bool = False) -> int:
    """Batches per epoch; with drop_last (Dassl) the last incomplete batch goes unless the split is smaller
    than one batch."""
    if drop_last and n_images >= batch_size:
        return n_images // batch_size
    return max(1, math.ceil(n_images / batch_size))


def total_steps(cfg: MethodConfig, n_images: int) -> int:
    """Optimiser steps of a run: cfg.iterations when set, else epochs × batches per epoch (cached views: one
    full-batch step per view)."""
    if cfg.cached_views:
        return cfg.cached_views
    if cfg.iterations is not None:
        return cfg.iterations
    return cfg.epochs * steps_per_epoch(n_images, cfg.batch_size, cfg.drop_last)


@dataclass
class Batches:
    """Where the loop's steps come from: `steps` yields (epoch, inputs, labels) on the device, one per optimiser
    step; `logits` turns those inputs into the method's logits (images, or a cached view's features)."""

    steps: Iterator[tuple[int, torch.Tensor, torch.Tensor]]
    per_epoch: int  # steps per epoch: the history gets one row after each epoch
    logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    names_epoch: bool = True  # a divergence message says the epoch (not for cached views: each epoch is a step)


def mini_batches(method: Method, split: ImageSplit, transform: Callable, seed: int, num_workers: int) -> Batches:
    """Augmented mini-batches of `split` from a DataLoader, epoch after epoch (`num_workers` loader processes;
    clipsvd.data.batches: the batches do not depend on it)."""
    cfg, device = method.config, method.loaded.device
    torch.manual_seed(seed)
    loader = training_loader(split, transform, cfg.batch_size, seed, device, num_workers,
                             drop_last=cfg.drop_last and len(split) >= cfg.batch_size)

    def epochs() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for epoch in itertools.count(1):
            for images, labels in loader:
                yield epoch, images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    return Batches(epochs(), len(loader), method.logits)


def cached_view_batches(method: Method, split: ImageSplit, transform: Callable, precision: MixedPrecision, seed: int,
                        report: ProgressCallback, cancel: threading.Event | None) -> Batches | None:
    """ProLIP's procedure (clipsvd.training.cached_views): the frozen backbone's features of `cached_views`
    augmented views, then one full-batch step per view, step i on view (i + 1) mod V. None when cancelled while
    caching."""
    backbone = method.frozen_backbone()
    if backbone is None:
        raise ConfigError(f"cached_views: {method.name} trains its backbone, so its features cannot be cached; "
                          "set cached_views=0")
    views = method.config.cached_views

    def on_view(done: int) -> None:
        report(Progress("load", done, views, message=f"caching features of augmented view {done}/{views}"))

    cached = cache_view_features(backbone, split, transform, views, seed, method.loaded.device, precision, on_view,
                                 cancel)
    if cached is None:
        return None
    features, labels = cached
    steps = ((step + 1, features[(step + 1) % views], labels) for step in itertools.count())
    return Batches(steps, 1, method.logits_from_features, names_epoch=False)


def train(
    method: Method,
    split: ImageSplit,
    class_prompts: list,
    transform: Callable,
    *,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    num_workers: int = 0,
) -> TrainResult:
    """Train `method` (already attached) on `split`, from mini-batches or, with `cached_views`, from cached
    features; returns how it ended and a per-epoch history."""
    cfg, device = method.config, method.loaded.device
    params, n_steps = method.trainable_parameters(), total_steps(cfg, len(split))
    if not method.trains or not params or n_steps == 0:
        return TrainResult(RunStatus.COMPLETED, 0, 0.0, message="nothing to train")
    precision = MixedPrecision(resolve_precision(cfg.precision, device), device)
    report = on_progress or (lambda progress: None)
    start = time.perf_counter()
    if cfg.cached_views:
        batches = cached_view_batches(method, split, transform, precision, seed, report, cancel)
        if batches is None:
            return finish(method, RunStatus.CANCELLED, 0, start, [], precision, "cancelled while caching features")
    else:
        batches = mini_batches(method, split, transform, seed, num_workers)
    n_epochs = math.ceil(n_steps / batches.per_epoch)
    optimizer = build_optimizer(params, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, batches.per_epoch, n_steps))
    history, last_good = [], None
    loss_sum, loss_seen, correct, seen = 0.0, 0, 0, 0
    method.model.train()
    for step, (epoch, inputs, labels) in enumerate(itertools.islice(batches.steps, n_steps)):
        if cancel is not None and cancel.is_set():
            return finish(method, RunStatus.CANCELLED, step, start, history, precision,
                          f"cancelled at step {step}/{n_steps}")
        with precision.autocast():
            weights = method.class_weights(class_prompts)
            logits = batches.logits(inputs, weights)
            loss = method.loss(logits, labels, weights)
        loss_value = loss.item()
        if not precision.tolerates(loss_value):  # fp16: a few non-finite losses are the scaler's to skip
            restore_parameters(params, last_good)
            message = precision.divergence_message(loss_value, step + 1, cfg.lr)
            return finish(method, RunStatus.DIVERGED, step, start, history, precision,
                          f"{message} (epoch {epoch})" if batches.names_epoch else message)
        if math.isfinite(loss_value):
            last_good = [param.detach().clone() for param in params]
        precision.step(loss, optimizer)
        scheduler.step()
        if math.isfinite(loss_value):  # a step the fp16 scaler skipped stays out of the epoch's mean loss
            loss_sum += loss_value * len(labels)
            loss_seen += len(labels)
        correct += (logits.argmax(dim=-1) == labels).sum().item()
        seen += len(labels)
        report(Progress("train", step + 1, n_steps, epoch, n_epochs, loss_value,
                        optimizer.param_groups[0]["lr"], time.perf_counter() - start))
        if (step + 1) % batches.per_epoch == 0 or step + 1 == n_steps:
            history.append({"epoch": epoch, "step": step + 1, "loss": loss_sum / loss_seen if loss_seen else None,
                            "train_accuracy": correct / seen, "lr": optimizer.param_groups[0]["lr"],
                            "seconds": time.perf_counter() - start})
            loss_sum, loss_seen, correct, seen = 0.0, 0, 0, 0
    return finish(method, RunStatus.COMPLETED, n_steps, start, history, precision)


def restore_parameters(params: list[torch.nn.Parameter], values: list[torch.Tensor] | None) -> None:
    """Put back the values of the last step whose loss was finite."""
    if values is not None:
        with torch.no_grad():
            for param, value in zip(params, values):
                param.copy_(value)


def finish(method: Method, status: str, step: int, start: float, history: list[dict], precision: MixedPrecision,
            message: str = "") -> TrainResult:
    method.model.eval()
    return TrainResult(status, step, time.perf_counter() - start, history, message, precision.precision)


__all__ = ["Batches", "Progress", "TrainResult", "build_optimizer", "cached_view_batches", "cosine_with_warmup",
           "finish", "lr_factor", "mini_batches", "restore_parameters", "steps_per_epoch", "total_steps", "train"]
