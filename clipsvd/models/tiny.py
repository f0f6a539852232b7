"""A 2-layer, width-64 CLIP registered with open_clip, so tests and demos build a model in 0.1 s."""
from __future__ import annotations

import copy

import open_clip

TINY_MODEL_NAME = "clipsvd-tiny"

TINY_MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_tiny_model() -> str:
    """Register the tiny config with open_clip (idempotent) and return its name."""
    configs = open_clip.factory._MODEL_CONFIGS
    if TINY_MODEL_NAME not in configs:
        configs[TINY_MODEL_NAME] = copy.deepcopy(TINY_MODEL_CONFIG)
    return TINY_MODEL_NAME
