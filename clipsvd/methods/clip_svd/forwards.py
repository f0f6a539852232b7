"""The forwards of a transformer block's modules whose weights CLIP-SVD decomposed.

The module that owns a decomposed weight (an nn.Linear, or open_clip's nn.MultiheadAttention) gets its forward
replaced by one of these, so that the weight is applied through its SingularValueWeight (factored or recomposed)
instead of a plain parameter. open_clip's nn.MultiheadAttention is replaced by plain scaled-dot-product attention on
the projected q, k, v, so q, k and v never need the fused in_proj weight. An owner of any other type gets the
recomposed weight before each call of its block (`recompose_before_block`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.methods.clip_svd.weight import SingularValueWeight


def _svd_of(host: nn.Module, param: str) -> SingularValueWeight | None:
    svw = getattr(host, f"{param}_svd", None)
    return svw if isinstance(svw, SingularValueWeight) else None


def linear_forward(host: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Replaces the forward of an nn.Linear whose weight is decomposed."""
    svw = host.weight_svd
    out = svw.linear(x, host.bias)
    host.weight = svw.current_weight()
    return out


def attention_forward(attn: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                       attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                       is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Replaces nn.MultiheadAttention.forward where its in_proj or out_proj weight is decomposed.

    Batch-first self-attention without weights or padding mask (how open_clip calls it) runs as plain
    scaled-dot-product attention on q, k, v projected block by block, so the fused in_proj weight is
    never recomposed on the factored path. Anything else recomposes the weights and runs torch's own.
    """
    in_svw, out_svw = _svd_of(attn, "in_proj_weight"), _svd_of(attn.out_proj, "weight")
    plain = (query is key and key is value and query.dim() == 3 and attn.batch_first and not need_weights
             and key_padding_mask is None and attn._qkv_same_embed_dim and attn.bias_k is None
             and not attn.add_zero_attn and (attn_mask is None or attn_mask.dim() == 2))
    if not plain:
        decomposed = [(host, param, svw) for host, param, svw in
                      ((attn, "in_proj_weight", in_svw), (attn.out_proj, "weight", out_svw)) if svw is not None]
        for host, param, svw in decomposed:
            setattr(host, param, svw())
        try:
            return nn.MultiheadAttention.forward(attn, query, key, value, key_padding_mask, need_weights, attn_mask,
                                                 average_attn_weights, is_causal)
        finally:  # a W recomposed with gradients must not outlive the call (its graph; deepcopy refuses it)
            for host, param, svw in decomposed:
                setattr(host, param, svw.current_weight())
    batch, length, width = query.shape
    if in_svw is not None:
        q, k, v = in_svw.project(query, attn.in_proj_bias)
        attn.in_proj_weight = in_svw.current_weight()
    else:
        q, k, v = F.linear(query, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, length, attn.num_heads, attn.head_dim).transpose(1, 2) for t in (q, k, v))
    if attn_mask is not None and attn_mask.dtype == torch.bool:  # nn.MultiheadAttention: True = masked out
        attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
    context = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask.to(q.dtype) if attn_mask is not None else None,
        dropout_p=attn.dropout if attn.training else 0.0, is_causal=is_causal and attn_mask is None)
    if out_svw is not None:  # (B, H, L, d_h) as attention returned it: see FactoredProjection's `heads`
        [out] = out_svw.project(context, attn.out_proj.bias, heads=True)
        attn.out_proj.weight = out_svw.current_weight()
        return out, None
    return attn.out_proj(context.transpose(1, 2).reshape(batch, length, width)), None


def recompose_before_block(block: nn.Module, _inputs) -> None:
    """Forward pre-hook on a transformer block: recompose every decomposed weight inside it.

    Only for owners that are neither nn.Linear nor nn.MultiheadAttention (no known family has one):
    their forward is unknown, so they get the recomposed weight as a plain attribute before each call.
    """
    for host, param_name in block._svd_targets:
        setattr(host, param_name, getattr(host, f"{param_name}_svd")())
