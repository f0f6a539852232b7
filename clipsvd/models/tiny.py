"""A 2-layer, width-64 CLIP registered with open_clip, so tests and demos build a model in 0.1 s."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip

TINY_MODEL_NAME = "clipsvd-tiny"

TINY_MODEL_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_tiny_model() -> str:
    """Register the tiny config with open_clip (idempotent) and return its name."""
    if TINY_MODEL_NAME not in open_clip.list_models():
        register_model_config(TINY_MODEL_NAME, TINY_MODEL_CONFIG)
    return TINY_MODEL_NAME


def register_model_config(name: str, config: dict) -> str:
    """Register an open_clip config through its public `add_model_config` (it reads `<name>.json` files)."""
    global _CONFIG_DIR
    if _CONFIG_DIR is None:
        _CONFIG_DIR = Path(tempfile.mkdtemp(prefix="clipsvd-configs-"))
    path = _CONFIG_DIR / f"{name}.json"
    path.write_text(json.dumps(config))
    open_clip.add_model_config(path)
    return name


_CONFIG_DIR: Path | None = None
