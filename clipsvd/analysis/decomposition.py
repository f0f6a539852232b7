"""Direct contributions of attention heads to the image embedding (TextSpan, Gandelsman et al. 2024).

The residual stream at the pooled (class) token is a sum of terms: the ln_pre output, then per
layer each head's attention output, the out-projection bias and the MLP output. ln_post is
linearised with the image's own mean μ and std σ at that token — a term c with share s of ln_post's
mean and bias becomes γ⊙(c − s·μ)/σ + s·β — then multiplied by proj and divided by the embedding's
norm. The shares add up to 1, so the terms add up to the normalised image embedding exactly (up to
float rounding) whichever LnPostSplit shares them out.

The forward pass is recomputed here, mirroring open_clip's VisionTransformer (batch-first tokens,
no attention mask in the image tower, LayerScale ls_1/ls_2 applied when present, patch dropout
skipped as in eval mode) so per-head outputs are available without materialising attention maps.
timm ViT image towers (BiomedCLIP's) are decomposed the same way: class-token pooling, the
trunk's final norm linearised per image, then the tower's projection head (its bias, if any,
joins the rest term).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.analysis.current_weights import as_module, current_weight
from clipsvd.errors import ConfigError

DEFAULT_LAST_LAYERS = 4


class LnPostSplit(str, Enum):
    """How ln_post's mean μ and bias β (and the out-projection bias) are shared among the residual terms.

    Both conventions sum to the same embedding; they differ in what one head's term carries.
    """

    # clip_text_span's prs_hook.py (PRSLogger._normalize_*): 2L+1 terms — the embedding, L attention
    # layers, L MLPs — each take μ/(2L+1) and β/(2L+1); an attention layer's share is split evenly over
    # its H heads (μ/((2L+1)H) each), and each head also carries 1/H of the layer's out_proj bias.
    OFFICIAL = "official"
    # Every one of K = 1 + L(H+2) terms (embedding; per layer H heads, the out_proj bias, the MLP) takes
    # μ/K and β/K; the out_proj bias is a term of its own, in the rest.
    EVEN = "even"


DEFAULT_LN_POST_SPLIT = LnPostSplit.OFFICIAL


def resolve_ln_post_split(value: str | LnPostSplit) -> LnPostSplit:
    try:
        return LnPostSplit(value)
    except ValueError:
        raise ConfigError(f"ln_post_split: expected one of {[s.value for s in LnPostSplit]}, got '{value}'") from None


@dataclass
class DirectContributions:
    """heads: (N, L, H, D) for `layers`; rest: (N, D) everything else; heads.sum((1, 2)) + rest == embedding.

    With spatial=True, heads is (N, L, T, H, D): one term per source token (class token first) of each head at
    the pooled class-token query, and heads.sum((1, 2, 3)) + rest == embedding. With mlp_terms=True, mlps
    (N, n_blocks, D) holds every block's MLP term (taken out of the rest): what whole-model ablation needs.
    """

    heads: torch.Tensor
    rest: torch.Tensor
    embedding: torch.Tensor  # (N, D), L2-normalised image embedding
    layers: tuple[int, ...]
    ln_post_split: LnPostSplit
    head_shares: tuple[float, ...]  # per layer of `layers`: the share of ln_post's μ and β each head takes
    mlps: torch.Tensor | None = None
    spatial: bool = False
    grid: tuple[int, int] | None = None  # patch grid (rows, columns) of the tokens after the class token

    def to(self, device: str | torch.device) -> "DirectContributions":
        return dataclasses.replace(self, heads=self.heads.to(device), rest=self.rest.to(device),
                                   embedding=self.embedding.to(device),
                                   mlps=None if self.mlps is None else self.mlps.to(device))


def vision_tower(model: Any) -> nn.Module:
    """The open_clip VisionTransformer, refusing towers this decomposition does not mirror faithfully."""
    module = as_module(model)
    visual = getattr(module, "visual", module)
    name = type(visual).__name__
    if name == "TimmModel":
        _check_timm_tower(visual)
        return visual
    if name != "VisionTransformer" or not hasattr(visual, "transformer"):
        raise ConfigError(f"TextSpan decomposition supports open_clip VisionTransformer and timm ViT image towers, "
                          f"not {name}")
    if getattr(visual, "attn_pool", None) is not None:
        raise ConfigError("TextSpan decomposition: attentional pooling (CoCa-style) is not supported")
    if visual.proj is None:
        raise ConfigError("TextSpan decomposition: the image tower has no output projection (pruned head)")
    if visual.pool_type == "avg" and not visual.final_ln_after_pool:
        raise ConfigError("TextSpan decomposition: average pooling after a per-token ln_post cannot be linearised "
                          "per image; supported: class-token pooling, or average pooling with final_ln_after_pool")
    if visual.pool_type not in ("tok", "avg"):
        raise ConfigError(f"TextSpan decomposition: pool_type '{visual.pool_type}' is not supported")
    for i, block in enumerate(visual.transformer.resblocks):
        attn = getattr(block, "attn", None)
        if type(block).__name__ != "ResidualAttentionBlock" or not isinstance(attn, nn.MultiheadAttention):
            raise ConfigError(f"TextSpan decomposition: block {i} is {type(block).__name__}; only open_clip's "
                              "ResidualAttentionBlock with nn.MultiheadAttention is supported")
        if attn.bias_k is not None or attn.add_zero_attn or not attn._qkv_same_embed_dim:
            raise ConfigError(f"TextSpan decomposition: block {i} uses an unusual MultiheadAttention setup")
        if hasattr(block, "ln_1_kv"):
            raise ConfigError(f"TextSpan decomposition: block {i} is a cross-attention block")
        if list(dict(block.mlp.named_children())) != ["c_fc", "gelu", "c_proj"]:
            raise ConfigError(f"TextSpan decomposition: block {i} has an MLP other than c_fc → gelu → c_proj")
    return visual


def _check_timm_tower(visual: nn.Module) -> None:
    """Refuse timm towers whose forward this decomposition does not mirror (pooling, extra norms, gates)."""
    trunk = visual.trunk
    if type(trunk).__name__ != "VisionTransformer" or not hasattr(trunk, "blocks"):
        raise ConfigError(f"TextSpan decomposition: timm trunk {type(trunk).__name__} is not a ViT")
    if getattr(trunk, "global_pool", None) != "token" or getattr(trunk, "attn_pool", None) is not None:
        raise ConfigError(f"TextSpan decomposition: timm pooling '{getattr(trunk, 'global_pool', None)}' is not "
                          "supported; supported: class-token pooling ('token')")
    for part in ("fc_norm", "head"):
        if not isinstance(getattr(trunk, part, nn.Identity()), nn.Identity):
            raise ConfigError(f"TextSpan decomposition: the timm trunk has a {part} layer; not supported")
    if not isinstance(trunk.norm, nn.LayerNorm):
        raise ConfigError("TextSpan decomposition: the timm trunk's final norm is not a LayerNorm")
    head = dict(visual.head.named_children())
    if not isinstance(head.get("proj"), nn.Linear) or set(head) - {"drop", "proj"}:
        raise ConfigError(f"TextSpan decomposition: projection head {list(head)} is not supported (expected a "
                          "linear 'proj')")
    for i, block in enumerate(trunk.blocks):
        attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
        plain = all(isinstance(getattr(attn, n, nn.Identity()), nn.Identity) for n in ("q_norm", "k_norm", "norm"))
        if type(block).__name__ != "Block" or not plain or getattr(attn, "gate", None) is not None:
            raise ConfigError(f"TextSpan decomposition: timm block {i} ({type(block).__name__}) is not a plain ViT block")
        if not (hasattr(mlp, "fc1") and hasattr(mlp, "fc2")) or not isinstance(getattr(mlp, "norm", nn.Identity()),
                                                                                 nn.Identity):
            raise ConfigError(f"TextSpan decomposition: timm block {i} has an MLP other than fc1 → act → fc2")


def tower_blocks(visual: nn.Module) -> list[nn.Module]:
    """The transformer blocks of an image tower vision_tower accepted."""
    return list(visual.trunk.blocks) if hasattr(visual, "trunk") else list(visual.transformer.resblocks)


def resolve_layers(n_layers: int, layers: Sequence[int] | None) -> tuple[int, ...]:
    """Layer indices (negatives count from the end); default: the last four, where TextSpan finds most effect."""
    if layers is None:
        return tuple(range(max(0, n_layers - DEFAULT_LAST_LAYERS), n_layers))
    resolved = []
    for layer in layers:
        index = layer + n_layers if layer < 0 else layer
        if not 0 <= index < n_layers:
            raise ConfigError(f"layers: {layer} is outside 0..{n_layers - 1}")
        if index not in resolved:
            resolved.append(index)
    return tuple(sorted(resolved))


def _embeds(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """open_clip's VisionTransformer._embeds without patch dropout (identity in eval mode)."""
    stem = visual.conv1
    if isinstance(stem, nn.Conv2d):  # read the weight through current_weight: a method may factorise it
        x = F.conv2d(images, current_weight(stem, "weight"), stem.bias, stride=stem.stride)
    else:  # a convolutional stem (the world CLIP): no method touches it
        x = stem(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(x)


def _pool(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled token of (N, T, ...) tensors: class token, or the mean of the patch tokens."""
    return x[:, 0] if visual.pool_type == "tok" else x[:, 1:].mean(dim=1)


def _attention(
    block: nn.Module, x: torch.Tensor, pooled: Callable[[torch.Tensor], torch.Tensor], spatial: bool = False,
    class_query_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention output for every token (N, T, W) before ls_1, per-head output at the pooled token (N, H, W)).

    Head h at the pooled query: Σ_t softmax(q·k_t/√d_h) (x_t W_V^h + b_V^h) W_O^h, i.e. the head's
    slice of the attention context times its columns of W_O; the out_proj bias is left out. With
    `spatial` (class-token query only) the sum over source tokens t is kept apart: (N, T, H, W).
    class_query_only: only the class token queries (the last block of a class-token-pooled tower, whose other
    outputs nothing reads): the output is (N, 1, W), and the out-projection runs on one token instead of T.
    """
    attn = block.attn
    if hasattr(attn, "qkv"):  # timm
        w_in, b_in, out = current_weight(attn.qkv, "weight"), attn.qkv.bias, attn.proj
        x = block.norm1(x)
    else:
        w_in, b_in, out = current_weight(attn, "in_proj_weight"), attn.in_proj_bias, attn.out_proj
        x = block.ln_1(x)
    n, t, width = x.shape
    heads = attn.num_heads
    w_out = current_weight(out, "weight")

    def split_heads(part: torch.Tensor) -> torch.Tensor:  # (N, T, W) -> (N, H, T, d_h)
        return part.reshape(n, part.shape[1], heads, width // heads).transpose(1, 2)

    if class_query_only:  # keys and values of every token, the query of the class token alone
        b_q, b_kv = (None, None) if b_in is None else (b_in[:width], b_in[width:])
        q = split_heads(F.linear(x[:, :1], w_in[:width], b_q))
        k, v = map(split_heads, F.linear(x, w_in[width:], b_kv).split(width, dim=-1))
    else:
        q, k, v = map(split_heads, F.linear(x, w_in, b_in).split(width, dim=-1))
    context = F.scaled_dot_product_attention(q, k, v)  # (N, H, T or 1, d_h); no mask, no dropout
    out = F.linear(context.transpose(1, 2).reshape(n, q.shape[2], width), w_out, out.bias)
    w_heads = w_out.reshape(width, heads, width // heads)
    if spatial:  # clip_text_span's prs_hook spatial mode: a_{h,t} · v_t^h · W_O^h at the class-token query
        scores = (q[:, :, :1] @ k.transpose(-1, -2)) * (width // heads) ** -0.5  # (N, H, 1, T)
        weights = scores.softmax(dim=-1)[:, :, 0]  # (N, H, T)
        per_token = torch.einsum("nht,nhtd,whd->nthw", weights, v, w_heads)
        return out, per_token
    head_context = pooled(context.transpose(1, 2))  # (N, H, d_h)
    per_head = torch.einsum("nhd,whd->nhw", head_context, w_heads)
    return out, per_head


def _mlp(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    mlp = block.mlp
    if hasattr(mlp, "fc1"):  # timm: fc1 → act → fc2 (dropouts and the identity norm skipped)
        hidden = mlp.act(F.linear(x, current_weight(mlp.fc1, "weight"), mlp.fc1.bias))
        return F.linear(hidden, current_weight(mlp.fc2, "weight"), mlp.fc2.bias)
    hidden = mlp.gelu(F.linear(x, current_weight(mlp.c_fc, "weight"), mlp.c_fc.bias))
    return F.linear(hidden, current_weight(mlp.c_proj, "weight"), mlp.c_proj.bias)


def _timm_embeds(trunk: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """timm's own embedding steps (patches, class token, positions), patch dropout skipped as in eval mode."""
    return trunk.norm_pre(trunk._pos_embed(trunk.patch_embed(images)))


@dataclass
class _TowerParts:
    """What the decomposition needs of an image tower, whichever family it is."""

    embeds: Callable[[torch.Tensor], torch.Tensor]
    blocks: list[nn.Module]
    pooled: Callable[[torch.Tensor], torch.Tensor]
    final_norm: nn.LayerNorm
    proj: torch.Tensor  # (width, embed)
    proj_bias: torch.Tensor | None
    ls: tuple[str, str]  # names of the LayerScale modules after attention and MLP
    class_pooled: bool  # the embedding reads the class token alone


def _tower_parts(visual: nn.Module) -> _TowerParts:
    if hasattr(visual, "trunk"):
        trunk, linear = visual.trunk, visual.head.proj
        return _TowerParts(lambda images: _timm_embeds(trunk, images), list(trunk.blocks), lambda x: x[:, 0],
                           trunk.norm, current_weight(linear, "weight").t(), linear.bias, ("ls1", "ls2"), True)
    return _TowerParts(lambda images: _embeds(visual, images), list(visual.transformer.resblocks),
                       lambda x: _pool(visual, x), visual.ln_post, visual.proj, None, ("ls_1", "ls_2"),
                       visual.pool_type == "tok")


def head_shares(heads_per_layer: Sequence[int], layers: Sequence[int], split: LnPostSplit) -> tuple[float, ...]:
    """The share of ln_post's μ and β each head of `layers` takes, per layer, under `split`."""
    if split is LnPostSplit.OFFICIAL:
        spatial_terms = 2 * len(heads_per_layer) + 1
        return tuple(1.0 / (spatial_terms * heads_per_layer[i]) for i in layers)
    n_terms = 1 + sum(h + 2 for h in heads_per_layer)
    return tuple(1.0 / n_terms for _ in layers)


# Spatial terms are computed this many bytes of (images × layers × tokens × heads × width) at a time; the
# ln_post linearisation makes about four temporary copies of it (256 MiB gave a 2.1 GiB peak on 64 ViT-B/16 images).
SPATIAL_CHUNK_BYTES = 64 * 2 ** 20


def check_spatial(model: Any) -> tuple[int, int]:
    """The patch grid (rows, columns) of a tower whose per-token terms exist; refuses others by name, cheaply.

    Per-token terms need the class token as the only query the embedding reads: attention-pooled (CoCa) or
    average-pooled towers read every token and have no per-token split.
    """
    visual = vision_tower(model)  # refuses attentional pooling by name
    if hasattr(visual, "trunk"):
        return tuple(int(g) for g in visual.trunk.patch_embed.grid_size)  # type: ignore[return-value]
    if visual.pool_type != "tok":
        raise ConfigError(f"spatial terms: the image tower pools by '{visual.pool_type}', not by the class token; "
                          "per-token terms exist only for class-token pooling")
    tokens = visual.positional_embedding.shape[0] - 1
    grid = tuple(int(g) for g in getattr(visual, "grid_size", (0, 0)))
    if grid[0] * grid[1] != tokens:  # a replaced stem (the world CLIP's): square grids only
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ConfigError(f"spatial terms: {tokens} patch tokens do not form a known grid")
        grid = (side, side)
    return grid  # type: ignore[return-value]


@torch.no_grad()
def direct_contributions(
    model: Any, images: torch.Tensor, layers: Sequence[int] | None = None,
    ln_post_split: str | LnPostSplit = DEFAULT_LN_POST_SPLIT, spatial: bool = False, mlp_terms: bool = False,
) -> DirectContributions:
    """Split the normalised image embeddings of `images` into per-head terms (chosen layers) and the rest.

    spatial: per-token terms (N, L, T, H, D), class token first; each token carries 1/T of its head's share
    of ln_post's μ and β and 1/(T·H) of the out-projection bias (official split), so summing over tokens gives
    the per-head terms. Computed in chunks of images so the transient width-sized tensors stay under
    SPATIAL_CHUNK_BYTES; the result itself is N·L·T·H·D floats (pass fewer layers or images to shrink it).
    mlp_terms: also return every block's MLP term. Runs on the model's device; returns tensors there (float32).
    """
    split = resolve_ln_post_split(ln_post_split)
    visual = vision_tower(model)
    grid = check_spatial(model) if spatial else None
    if not spatial:
        return _direct_contributions(visual, images, layers, split, False, mlp_terms)
    parts = _tower_parts(visual)
    chosen = resolve_layers(len(parts.blocks), layers)
    attn = parts.blocks[0].attn
    tokens = grid[0] * grid[1] + 1
    per_image = len(chosen) * tokens * attn.num_heads * attn.num_heads * attn.head_dim * 4
    chunk = max(1, SPATIAL_CHUNK_BYTES // max(1, per_image))
    out: DirectContributions | None = None
    for start in range(0, len(images), chunk):
        piece = _direct_contributions(visual, images[start:start + chunk], chosen, split, True, mlp_terms)
        if out is None:  # preallocate once: no concatenation copy of the (large) result
            n = len(images)
            out = dataclasses.replace(
                piece, heads=piece.heads.new_empty((n, *piece.heads.shape[1:])),
                rest=piece.rest.new_empty((n, *piece.rest.shape[1:])),
                embedding=piece.embedding.new_empty((n, *piece.embedding.shape[1:])),
                mlps=None if piece.mlps is None else piece.mlps.new_empty((n, *piece.mlps.shape[1:])), grid=grid)
        stop = start + len(piece.rest)
        out.heads[start:stop], out.rest[start:stop], out.embedding[start:stop] = piece.heads, piece.rest, piece.embedding
        if piece.mlps is not None:
            out.mlps[start:stop] = piece.mlps
        del piece
    if out is None:
        raise ConfigError("spatial terms: no images were given")
    return out


def _direct_contributions(visual: nn.Module, images: torch.Tensor, layers: Sequence[int] | None,
                          split: LnPostSplit, spatial: bool, mlp_terms: bool) -> DirectContributions:
    parts = _tower_parts(visual)
    blocks = parts.blocks
    chosen = resolve_layers(len(blocks), layers)
    device, dtype = parts.proj.device, parts.proj.dtype
    x = parts.embeds(images.to(device, dtype))
    pooled = parts.pooled

    rest = pooled(x).float()  # ln_pre term
    head_terms, mlp_raw = [], []
    for index, block in enumerate(blocks):
        heads = block.attn.num_heads
        # The last block of a class-token-pooled tower: only the class token's output is read, so its
        # out-projection and MLP run on that token alone (a plain forward pass runs them on every token).
        last = parts.class_pooled and index == len(blocks) - 1
        attn_out, per_head = _attention(block, x, pooled, spatial and index in chosen, class_query_only=last)
        if last:
            x = x[:, :1]
        ls_1, ls_2 = getattr(block, parts.ls[0]), getattr(block, parts.ls[1])
        attn_out = ls_1(attn_out)
        if index in chosen:
            bias = (block.attn.proj if hasattr(block.attn, "proj") else block.attn.out_proj).bias
            share = heads * (per_head.shape[1] if spatial else 1)  # each head (token) carries 1/H (1/(T·H))
            if bias is not None and split is LnPostSplit.OFFICIAL:
                per_head = per_head + bias.to(dtype) / share
            elif bias is not None:
                rest = rest + ls_1(bias.expand_as(rest).to(dtype)).float()
            head_terms.append(ls_1(per_head).float())
        else:
            rest = rest + pooled(attn_out).float()
        x = x + attn_out
        mlp_out = ls_2(_mlp(block, (block.norm2 if hasattr(block, "norm2") else block.ln_2)(x)))
        if mlp_terms:
            mlp_raw.append(pooled(mlp_out).float())
        else:
            rest = rest + pooled(mlp_out).float()
        x = x + mlp_out

    heads_raw = torch.stack(head_terms, dim=1)  # (N, L, H, W), or (N, L, T, H, W) when spatial
    residual = pooled(x).float()
    ln = parts.final_norm
    mean = residual.mean(dim=-1)
    std = (residual.var(dim=-1, unbiased=False) + ln.eps).sqrt()
    gamma = ln.weight.float() if ln.weight is not None else torch.ones_like(residual[0])
    beta = ln.bias.float() if ln.bias is not None else torch.zeros_like(residual[0])
    proj = parts.proj.float()
    proj_bias = parts.proj_bias.float() if parts.proj_bias is not None else torch.zeros_like(proj[0])

    def linearised(c: torch.Tensor, share: torch.Tensor | float, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
        """ln_post for a term with `share` of its mean and bias: γ⊙(c − share·μ)/σ + share·β, then proj."""
        return (gamma * (c - mu * share) / sd + beta * share) @ proj

    n_heads = [block.attn.num_heads for block in blocks]
    shares = head_shares(n_heads, chosen, split)
    mlp_share = mlp_term_share(n_heads, split)
    rest_share = 1.0 - sum(share * blocks[i].attn.num_heads for share, i in zip(shares, chosen))
    rest_share -= mlp_share * len(blocks) if mlp_terms else 0.0
    tokens = heads_raw.shape[2] if spatial else 1
    ones = (1,) * (heads_raw.ndim - 1)  # broadcast a per-image value over (L, [T,] H, W)
    per_head_share = torch.tensor(shares, device=device).view(1, -1, *ones[1:]) / tokens
    heads_out = linearised(heads_raw, per_head_share, mean.view(-1, *ones), std.view(-1, *ones))
    rest_out = linearised(rest, rest_share, mean[:, None], std[:, None]) + proj_bias
    embedding = (gamma * (residual - mean[:, None]) / std[:, None] + beta) @ proj + proj_bias
    norm = embedding.norm(dim=-1, keepdim=True)
    mlps = None
    if mlp_terms:
        mlps = linearised(torch.stack(mlp_raw, dim=1), mlp_share, mean[:, None, None], std[:, None, None])
        mlps = mlps / norm[:, :, None]
    return DirectContributions(
        heads=heads_out / norm.view(-1, *ones),
        rest=rest_out / norm,
        embedding=embedding / norm,
        layers=chosen,
        ln_post_split=split,
        head_shares=shares,
        mlps=mlps,
        spatial=spatial,
    )


def mlp_term_share(heads_per_layer: Sequence[int], split: LnPostSplit) -> float:
    """The share of ln_post's μ and β one MLP term takes under `split` (official: 1/(2L+1); even: 1/K)."""
    if split is LnPostSplit.OFFICIAL:
        return 1.0 / (2 * len(heads_per_layer) + 1)
    return 1.0 / (1 + sum(h + 2 for h in heads_per_layer))
