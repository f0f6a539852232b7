"""Where on the image a head writes a text: per-patch maps from the spatial direct contributions, and their
scores against ground-truth object masks (pointing game, mass inside the mask, each against chance).

A head's term splits over the source tokens its class-token query attends to (`direct_contributions(...,
spatial=True)`); projecting each token's term on a text embedding gives one number per patch: how much of the
head's "writing along that text" comes from there. These maps are what TextSpan's authors turn into zero-shot
segmentation (clip_text_span's compute_segmentations.py).

Scores, both exact and with chance written out:
- **pointing game**: for each image, the patch with the highest value; its score is the share of that patch's
  pixels inside the object mask (1 when the patch lies fully on the object). Averaged over images. A patch drawn
  uniformly at random scores the object's area share in expectation: that is its chance level.
- **mass in mask**: the positive part of the map, each patch's mass spread evenly over its pixels; the share of
  that mass falling inside the mask. A uniform map scores the object's area share: the same chance level.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT, LnPostSplit, check_spatial, direct_contributions
from clipsvd.errors import ConfigError


@dataclass
class PatchMaps:
    """maps (N, K, rows, cols): per patch, the head's contribution along each of K directions; class_token
    (N, K): the class token's own part, which lies on no patch."""

    maps: torch.Tensor
    class_token: torch.Tensor
    grid: tuple[int, int]
    layer: int
    head: int

    def grid_text(self) -> str:
        return f"{self.grid[0]} × {self.grid[1]} patch grid"


@torch.no_grad()
def patch_maps(model: Any, images: torch.Tensor, layer: int, head: int, directions: torch.Tensor,
               batch_size: int = 16, ln_post_split: str | LnPostSplit = DEFAULT_LN_POST_SPLIT) -> PatchMaps:
    """Per-patch contribution of one head along `directions` (K × D, e.g. text embeddings), in image batches,
    so only one batch's per-token terms of one layer exist at a time."""
    grid = check_spatial(model)  # refuses towers without per-token terms before any forward pass
    directions = torch.as_tensor(directions).float()
    if directions.ndim == 1:
        directions = directions[None]
    maps, cls = [], []
    for start in range(0, len(images), batch_size):
        parts = direct_contributions(model, images[start:start + batch_size], [layer], ln_post_split, spatial=True)
        if not 0 <= head < parts.heads.shape[3]:
            raise ConfigError(f"spatial maps: head {head} does not exist; heads 0..{parts.heads.shape[3] - 1}")
        if directions.shape[1] != parts.heads.shape[-1]:
            raise ConfigError(f"spatial maps: directions have {directions.shape[1]} dims, the embedding "
                              f"{parts.heads.shape[-1]}")
        scores = parts.heads[:, 0, :, head].cpu() @ directions.t()  # (n, T, K)
        cls.append(scores[:, 0])
        maps.append(scores[:, 1:].permute(0, 2, 1).reshape(len(scores), -1, *grid))
        del parts
    return PatchMaps(torch.cat(maps), torch.cat(cls), grid, layer, head)


def mask_share_per_patch(masks: np.ndarray | torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, rows, cols): the share of each patch's pixels inside the mask (masks (N, H, W) bool, H and W
    multiples of the grid — as a ViT's patches tile its input)."""
    m = torch.as_tensor(np.asarray(masks)).float()
    if m.ndim != 3:
        raise ConfigError(f"masks: expected (images, height, width), got {tuple(m.shape)}")
    if m.shape[1] % grid[0] or m.shape[2] % grid[1]:
        raise ConfigError(f"masks of {m.shape[1]}×{m.shape[2]} px do not tile a {grid[0]}×{grid[1]} patch grid")
    return F.avg_pool2d(m[:, None], (m.shape[1] // grid[0], m.shape[2] // grid[1]))[:, 0]


@dataclass
class GroundTruthScore:
    pointing: float  # mean over images of the top patch's share inside the mask
    mass_in_mask: float  # mean over images of the positive mass inside the mask
    chance: float  # mean object area share (what a random patch or a uniform map scores)
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"pointing": self.pointing, "mass_in_mask": self.mass_in_mask, "chance": self.chance, "n": self.n}


def score_maps(maps: torch.Tensor, masks: np.ndarray | torch.Tensor) -> GroundTruthScore:
    """Pointing game and mass in mask of maps (N, rows, cols) against masks (N, H, W), with chance."""
    maps = torch.as_tensor(maps).double()
    if maps.ndim != 3:
        raise ConfigError(f"maps: expected (images, rows, cols), got {tuple(maps.shape)}")
    share = mask_share_per_patch(masks, tuple(maps.shape[1:])).double()
    if len(share) != len(maps):
        raise ConfigError(f"{len(maps)} maps but {len(share)} masks")
    flat, inside = maps.flatten(1), share.flatten(1)
    top = flat.argmax(dim=1)
    pointing = inside.gather(1, top[:, None])[:, 0]
    positive = flat.clamp_min(0)
    total = positive.sum(1)
    mass = torch.where(total > 0, (positive * inside).sum(1) / total.clamp_min(1e-300), inside.mean(1))
    return GroundTruthScore(float(pointing.mean()), float(mass.mean()), float(inside.mean(1).mean()), len(maps))


def normalised_pair(before: torch.Tensor, after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both maps and one symmetric colour limit: before and after drawn on the same scale."""
    limit = float(max(before.abs().max(), after.abs().max(), 1e-12))
    return before, after, limit


def top_images(maps: PatchMaps, k: int = 4, direction: int = 0) -> Sequence[int]:
    """The images whose head writes most along a direction (its total over tokens, highest first)."""
    total = maps.maps[:, direction].sum((1, 2)) + maps.class_token[:, direction]
    return torch.argsort(total, descending=True, stable=True)[:k].tolist()
