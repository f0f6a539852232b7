"""Seeded per-class sampling: K-shot training sets and deterministic train/val/test splits."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from clipsvd.data.splits import ImageSplit
from clipsvd.errors import DataError


def indices_by_class(labels: Sequence[int], n_classes: int | None = None) -> list[list[int]]:
    """Positions of each label 0..n_classes-1 (n_classes defaults to max label + 1)."""
    n = (max(labels) + 1 if len(labels) else 0) if n_classes is None else n_classes
    out: list[list[int]] = [[] for _ in range(n)]
    for i, label in enumerate(labels):
        if label >= n:
            raise DataError(f"label {label} at position {i} is out of range for {n} classes")
        out[label].append(i)
    return out


def few_shot(
    split: ImageSplit,
    k: int,
    seed: int,
    *,
    n_classes: int | None = None,
    classnames: Sequence[str] | None = None,
) -> ImageSplit:
    """K images per class, drawn with a seeded generator, classes in label order.

    A class with fewer than K images keeps every image once and fills the rest by drawing
    with replacement, so each class still contributes K examples per epoch. Pass ``classnames``
    (or ``n_classes``) so a class missing from the split entirely is caught, not silently skipped.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"few-shot K must be an int >= 1, got {k!r}")
    if len(split) == 0:
        raise DataError(f"cannot draw {k} shots per class from an empty split")
    if classnames is not None:
        n_classes = len(classnames)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label, idx in enumerate(indices_by_class(split.labels, n_classes)):
        if not idx:
            name = f" ({classnames[label]!r})" if classnames is not None else ""
            raise DataError(f"class label {label}{name} has no images in this split; cannot draw {k} shots")
        if len(idx) >= k:
            picked = rng.choice(idx, size=k, replace=False)
        else:
            extra = rng.choice(idx, size=k - len(idx), replace=True)
            picked = np.concatenate([rng.permutation(idx), extra])
        chosen.extend(int(i) for i in picked)
    return split.subset(chosen)


def cap_per_class(split: ImageSplit, limit: int, seed: int = 0) -> ImageSplit:
    """At most `limit` images of each class present, drawn with a seeded generator, in position order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(split.labels)
    keep: list[int] = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        keep.extend(rng.choice(indices, size=min(limit, len(indices)), replace=False).tolist())
    return split.subset(sorted(keep))


def split_counts(n: int, val_frac: float, test_frac: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for one class of n images.

    At least one test image whenever n >= 2 and at least one training image whenever n >= 1;
    val is shrunk first when the class is too small for all three.
    """
    if n <= 1:
        return n, 0, 0
    n_test = max(1, round(n * test_frac)) if test_frac > 0 else 0
    n_val = round(n * val_frac) if val_frac > 0 else 0
    n_test = min(n_test, n - 1)
    n_val = max(0, min(n_val, n - n_test - 1))
    return n - n_val - n_test, n_val, n_test


def split_per_class(
    labels: Sequence[int], val_frac: float, test_frac: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Deterministic per-class split of positions into train/val/test (each list in position order)."""
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for idx in indices_by_class(labels):
        n_train, n_val, _ = split_counts(len(idx), val_frac, test_frac)
        perm = [idx[j] for j in rng.permutation(len(idx))]
        train += perm[:n_train]
        val += perm[n_train : n_train + n_val]
        test += perm[n_train + n_val :]
    return sorted(train), sorted(val), sorted(test)
