"""Where the transformer blocks and their weight matrices live in each supported tower family.

Methods and analyses name matrices by *kind* (q, k, v, out, fc, proj) and find them here, so
supporting another backbone family means adding one table row, not touching every method.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from clipsvd.errors import ConfigError

ENCODERS = ("visual", "text")
MATRIX_KINDS = ("q", "k", "v", "out", "fc", "proj")


@dataclass(frozen=True)
class MatrixLocation:
    """A matrix inside a block: module path, parameter name, and which row block of a fused weight."""

    module: str
    param: str = "weight"
    row_block: int = 0
    row_blocks: int = 1


# Block families: open_clip's own transformer, timm ViT (BiomedCLIP's image tower), HF BERT (its text tower).
BLOCK_LAYOUTS: dict[str, dict[str, MatrixLocation]] = {
    "open_clip": {
        "q": MatrixLocation("attn", "in_proj_weight", 0, 3),
        "k": MatrixLocation("attn", "in_proj_weight", 1, 3),
        "v": MatrixLocation("attn", "in_proj_weight", 2, 3),
        "out": MatrixLocation("attn.out_proj"),
        "fc": MatrixLocation("mlp.c_fc"),
        "proj": MatrixLocation("mlp.c_proj"),
    },
    "timm": {
        "q": MatrixLocation("attn.qkv", "weight", 0, 3),
        "k": MatrixLocation("attn.qkv", "weight", 1, 3),
        "v": MatrixLocation("attn.qkv", "weight", 2, 3),
        "out": MatrixLocation("attn.proj"),
        "fc": MatrixLocation("mlp.fc1"),
        "proj": MatrixLocation("mlp.fc2"),
    },
    "hf_bert": {
        "q": MatrixLocation("attention.self.query"),
        "k": MatrixLocation("attention.self.key"),
        "v": MatrixLocation("attention.self.value"),
        "out": MatrixLocation("attention.output.dense"),
        "fc": MatrixLocation("intermediate.dense"),
        "proj": MatrixLocation("output.dense"),
    },
}

# (path of the block list, family), tried in order for each encoder.
BLOCK_LISTS: dict[str, list[tuple[str, str]]] = {
    "visual": [("visual.transformer.resblocks", "open_clip"), ("visual.trunk.blocks", "timm")],
    "text": [
        ("transformer.resblocks", "open_clip"),
        ("text.transformer.resblocks", "open_clip"),
        ("text.transformer.encoder.layer", "hf_bert"),
    ],
}


@dataclass(frozen=True)
class EncoderBlocks:
    encoder: str
    prefix: str  # e.g. "visual.transformer.resblocks"
    family: str
    blocks: list[nn.Module]

    def block_path(self, layer: int) -> str:
        return f"{self.prefix}.{layer}"

    def location(self, kind: str) -> MatrixLocation:
        return BLOCK_LAYOUTS[self.family][kind]


def encoder_blocks(model: nn.Module, encoder: str) -> EncoderBlocks:
    """The transformer blocks of one encoder, with the family that says where their matrices are."""
    if encoder not in ENCODERS:
        raise ConfigError(f"encoder: expected one of {ENCODERS}, got '{encoder}'")
    for prefix, family in BLOCK_LISTS[encoder]:
        try:
            blocks = model.get_submodule(prefix)
        except AttributeError:
            continue
        return EncoderBlocks(encoder, prefix, family, list(blocks))
    raise ConfigError(
        f"{type(model).__name__}: no {encoder} transformer blocks found at "
        f"{[p for p, _ in BLOCK_LISTS[encoder]]}; this backbone family is not supported yet"
    )


def attention_heads(model: nn.Module, encoder: str = "visual") -> int:
    """Number of attention heads per block of an encoder."""
    block = encoder_blocks(model, encoder).blocks[0]
    for name in ("attn.num_heads", "attention.self.num_attention_heads"):
        module_path, _, attr = name.rpartition(".")
        try:
            return int(getattr(block.get_submodule(module_path), attr))
        except AttributeError:
            continue
    raise ConfigError(f"cannot tell the number of attention heads of {encoder} blocks")
