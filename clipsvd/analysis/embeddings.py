"""Image features before and after fine-tuning, laid out in 2-D with UMAP to see classes separate."""
from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from clipsvd.errors import DataError
from clipsvd.resources import cache_dir

UMAP_NEIGHBORS = 15
_UMAP_IMPORT = threading.Lock()  # the dashboard lays out from several threads; numba.jit is patched once


def import_umap() -> ModuleType:
    """umap, with its numba kernels cached on disk so that only the first process on a machine compiles them.

    umap (unlike pynndescent) declares its kernels without cache=True, so every new process spent 10-16 s
    compiling them at the first layout. While umap is first imported, numba.jit/njit default to cache=True;
    the machine code then lives in NUMBA_CACHE_DIR (default: the project's cache folder, numba/). The flag
    only changes where compiled code is kept, not what runs. Later imports return the loaded module.
    """
    with _UMAP_IMPORT:
        if "umap" not in sys.modules:
            _import_umap_cached()
    return sys.modules["umap"]


def numba_cache_dir() -> Path:
    return Path(os.environ.get("NUMBA_CACHE_DIR") or cache_dir("numba"))


def umap_kernels_cached() -> bool:
    """Whether an earlier process left umap's compiled kernels in the cache (numba names the folder umap_<hash>)."""
    return any(numba_cache_dir().glob("umap_*/*.nbi"))


def _import_umap_cached() -> None:
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    import numba
    from numba.core.errors import NumbaWarning

    if not numba.config.CACHE_DIR:  # numba was imported before the variable was set
        numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

    def cached(decorator: Callable) -> Callable:
        @functools.wraps(decorator)
        def with_cache(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)
        return with_cache

    plain = numba.jit, numba.njit
    numba.jit, numba.njit = cached(numba.jit), cached(numba.njit)
    try:
        with warnings.catch_warnings():
            # A kernel numba cannot cache (dynamic globals) is compiled per process as before, with a warning.
            warnings.filterwarnings("ignore", category=NumbaWarning)
            import umap  # noqa: F401
    finally:
        numba.jit, numba.njit = plain


def umap_2d(features: np.ndarray, seed: int = 0, n_neighbors: int = UMAP_NEIGHBORS) -> np.ndarray:
    """(n, 2) UMAP layout with cosine distance (CLIP features are compared by angle)."""
    umap = import_umap()  # slow first import (numba): only when a layout is asked for

    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if features.ndim != 2 or n < 3:
        raise DataError(f"UMAP needs at least 3 feature vectors (n × d), got shape {features.shape}")
    with warnings.catch_warnings():
        # umap warns that a seed forces one thread; reproducible layouts are the point here.
        warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
        warnings.filterwarnings("ignore", message="Cannot cache compiled function")  # compiled per process
        return _fit(umap, features, seed, n_neighbors)


def _fit(umap, features: np.ndarray, seed: int, n_neighbors: int) -> np.ndarray:
    n = len(features)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, n - 1)),
        metric="cosine",
        random_state=seed,
        # Spectral initialisation needs a connected k-NN graph with more points than dimensions.
        init="spectral" if n > 10 else "random",
    )
    return reducer.fit_transform(features)


def umap_before_after(
    features_before: np.ndarray, features_after: np.ndarray, labels: Sequence[Any], seed: int = 0
) -> pd.DataFrame:
    """Two UMAP layouts (fitted separately: the feature spaces differ) in one long table.

    Columns x, y, label, which ∈ {before, after}, index (the image's position).
    """
    labels = list(labels)
    if not (len(features_before) == len(features_after) == len(labels)):
        raise DataError(f"UMAP: {len(features_before)} features before, {len(features_after)} after and "
                        f"{len(labels)} labels; expected one of each per image")
    frames = []
    for which, features in (("before", features_before), ("after", features_after)):
        xy = umap_2d(features, seed)
        frames.append(pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "label": labels, "which": which,
                                    "index": np.arange(len(labels))}))
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def image_features(
    loaded_or_method: Any, split: torch.utils.data.Dataset, transform: Callable, batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """(features (n × d), labels (n,)) of a split of (PIL image, label) pairs, normalised as the model
    (or method: ProLIP, linear probe use their own feature path) classifies them."""
    encode = getattr(loaded_or_method, "image_features", None) or loaded_or_method.encode_image
    features, labels = [], []
    batch, batch_labels = [], []
    for i in range(len(split)):
        image, label = split[i]
        batch.append(transform(image))
        batch_labels.append(label)
        if len(batch) == batch_size or i == len(split) - 1:
            features.append(encode(torch.stack(batch)).float().cpu())
            labels.extend(batch_labels)
            batch, batch_labels = [], []
    if not features:
        raise DataError("image_features: the split is empty")
    return torch.cat(features).numpy(), np.asarray(labels)
