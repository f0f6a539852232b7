"""What the world CLIP knows, measured: zero-shot accuracy per style, factor-specific heads found by
TextSpan with the world corpus, and the mean-ablation check that those heads do what their words say.

Each function takes a LoadedModel, so the same checks run on the shipped model, on a model after
adaptation, or on a freshly pretrained one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from clipsvd.analysis.corpus import corpus_tags
from clipsvd.analysis.head_topics import ablation_effects, head_topics
from clipsvd.analysis.textspan import TextSpanResult, collect_contributions, explain_heads
from clipsvd.data import TransformedSplit
from clipsvd.data.splits import ArrayImageSplit
from clipsvd.data.world import load_world
from clipsvd.methods import create_method
from clipsvd.training.evaluate import predict
from clipsvd.world.factors import COLOURS, SHAPES
from clipsvd.world.prompts import COLOUR_TEMPLATE, SHAPE_TEMPLATE
from clipsvd.world.render import STYLES, render, to_uint8
from clipsvd.world.scenes import sample_scenes
from clipsvd.worldclip.zeroshot import held_out_single_objects

PROBE_SEED = 2_000_003  # images for TextSpan and ablation; not a pretraining or dataset seed


def _batches(loaded, images: np.ndarray, labels: np.ndarray | None = None, batch_size: int = 128):
    split = ArrayImageSplit(images, (labels if labels is not None else np.zeros(len(images), int)).tolist(), "probe")
    return DataLoader(TransformedSplit(split, loaded.eval_transform()), batch_size=batch_size)


@torch.no_grad()
def _text_features(loaded, template: str, names: list[str]) -> torch.Tensor:
    return loaded.encode_text([template.format(n) for n in names]).float().cpu()


def zero_shot_by_style(loaded, styles: tuple[str, ...] = STYLES, tasks: tuple[str, ...] = ("shape", "colour"),
                       split: str = "test") -> pd.DataFrame:
    """Zero-shot top-1 accuracy (%) on each world dataset's `split`, one row per task × style, through the same
    method and evaluation path as the zero-shot row of every comparison."""
    rows = []
    for task in tasks:
        for style in styles:
            dataset = load_world(f"world-{task}-{style}")
            method = create_method("zero-shot").attach(loaded, dataset.prompts())
            predictions, labels = predict(method, dataset.split(split), dataset.prompts(), loaded.eval_transform(),
                                          batch_size=256)
            rows.append({"task": task, "style": style, "accuracy": 100 * float((predictions == labels).mean()),
                         "n": len(labels)})
    return pd.DataFrame(rows)


def probe_scenes(n: int = 512, style: str = "clean", seed: int = PROBE_SEED) -> np.ndarray:
    """Varied scenes (half single objects, half groups) for TextSpan: every factor varies across them."""
    rng = np.random.default_rng(seed)
    return to_uint8(render(sample_scenes(rng, n, 0.5), style, 64, seed=seed))


def factor_heads(loaded, n_images: int = 512, texts_per_head: int = 10, top_k: int = 5,
                 style: str = "clean") -> tuple[pd.DataFrame, TextSpanResult]:
    """TextSpan with the world corpus on varied scenes; per head the factor of most of its first `top_k` texts."""
    tags = corpus_tags("world")
    result = explain_heads(loaded, _batches(loaded, probe_scenes(n_images, style)), list(tags),
                           texts_per_head=texts_per_head)
    return head_topics(result, tags, top_k), result


def ablation_table(loaded, n_per_pair: int = 8, style: str = "clean", layers=None) -> pd.DataFrame:
    """Zero-shot shape and colour accuracy on held-out single objects with each head mean-ablated."""
    images, shapes, colours = held_out_single_objects(n_per_pair, seed=PROBE_SEED, style=style)
    heads, embedding, chosen = collect_contributions(loaded, _batches(loaded, to_uint8(images)), layers)
    tasks = {
        "shape": (_text_features(loaded, SHAPE_TEMPLATE, [s.name for s in SHAPES]), shapes),
        "colour": (_text_features(loaded, COLOUR_TEMPLATE, [c.name for c in COLOURS]), colours),
    }
    return ablation_effects(heads, embedding, chosen, tasks)
