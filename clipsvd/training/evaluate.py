"""Evaluation: predictions of a trained method, top-1 and per-class accuracy (the base/novel harmonic mean is
clipsvd.runs.metrics's)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from clipsvd.data import ImageSplit, TransformedSplit
from clipsvd.data.batches import evaluation_loader
from clipsvd.methods.base import Method


@torch.no_grad()
def predict(
    method: Method,
    split: ImageSplit,
    class_prompts: list[str],
    transform: Callable,
    batch_size: int = 64,
    on_batch: Callable[[int, int], None] | None = None,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true labels for every image of `split` (`num_workers` loader processes)."""
    method.model.eval()
    weights = method.class_weights(class_prompts)
    device = method.loaded.device
    loader = evaluation_loader(TransformedSplit(split, transform), batch_size, device, num_workers)
    predictions, labels = [], []
    for index, (images, batch_labels) in enumerate(loader, start=1):
        logits = method.logits(images.to(device, non_blocking=True), weights)
        predictions.append(logits.argmax(dim=-1).cpu().numpy())
        labels.append(batch_labels.numpy())
        if on_batch:
            on_batch(index, len(loader))
    return np.concatenate(predictions), np.concatenate(labels)


def accuracy_report(predictions: np.ndarray, labels: np.ndarray, classnames: Sequence[str]) -> dict:
    """Top-1 accuracy (%) overall and per class; classes without test images are left out of per_class."""
    per_class = {
        name: float((predictions[labels == index] == index).mean() * 100)
        for index, name in enumerate(classnames)
        if (labels == index).any()
    }
    return {"accuracy": float((predictions == labels).mean() * 100), "per_class": per_class, "n": int(len(labels))}
