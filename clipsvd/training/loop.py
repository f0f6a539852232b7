"""The one training loop every method shares (nanoGPT-style: readable in one screen).

Class text features are recomputed at every step when the method trains the text encoder.
Progress goes to a callback and a threading.Event cancels between steps, so the loop runs the
same from the CLI, a notebook or a dashboard worker thread. A non-finite loss stops training
and restores the parameters of the last good step.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from torch.utils.data import DataLoader

from clipsvd.data import ImageSplit, TransformedSplit
from clipsvd.methods.base import Method, MethodConfig

COMPLETED, CANCELLED, DIVERGED = "completed", "cancelled", "diverged"


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
    status: str
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)  # one row per epoch
    message: str = ""


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
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(
    method: Method,
    split: ImageSplit,
    class_prompts: list[str],
    transform: Callable,
    *,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train `method` (already attached) on `split`; returns how it ended and a per-epoch history."""
    cfg, device = method.config, method.loaded.device
    params = method.trainable_parameters()
    if not method.trains or not params or cfg.epochs == 0:
        return TrainResult(COMPLETED, 0, 0.0, message="nothing to train")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    loader = DataLoader(TransformedSplit(split, transform), batch_size=cfg.batch_size, shuffle=True,
                        generator=generator, num_workers=0)
    total_steps = cfg.epochs * len(loader)
    optimizer = build_optimizer(params, cfg)
    scheduler = cosine_with_warmup(optimizer, cfg.warmup_epochs * len(loader), total_steps, cfg.min_lr)
    report = on_progress or (lambda progress: None)
    history, step, start, last_good = [], 0, time.perf_counter(), None
    method.model.train()
    for epoch in range(1, cfg.epochs + 1):
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in loader:
            if cancel is not None and cancel.is_set():
                return _finish(method, CANCELLED, step, start, history, f"cancelled at step {step}/{total_steps}")
            images, labels = images.to(device), labels.to(device)
            weights = method.class_weights(class_prompts)
            logits = method.logits(images, weights)
            loss = method.loss(logits, labels, weights)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                if last_good is not None:  # the parameters whose loss was still finite
                    with torch.no_grad():
                        for param, value in zip(params, last_good):
                            param.copy_(value)
                message = (f"loss became {loss_value} at step {step + 1} (epoch {epoch}); stopped and restored "
                           f"the last parameters with a finite loss. Lower the learning rate (now {cfg.lr:g}).")
                return _finish(method, DIVERGED, step, start, history, message)
            last_good = [param.detach().clone() for param in params]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            loss_sum += loss_value * len(labels)
            correct += (logits.argmax(dim=-1) == labels).sum().item()
            seen += len(labels)
            report(Progress("train", step, total_steps, epoch, cfg.epochs, loss_value,
                            optimizer.param_groups[0]["lr"], time.perf_counter() - start))
        history.append({"epoch": epoch, "step": step, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                        "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start})
    return _finish(method, COMPLETED, step, start, history)


def _finish(method: Method, status: str, step: int, start: float, history: list[dict], message: str = "") -> TrainResult:
    method.model.eval()
    return TrainResult(status, step, time.perf_counter() - start, history, message)


__all__ = ["CANCELLED", "COMPLETED", "DIVERGED", "Progress", "TrainResult", "build_optimizer",
           "cosine_with_warmup", "train"]
