"""Labelled image splits read lazily, from files or from an in-memory uint8 array.

Every image comes out as an RGB PIL image, whatever its source mode, so the transforms and the
model never see a grey, palette or 16-bit image. A file that cannot be decoded raises DataError
naming the file, so a user with one bad JPEG among 10,000 knows which one to delete.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from clipsvd.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_MAX_LISTED = 5  # how many bad files an error names before summarising the rest


def listed(items: Sequence[object], total: int | None = None, limit: int = _MAX_LISTED) -> str:
    """The first `limit` items on indented lines, then "... and N more" if `total` (default: all items) is larger."""
    total = len(items) if total is None else total
    shown = [str(item) for item in items[:limit]]
    more = f"\n  ... and {total - len(shown)} more" if total > len(shown) else ""
    return "\n  ".join(shown) + more


def _check_labels(labels: Sequence[int], what: str) -> list[int]:
    out = []
    for i, label in enumerate(labels):
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise DataError(f"{what}: label {i} is {label!r}; expected a non-negative int")
        if label < 0:
            raise DataError(f"{what}: label {i} is {label}; expected a non-negative int")
        out.append(int(label))
    return out


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB.

    16-bit and float images (common for medical scans) are min-max rescaled to 0..255 per image:
    PIL's own conversion would clip them to white.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(scaled.round().astype(np.uint8)).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")  # keeps palette transparency from raising a warning
    return image.convert("RGB")


class ImageSplit(torch.utils.data.Dataset, ABC):
    """Labelled images of one split, read lazily. ``split[i]`` -> (RGB PIL image, int label)."""

    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a split of {len(self)} images")
        i = i % len(self)
        return self.load_image(i), self.labels[i]

    @abstractmethod
    def load_image(self, i: int) -> Image.Image:
        """Image ``i`` in RGB; DataError naming the file (or array and row) if it cannot be read."""

    @abstractmethod
    def describe(self, i: int) -> str:
        """Where image ``i`` comes from, for error messages and the UI."""

    @abstractmethod
    def subset(self, indices: Sequence[int]) -> "ImageSplit":
        """A split of the given positions (repeats allowed, order kept), sharing the storage."""

    def validate(self) -> None:
        """Open every image once; DataError listing the first bad ones, so a run fails before training."""
        bad: list[str] = []
        n_bad = 0
        for i in range(len(self)):
            try:
                self.load_image(i)
            except DataError as exc:
                n_bad += 1
                if len(bad) < _MAX_LISTED:
                    bad.append(str(exc))
        if n_bad:
            raise DataError(f"{n_bad} of {len(self)} images cannot be read:\n  " + listed(bad, n_bad))

    def _positions(self, indices: Sequence[int]) -> list[int]:
        out = []
        for i in indices:
            i = int(i)
            if not 0 <= i < len(self):
                raise IndexError(f"subset index {i} out of range for a split of {len(self)} images")
            out.append(i)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)})"


class FileImageSplit(ImageSplit):
    """Images stored as files (ImageFolder, CoOp, BiomedCoOp layouts)."""

    def __init__(self, paths: Sequence[str | os.PathLike], labels: Sequence[int]):
        self.paths = [Path(p) for p in paths]
        self.labels = _check_labels(labels, "FileImageSplit")
        if len(self.paths) != len(self.labels):
            raise DataError(f"FileImageSplit: {len(self.paths)} paths but {len(self.labels)} labels")

    def describe(self, i: int) -> str:
        return str(self.paths[i])

    def load_image(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            if path.stat().st_size == 0:
                raise DataError(f"image file is empty (0 bytes): {path}")
            with Image.open(path) as image:
                image.load()
                return to_rgb(image)
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(f"image file not found: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot read image {path}: {exc}") from exc

    def subset(self, indices: Sequence[int]) -> "FileImageSplit":
        pos = self._positions(indices)
        return FileImageSplit([self.paths[i] for i in pos], [self.labels[i] for i in pos])


class ArrayImageSplit(ImageSplit):
    """Images held in one uint8 array, (N,H,W) grey or (N,H,W,C) with C in 1, 3, 4.

    Subsets keep a reference to the whole array and a list of rows, so sampling K shots from
    60,000 images copies nothing; ``describe`` names the row of the original array.
    """

    def __init__(self, images: np.ndarray, labels: Sequence[int], name: str, *, rows: Sequence[int] | None = None):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise DataError(f"{name}: images have dtype {images.dtype}; expected uint8")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
            raise DataError(
                f"{name}: images have shape {images.shape}; expected (N,H,W) or (N,H,W,C) with C in 1, 3, 4"
            )
        self.images = images
        self.name = name
        self.rows = list(range(len(images))) if rows is None else [int(r) for r in rows]
        self.labels = _check_labels(labels, name)
        if len(self.rows) != len(self.labels):
            raise DataError(f"{name}: {len(self.rows)} images but {len(self.labels)} labels")

    def describe(self, i: int) -> str:
        return f"{self.name}[{self.rows[i]}]"

    def load_image(self, i: int) -> Image.Image:
        try:
            arr = self.images[self.rows[i]]
            if arr.ndim == 3 and arr.shape[2] == 1:
                arr = arr[:, :, 0]
            # uint8 (H,W) -> L, (H,W,3) -> RGB, (H,W,4) -> RGBA
            return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")
        except (IndexError, ValueError, TypeError) as exc:
            raise DataError(f"cannot read image {self.describe(i)}: {exc}") from exc

    def subset(self, indices: Sequence[int]) -> "ArrayImageSplit":
        pos = self._positions(indices)
        return ArrayImageSplit(self.images, [self.labels[i] for i in pos], self.name, rows=[self.rows[i] for i in pos])
