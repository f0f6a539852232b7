"""Exact shortcuts of open_clip's encoders for training: work whose result never reaches the pooled feature is skipped.

On open_clip's CLIP (causal text mask, end-of-text pooling) the text tower stops at the batch's last end-of-text
token (`encode_text_to_last_eot`): the padding after it cannot reach the features, and class prompts are ~10 of 77
positions; and the image tower's last block runs for the class token only (`encode_image_to_class_token`), the one
position its pooling reads. Each comes with the test of whether it is exact for a model (`encoder_shortcuts`); the
results equal open_clip's own up to float rounding (tests/test_performance_paths.py).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


def encode_text_to_last_eot(model: nn.Module, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """open_clip's CLIP.encode_text on the tokens up to the batch's last end-of-text token.

    Under the causal mask no position attends to a later one, and the pooled feature is the end-of-text
    token's, so the padding after it never reaches the output: dropping it gives the same features (to
    rounding) and gradients, for a fraction of the text tower's cost (10 prompt tokens of 77: ~1/8).
    """
    from open_clip.transformer import text_global_pool

    length = int(text.argmax(dim=-1).max()) + 1
    text = text[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), text, "argmax")
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return F.normalize(x, dim=-1) if normalize else x


def trims_text_padding(model: nn.Module) -> bool:
    """Whether `encode_text_to_last_eot` is exact for this model: open_clip's own CLIP.encode_text (the code
    it mirrors), end-of-text pooling by argmax, and a strictly causal attention mask."""
    from open_clip.model import CLIP

    mask = getattr(model, "attn_mask", None)
    if (type(model).encode_text is not CLIP.encode_text or getattr(model, "text_pool_type", None) != "argmax"
            or not isinstance(mask, torch.Tensor) or mask.is_meta or mask.dim() != 2):
        return False
    future = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.isneginf(mask[future]).all() and (mask[~future] == 0).all())


def encode_image_to_class_token(model: nn.Module, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """open_clip's CLIP.encode_image with the last transformer block run for the class token only.

    The pooled feature is the class token's ('tok' pooling), and in the last block the other positions reach it
    only as keys and values of its attention: their queries, attention outputs and MLP never reach the output.
    Same features (to rounding) and gradients, without ~3/4 of the last block's cost (ViT-B/16: 196 of 197
    positions).
    """
    visual = model.visual
    *blocks, last = visual.transformer.resblocks
    x = visual._embeds(image)
    for block in blocks:
        x = block(x)
    normed = last.ln_1(x)
    x = x[:, :1] + last.ls_1(last.attn(normed[:, :1], normed, normed, need_weights=False)[0])
    x = x + last.ls_2(last.mlp(last.ln_2(x)))
    pooled, _ = visual._pool(x)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return F.normalize(pooled, dim=-1) if normalize else pooled


def trims_image_tokens(model: nn.Module) -> bool:
    """Whether `encode_image_to_class_token` is exact for this model: open_clip's own encode_image over its
    VisionTransformer (the code it mirrors), class-token pooling with no attention pooler or token output, and a
    last block of the plain pre-norm kind with batch-first nn.MultiheadAttention."""
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    visual = getattr(model, "visual", None)
    if (type(model).encode_image not in (CLIP.encode_image, CustomTextCLIP.encode_image)
            or type(visual) is not VisionTransformer or visual.attn_pool is not None or visual.pool_type != "tok"
            or visual.output_tokens or not visual.transformer.batch_first or visual.transformer.grad_checkpointing
            or len(visual.transformer.resblocks) == 0):
        return False
    last = visual.transformer.resblocks[-1]
    return (type(last) is ResidualAttentionBlock and not hasattr(last, "ln_1_kv")
            and isinstance(last.attn, nn.MultiheadAttention) and last.attn.batch_first)


# open_clip CLIP methods with an exact shortcut for training: name -> (whether it is exact for a model, shortcut).
ENCODER_SHORTCUTS = {"encode_text": (trims_text_padding, encode_text_to_last_eot),
                     "encode_image": (trims_image_tokens, encode_image_to_class_token)}


def encoder_shortcuts(model: nn.Module) -> dict[str, Callable[..., torch.Tensor]]:
    """The shortcuts of ENCODER_SHORTCUTS that are exact for `model`, by the method each stands in for."""
    return {name: shortcut for name, (exact, shortcut) in ENCODER_SHORTCUTS.items() if exact(model)}
