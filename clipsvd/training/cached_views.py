"""Training on cached features of augmented views: the official ProLIP procedure, for any method whose
trainable part follows a frozen backbone (`Method.frozen_backbone()`).

The frozen backbone runs once per view: `cached_views` passes over the training split in order,
each with fresh random augmentation (torch's RNG seeded with the run's seed). Training then takes
one full-batch step per view, step i on view (i + 1) mod V as the official loop does
(astra-vision/ProLIP methods/ProLIP.py), under the run's learning-rate schedule: the training loop's
`cached_view_batches` source.
"""
from __future__ import annotations

import threading
from typing import Callable

import torch

from clipsvd.data import ImageSplit, TransformedSplit
from clipsvd.training.precision import MixedPrecision

FEATURE_BATCH = 64  # images per forward pass while caching (memory only; the features do not depend on it)


def cache_view_features(
    backbone: Callable[[torch.Tensor], torch.Tensor], split: ImageSplit, transform: Callable, views: int, seed: int,
    device: torch.device, precision: MixedPrecision, on_view: Callable[[int], None], cancel: threading.Event | None,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(views × images × d features, labels); None when cancelled; `on_view(n)` after the n-th view. View v is the
    v-th in-order pass; the augmentations draw from torch's RNG seeded once, image after image (no DataLoader draws
    in between).

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
        on_view(view + 1)
    return features, torch.tensor(split.labels, device=device)
