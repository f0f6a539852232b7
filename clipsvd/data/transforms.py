"""Image transforms (CLIP-SVD's training augmentation, CLIP's evaluation preprocessing)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torchvision import transforms as T

from clipsvd.data.splits import ImageSplit

# OpenAI CLIP's normalisation (open_clip.constants.OPENAI_DATASET_MEAN/STD), kept here so the
# data layer does not import open_clip.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def train_transform(
    image_size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD, crop_scale_min: float = 0.08,
) -> Callable:
    """RandomResizedCrop(scale crop_scale_min-1, bicubic) + horizontal flip: CoOp's few-shot augmentation that
    CLIP-SVD and CLIPFit train with (scale 0.08); ProLIP's cached views use 0.5."""
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=(crop_scale_min, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def eval_transform(
    image_size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
    interpolation: str = "bicubic", resize_mode: str = "shortest",
) -> Callable:
    """A model's own evaluation preprocessing (its preprocess_cfg), built by open_clip itself so it matches exactly.

    Defaults are CLIP's: resize the short side (bicubic), centre crop, normalise; `squash`/`longest`
    and `bilinear` models (e.g. CLIPA) get theirs.
    """
    from open_clip.transform import image_transform  # imported here: the rest of the data layer needs no open_clip

    return image_transform(image_size, is_train=False, mean=tuple(mean), std=tuple(std),
                           resize_mode=resize_mode, interpolation=interpolation)


class TransformedSplit(torch.utils.data.Dataset):
    """A split with a transform applied: ``ts[i]`` -> (tensor, label), ready for a DataLoader."""

    def __init__(self, split: ImageSplit, transform: Callable):
        self.split = split
        self.transform = transform

    @property
    def labels(self) -> list[int]:
        return self.split.labels

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image, label = self.split[i]
        return self.transform(image), label
