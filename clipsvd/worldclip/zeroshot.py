"""Zero-shot checks of a world CLIP on held-out clean single objects (used while pretraining, by the evaluation
and in tests)."""
from __future__ import annotations

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from clipsvd.world.factors import COLOURS, SHAPES
from clipsvd.world.prompts import COLOUR_TEMPLATE, SHAPE_TEMPLATE
from clipsvd.world.render import render
from clipsvd.world.scenes import single_objects

HELD_OUT_SEED = 1_000_003  # never used to draw pretraining scenes (those come from the config's seed stream)


def held_out_single_objects(n_per_class: int = 8, seed: int = HELD_OUT_SEED, style: str = "clean",
                            size: int = 64) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(images in 0..1, shape labels, colour labels): every shape x colour pair `n_per_class` times."""
    rng = np.random.default_rng(seed)
    pairs = np.array([(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS))] * n_per_class)
    scenes = single_objects(rng, pairs[:, 0], pairs[:, 1])
    return render(scenes, style, size, seed=seed), pairs[:, 0], pairs[:, 1]


def normalise(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rendered images (0..1) -> model input, with open_clip's default (OpenAI) normalisation: the world CLIP
    uses it, so it needs no preprocessing config of its own."""
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)
    return (images.to(device) - mean) / std


@torch.no_grad()
def zero_shot_accuracy(model, tokenizer, images: torch.Tensor, labels: np.ndarray, prompts: list[str],
                       device: torch.device, batch_size: int = 256) -> float:
    text = F.normalize(model.encode_text(tokenizer(prompts).to(device)).float(), dim=-1)
    correct = 0
    for i in range(0, len(images), batch_size):
        feats = F.normalize(model.encode_image(normalise(images[i:i + batch_size], device)).float(), dim=-1)
        correct += int(((feats @ text.T).argmax(1).cpu().numpy() == labels[i:i + batch_size]).sum())
    return correct / len(images)


def held_out_accuracy(model, tokenizer, device: torch.device, size: int = 64, style: str = "clean") -> dict:
    """Zero-shot colour and shape accuracy (chance 12.5% each) on 512 held-out single objects."""
    images, shapes, colours = held_out_single_objects(style=style, size=size)
    return {
        "shape_acc": round(zero_shot_accuracy(model, tokenizer, images, shapes,
                                              [SHAPE_TEMPLATE.format(s.name) for s in SHAPES], device), 4),
        "colour_acc": round(zero_shot_accuracy(model, tokenizer, images, colours,
                                               [COLOUR_TEMPLATE.format(c.name) for c in COLOURS], device), 4),
    }
