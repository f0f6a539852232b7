"""The weights source of the small CLIP pretrained on the generated world (clipsvd/world), shipped with the package.

Its architecture is an open_clip config (configs/clipsvd-world.json, registered through
`open_clip.add_model_config`) with one change after open_clip builds it: the patch embedding
becomes a convolutional stem (three stride-2 convolutions to the same 8 x 8 token grid). A plain
patch-8 ViT learns colour in minutes but shape barely at all on two CPU cores; a strided-conv front
end learns shape several times faster. The transformer blocks and their attention heads, which
every method and analysis works on, are open_clip's own.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
from torch import nn

from clipsvd.checksums import sha256_of
from clipsvd.errors import CheckpointError
from clipsvd.models.registry import register_post_build, register_weights_source

WORLD_MODEL_NAME = "clipsvd-world"
WORLD_WEIGHTS = "world"  # the weights tag: the shipped checkpoint
WORLD_LABEL = "a small CLIP pretrained on the generated world — not OpenAI's CLIP"
CONFIG_DIR = Path(__file__).parent / "configs"
WORLD_CHECKPOINT = Path(__file__).parent / "weights" / "clipsvd-world.safetensors"
# sha256 of the shipped checkpoint; `python -m clipsvd pretrain-world` prints the one it wrote.
WORLD_CHECKPOINT_SHA256 = "a271f27e67175316e4d066e45401f760ba23347e80025539d15d9cf0b36fafac"


class ConvStem(nn.Module):
    """Three stride-2 3x3 convolutions: (B, 3, S, S) -> (B, width, S/8, S/8), in place of conv1."""

    def __init__(self, width: int, channels: tuple[int, int] = (32, 64)):
        super().__init__()
        a, b = channels
        self.layers = nn.Sequential(
            nn.Conv2d(3, a, 3, 2, 1), nn.GELU(),
            nn.Conv2d(a, b, 3, 2, 1), nn.GELU(),
            nn.Conv2d(b, width, 3, 2, 1),
        )

    def forward(self, x):
        return self.layers(x)


def register_world_model() -> str:
    """Register the world architecture with open_clip, its conv stem and its shipped weights ("world")
    with the model loader; idempotent. Returns the architecture name."""
    if WORLD_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR / f"{WORLD_MODEL_NAME}.json")
        register_post_build(WORLD_MODEL_NAME, lambda model, spec: add_conv_stem(model))
        register_weights_source(WORLD_MODEL_NAME, WORLD_WEIGHTS, lambda spec: verified_world_checkpoint(),
                                label=WORLD_LABEL)
    return WORLD_MODEL_NAME


def add_conv_stem(model: nn.Module) -> nn.Module:
    """Replace the image tower's patch embedding by the convolutional stem (in place)."""
    visual = model.visual
    if visual.grid_size[0] * 8 != visual.image_size[0]:
        raise ValueError(f"the conv stem downsamples by 8; image size {visual.image_size} with grid {visual.grid_size}")
    visual.conv1 = ConvStem(visual.conv1.out_channels)
    return model


def create_world_model() -> nn.Module:
    """The world architecture with random weights (for pretraining, or before loading the checkpoint)."""
    register_world_model()
    return add_conv_stem(open_clip.create_model(WORLD_MODEL_NAME, pretrained=None, device="cpu"))


def verified_world_checkpoint() -> Path:
    """The shipped checkpoint, after checking that it is the published one."""
    if not WORLD_CHECKPOINT.is_file():
        raise CheckpointError(
            f"the world CLIP checkpoint is missing: {WORLD_CHECKPOINT} (reinstall clipsvd, or rebuild it with "
            "`python -m clipsvd pretrain-world`)"
        )
    actual = sha256_of(WORLD_CHECKPOINT)
    if actual != WORLD_CHECKPOINT_SHA256:
        raise CheckpointError(
            f"sha256 mismatch for {WORLD_CHECKPOINT}: expected {WORLD_CHECKPOINT_SHA256}, got {actual}"
        )
    return WORLD_CHECKPOINT
