"""DataLoaders that can feed a GPU: worker processes and pinned memory on CUDA, one loader in-process on CPU.

Random augmentation is seeded per image, not per process: the sampler (which runs in the main process) draws a
seed for every image it hands out, and the dataset seeds torch's RNG with it around that image's transform. The
batches are therefore the same with 0 or N workers, and the same for a given run seed on every machine.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from clipsvd.data.splits import ImageSplit
from clipsvd.errors import ConfigError

MAX_DEFAULT_WORKERS = 8  # beyond this, decoding a few-shot split rarely keeps a single GPU any busier


def default_num_workers(device: torch.device) -> int:
    """Loader processes when the config leaves it open: on CUDA the CPUs this process may use, less one for the
    training loop itself, at most MAX_DEFAULT_WORKERS; on CPU 0, since workers would compete with the model for
    the same cores."""
    if device.type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_DEFAULT_WORKERS, cpus - 1))


def resolve_num_workers(num_workers: int | None, device: torch.device) -> int:
    if num_workers is None:
        return default_num_workers(device)
    if num_workers < 0:
        raise ConfigError(f"num_workers: expected 0 (load in the training process) or more, got {num_workers}")
    return num_workers


class SeededSampler(Sampler):
    """(index, seed) pairs: the split's order (shuffled with `generator` when `shuffle`) and one augmentation
    seed per image drawn from the same generator, so every epoch sees fresh but reproducible augmentations."""

    def __init__(self, size: int, generator: torch.Generator, shuffle: bool = True):
        self.size, self.generator, self.shuffle = size, generator, shuffle

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = torch.randperm(self.size, generator=self.generator) if self.shuffle else torch.arange(self.size)
        seeds = torch.randint(0, 2**62, (self.size,), generator=self.generator)
        return iter(zip(order.tolist(), seeds.tolist()))


class SeededTransformedSplit(Dataset):
    """``ds[(i, seed)]`` -> (transform(image i) with torch's RNG seeded by `seed`, label). The RNG state of the
    calling process is put back afterwards (in-process loading must not disturb the training's own draws)."""

    def __init__(self, split: ImageSplit, transform: Callable):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = key
        image, label = self.split[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image), label


def training_loader(split: ImageSplit, transform: Callable, batch_size: int, seed: int, device: torch.device,
                    num_workers: int = 0, drop_last: bool = False) -> DataLoader:
    """Shuffled batches with per-image seeded augmentation (module docstring); pinned memory and persistent
    workers on CUDA."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(SeededTransformedSplit(split, transform), batch_size=batch_size,
                      sampler=SeededSampler(len(split), generator), drop_last=drop_last, **_worker_options(
                          num_workers, device))


def evaluation_loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int = 0) -> DataLoader:
    """In-order batches of a deterministic transform; workers and pinned memory on CUDA."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, **_worker_options(num_workers, device))


def _worker_options(num_workers: int, device: torch.device) -> dict:
    options: dict = {"num_workers": num_workers, "pin_memory": device.type == "cuda"}
    if num_workers:
        options.update(persistent_workers=True, prefetch_factor=4)
    return options


__all__ = ["MAX_DEFAULT_WORKERS", "SeededSampler", "SeededTransformedSplit", "default_num_workers",
           "evaluation_loader", "resolve_num_workers", "training_loader"]
