"""CLIP-SVD (arXiv 2509.03740): train only the singular values of every attention and MLP matrix.

Each selected matrix is decomposed once, W = U·diag(σ)·Vᵀ (thin SVD), with U and V frozen and
σ trainable, initialised to σ₀ so the attached model equals the pretrained one. The factors of a
given set of weights are cached on disk (clipsvd.methods.svd_cache), so only the first attach of
a model pays for the SVDs; it reports progress and honours cancel between matrices. `merge()`
writes the trained W back as a plain parameter.

How a decomposed matrix is applied (the speed of a training step; benchmarks/bench_clip_svd_step.py):
the module that owns the weight (an nn.Linear, or open_clip's nn.MultiheadAttention) gets its
forward replaced, and each call picks the cheaper of two exact forms by counting multiply-adds for
its shape and the number of tokens it sees (`training_costs`):
  * factored, x·Vᵀ·diag(σ)·Uᵀ per token: no weight gradient is ever formed, since U and V are frozen;
    cheaper for the thin MLP matrices at any token count, and for square ones below ~2·d tokens. Its
    gradients are written by hand (FactoredProjection) with σ folded into the small matrices; with
    `lean_memory` it keeps x instead of x·Vᵀ where that is smaller, trading a matmul for memory;
  * recomposed, x·(U·diag(σ)·Vᵀ)ᵀ: one d³ recomposition and a d³ projection of dW, then matmuls with
    one weight instead of two; cheaper for square matrices over many tokens (ViT-B/16, batch 32).
Without gradients (evaluation) W is recomposed once per change of σ and reused. open_clip's
nn.MultiheadAttention is replaced by plain scaled-dot-product attention on the projected q, k, v, so
q, k and v never need the fused in_proj weight. On open_clip's CLIP (causal text mask, end-of-text
pooling) the text tower also stops at the batch's last end-of-text token (`encode_text_to_last_eot`):
the padding after it cannot reach the features, and class prompts are ~10 of 77 positions; and the
image tower's last block runs for the class token only (`encode_image_to_class_token`), the one
position its pooling reads. These changes are exact up to float rounding (tests/test_performance_paths.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.methods import svd_cache
from clipsvd.methods.base import AttachCancelled, Method, MethodConfig
from clipsvd.methods.registry import register_method
from clipsvd.models.layout import ENCODERS, MATRIX_KINDS, encoder_blocks

Path = Literal["auto", "factored", "recomposed"]
PATHS: tuple[str, ...] = ("auto", "factored", "recomposed")


def training_costs(rows: int, cols: int, rank: int, tokens: int, input_grad: bool) -> tuple[int, int]:
    """Multiply-adds of one forward+backward of a (rows × cols) block of rank `rank` over `tokens` rows of x,
    as (factored, recomposed). Gradients: σ always, x only when `input_grad` (not below the first trained layer).

    factored:   x·Vᵀ (T·n·r), ·diag(σ)·Uᵀ (T·r·m); backward g = dy·U (T·m·r), dσ = Σ_t g⊙(x·Vᵀ) (T·r),
                dx = (g·diag(σ))·V (T·r·n).
    recomposed: W = U·diag(σ)·Vᵀ (m·r·n), x·Wᵀ (T·m·n); backward dW = dyᵀ·x (T·m·n),
                dσ = diag(Uᵀ·dW·V) (m·n·r), dx = dy·W (T·m·n).
    """
    m, n, r, t = rows, cols, rank, tokens
    factored = t * r * (n + m) + t * m * r + (t * r * n if input_grad else 0)
    recomposed = 2 * m * r * n + 2 * t * m * n + (t * m * n if input_grad else 0)
    return factored, recomposed


class FactoredProjection(torch.autograd.Function):
    """y_b = x·V_bᵀ·diag(σ_b)·U_bᵀ + b_b for the row blocks b of one weight (fused q/k/v share x), by hand.

    Autograd on that expression spends part of a step in element-wise passes over the T × R hidden tensor
    (h·σ forward, g·σ backward, chunk/cat of fused blocks). Here σ is folded into the small matrices instead,
    y_b = h_b·(U_b·diag(σ_b))ᵀ and dx = Σ_b (dy_b·U_b)·(diag(σ_b)·V_bᵀ), so the one pass over the tokens left is
    dσ = Σ_t g ⊙ h. Backward needs h = x·Vᵀ: it is saved, or with `recompute` recomputed from x (less memory
    where x is smaller than h, as for fused q/k/v, or kept anyway by another op; one more x·Vᵀ of time).
    `heads`: x is attention's (B, H, L, d_h) output, merged to (B, L, H·d_h) here, so that the x kept is the
    tensor scaled-dot-product attention keeps for its own backward.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x: torch.Tensor, vh: torch.Tensor, sigma: torch.Tensor, bias: torch.Tensor | None,
                recompute: bool, heads: bool, *us: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if recompute and torch.is_autocast_enabled(x.device.type):  # keep the half-precision x the matmul uses,
            x = x.to(torch.get_autocast_dtype(x.device.type))  # not the float32 LayerNorm output (twice the bytes)
        merged = x.transpose(1, 2).flatten(2) if heads else x
        hidden = F.linear(merged, vh)
        ctx.save_for_backward(x if recompute else hidden, vh, sigma, *us)
        ctx.recompute, ctx.heads, ctx.x_shape, ctx.hidden_dtype = recompute, heads, x.shape, hidden.dtype
        biases = bias.chunk(len(us)) if bias is not None else [None] * len(us)
        return tuple(F.linear(h, u * s, b) for h, u, s, b in
                     zip(hidden.chunk(len(us), dim=-1), us, sigma.chunk(len(us)), biases))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads: torch.Tensor | None):
        saved, vh, sigma, *us = ctx.saved_tensors
        if ctx.recompute:  # in forward's precision (autocast's, which backward on CPU does not re-enter)
            merged = saved.transpose(1, 2).flatten(2) if ctx.heads else saved
            saved = F.linear(merged.to(ctx.hidden_dtype), vh.to(ctx.hidden_dtype))
        dtype = saved.dtype  # under autocast: the autocast dtype, as in forward
        hidden = saved.reshape(-1, saved.shape[-1]).chunk(len(us), dim=-1)
        grad_x = None
        sigma_grads, bias_grads = [], []
        for grad, h, u, s, v in zip(grads, hidden, us, sigma.chunk(len(us)), vh.chunk(len(us))):
            if grad is None:  # an output nobody used
                grad = h.new_zeros(h.shape[0], u.shape[0])
            grad = grad.reshape(-1, grad.shape[-1]).to(dtype)
            if ctx.needs_input_grad[3]:
                bias_grads.append(grad.sum(0))
            g = grad @ u.to(dtype)  # T × r
            if ctx.needs_input_grad[0]:
                scaled = (v * s[:, None]).to(dtype)
                grad_x = g @ scaled if grad_x is None else grad_x.addmm_(g, scaled)
            # dσ accumulated in σ's precision, as autograd's h·σ (promoted to σ's dtype) would
            sigma_grads.append((g.mul_(h) if dtype == sigma.dtype else g.to(sigma.dtype) * h.to(sigma.dtype)).sum(0))
        if grad_x is not None and ctx.heads:  # back to (B, H, L, d_h)
            batch, heads, length, head_dim = ctx.x_shape
            grad_x = grad_x.reshape(batch, length, heads, head_dim).transpose(1, 2)
        elif grad_x is not None:
            grad_x = grad_x.reshape(ctx.x_shape)
        return (grad_x, None, torch.cat(sigma_grads) if ctx.needs_input_grad[2] else None,
                torch.cat(bias_grads) if ctx.needs_input_grad[3] else None, None, None) + (None,) * len(us)


class SingularValueWeight(nn.Module):
    """A (possibly fused) weight whose row blocks are U_b·diag(σ_b)·V_bᵀ with only σ_b trainable.

    Fused weights (q/k/v in one in_proj) are split in `row_blocks` equal row blocks; blocks whose
    kind is not selected stay as frozen copies. Calling the module gives the recomposed weight;
    `project`/`linear` apply it to inputs along the cheaper path (see the module docstring).
    """

    def __init__(self, weight: torch.Tensor, block_kinds: list[str], decompose: set[str],
                 factors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        self.block_kinds = list(block_kinds)
        self.sigma = nn.ParameterDict()
        self.path: Path = "auto"  # "factored"/"recomposed" force one form (tests, benchmarks)
        self.lean_memory = False  # CLIPSVDConfig.lean_memory (see `recomputes`)
        self._cache: tuple[tuple, torch.Tensor] | None = None
        # q, k, v of a fused in_proj all decomposed: their Vᵀ live in one buffer, so x·[V_q V_k V_v] is one
        # matmul (~10% faster than three) without a per-call concatenation that backward would keep alive.
        fused = len(block_kinds) > 1 and set(block_kinds) <= set(decompose)
        fused_vh = []
        for kind, block in zip(block_kinds, weight.detach().chunk(len(block_kinds), dim=0)):
            if kind in decompose:
                if factors is not None and kind in factors:  # from the on-disk cache
                    u, s, vh = (t.to(weight.device) for t in factors[kind])
                else:
                    u, s, vh = torch.linalg.svd(block.double(), full_matrices=False)
                dtype = weight.dtype
                self.register_buffer(f"U_{kind}", u.to(dtype).contiguous())
                if fused:
                    fused_vh.append(vh.to(dtype))
                else:
                    self.register_buffer(f"Vh_{kind}", vh.to(dtype).contiguous())
                self.register_buffer(f"sigma0_{kind}", s.to(dtype).clone())
                self.sigma[kind] = nn.Parameter(s.to(dtype).clone())
            else:
                self.register_buffer(f"frozen_{kind}", block.clone())
        if fused:
            self.register_buffer("Vh", torch.cat(fused_vh).contiguous())

    def u(self, kind: str) -> torch.Tensor:
        return getattr(self, f"U_{kind}")

    def vh(self, kind: str) -> torch.Tensor:
        """Vᵀ of one decomposed block (a row slice of the shared buffer for fused q/k/v)."""
        if "Vh" not in self._buffers:
            return getattr(self, f"Vh_{kind}")
        return self.Vh.chunk(len(self.block_kinds))[self.block_kinds.index(kind)]

    def forward(self) -> torch.Tensor:
        """The recomposed weight (differentiable in σ when gradients are on)."""
        if not self._needs_sigma_grad():  # evaluation: recompose once per change of σ, not once per batch
            # .to(device/dtype) and deepcopy keep or restart _version, so the key also names σ's storage,
            # device and precision.
            versions = tuple((sigma._version, sigma.data_ptr(), sigma.device, sigma.dtype)
                             for sigma in self.sigma.values())
            if self._cache is None or self._cache[0] != versions:
                # in σ's precision whatever autocast is on: a later float32 forward and merge() read this W
                with torch.autocast(versions[0][2].type, enabled=False):
                    self._cache = (versions, self._recompose())
            return self._cache[1]
        self._cache = None
        return self._recompose()

    def _needs_sigma_grad(self) -> bool:
        return torch.is_grad_enabled() and any(sigma.requires_grad for sigma in self.sigma.values())

    def _recompose(self) -> torch.Tensor:
        parts = []
        for kind in self.block_kinds:
            if kind in self.sigma:
                parts.append((self.u(kind) * self.sigma[kind]) @ self.vh(kind))
            else:
                parts.append(getattr(self, f"frozen_{kind}"))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def current_weight(self) -> torch.Tensor:
        """What the owner's plain attribute should hold: the cached W in evaluation, else an empty tensor of
        W's dtype and device (training never keeps a W copy alive; read the live W by calling the module)."""
        if self._cache is not None:
            return self._cache[1]
        sigma = next(iter(self.sigma.values()))
        return sigma.detach().new_empty(0)

    def uses_factored(self, x: torch.Tensor) -> bool:
        """Whether a training call on x takes the factored form: forced by `path`, else the fewer multiply-adds."""
        if self.path != "auto":
            return self.path == "factored"
        factored = recomposed = 0
        for kind in self.sigma:
            (rows, rank), cols = self.u(kind).shape, self.vh(kind).shape[1]
            f, r = training_costs(rows, cols, rank, x.numel() // cols, x.requires_grad)
            factored, recomposed = factored + f, recomposed + r
        return factored < recomposed

    def project(self, x: torch.Tensor, bias: torch.Tensor | None = None, heads: bool = False) -> list[torch.Tensor]:
        """x·W_bᵀ + b_b for each row block b (q, k, v of a fused in_proj come out separately).

        `heads`: x is attention's (B, H, L, d_h) output, whose heads are merged here (FactoredProjection)."""
        biases = bias.chunk(len(self.block_kinds)) if bias is not None else [None] * len(self.block_kinds)
        if not (self._needs_sigma_grad() and self.uses_factored(x)):
            merged = x.transpose(1, 2).flatten(2) if heads else x
            return list(F.linear(merged, self(), bias).chunk(len(self.block_kinds), dim=-1))
        self._cache = None
        kinds = self.block_kinds
        if "Vh" in self._buffers:  # every block decomposed, their Vᵀ stacked
            sigma = torch.cat([self.sigma[k] for k in kinds])
            return list(FactoredProjection.apply(x, self.Vh, sigma, bias, self.recomputes(self.Vh, heads), heads,
                                                 *(self.u(k) for k in kinds)))
        if heads and len(kinds) > 1:  # (not a layout any family has: out_proj is one block)
            x, heads = x.transpose(1, 2).flatten(2), False
        return [FactoredProjection.apply(x, self.vh(kind), self.sigma[kind], b, self.recomputes(self.vh(kind), heads),
                                         heads, self.u(kind))[0]
                if kind in self.sigma else F.linear(x, getattr(self, f"frozen_{kind}"), b)
                for kind, b in zip(kinds, biases)]

    def recomputes(self, vh: torch.Tensor, heads: bool) -> bool:
        """With lean_memory, whether backward recomputes h = x·Vᵀ instead of keeping it: where x is smaller than
        h (fused q/k/v: n < 3n) or kept by attention anyway (`heads`)."""
        return self.lean_memory and (heads or vh.shape[1] < vh.shape[0])

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """F.linear(x, W, bias) for the whole (fused) weight."""
        outputs = self.project(x, bias)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)

    def decomposed_sizes(self) -> int:
        """Values stored for U, V and σ of the decomposed blocks (the paper's parameter denominator)."""
        return sum(
            self.u(k).numel() + self.vh(k).numel() + self.sigma[k].numel()
            for k in self.sigma
        )

    def original_sizes(self) -> int:
        return sum(self.u(k).shape[0] * self.vh(k).shape[1] for k in self.sigma)


def _same_weight(a, b) -> bool:
    return (a.module, a.param) == (b.module, b.param)


def _svd_of(host: nn.Module, param: str) -> SingularValueWeight | None:
    svw = getattr(host, f"{param}_svd", None)
    return svw if isinstance(svw, SingularValueWeight) else None


def _linear_forward(host: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """Replaces the forward of an nn.Linear whose weight is decomposed."""
    svw = host.weight_svd
    out = svw.linear(x, host.bias)
    host.weight = svw.current_weight()
    return out


def _attention_forward(attn: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
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


def _recompose(block: nn.Module, _inputs) -> None:
    """Forward pre-hook on a transformer block: recompose every decomposed weight inside it.

    Only for owners that are neither nn.Linear nor nn.MultiheadAttention (no known family has one):
    their forward is unknown, so they get the recomposed weight as a plain attribute before each call.
    """
    for host, param_name in block._svd_targets:
        setattr(host, param_name, getattr(host, f"{param_name}_svd")())


@dataclass
class CLIPSVDConfig(MethodConfig):
    lr: float = 5e-4
    epochs: int = 10
    weight_decay: float = 0.01
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS), metadata={
        "help": "which towers train: visual (image encoder), text (text encoder)"})
    layers: list[int] | None = field(default=None, metadata={
        "help": "transformer blocks that train, counted from 0; empty: every block"})
    matrix_kinds: list[str] = field(default_factory=lambda: list(MATRIX_KINDS), metadata={
        "help": "matrices whose σ train: q, k, v (attention query/key/value projections), out (attention output "
                "projection), fc (MLP expansion), proj (MLP contraction)"})
    module_paths: list[str] | None = field(default=None, metadata={
        "help": "explicit weights to decompose, overriding the three selectors above, e.g. "
                "visual.transformer.resblocks.11.attn.v; empty: use the selectors"})
    lean_memory: bool = field(default=False, metadata={
        "help": "keep less for backward: recompute x·Vᵀ of fused q/k/v and of the attention output in backward "
                "instead of storing it; same results, 18% less step memory for 7-17% more step time (ViT-B/32, "
                "batch 16, CPU; no effect where attention takes the recomposed form, e.g. ViT-B/16 batch 32: "
                "benchmarks/bench_clip_svd_step.py)"})

    def validate(self) -> None:
        super().validate()
        for encoder in self.encoders:
            if encoder not in ENCODERS:
                raise ConfigError(f"encoders: '{encoder}' is not one of {ENCODERS}")
        for kind in self.matrix_kinds:
            if kind not in MATRIX_KINDS:
                raise ConfigError(f"matrix_kinds: '{kind}' is not one of {MATRIX_KINDS}")


@register_method
class CLIPSVD(Method):
    name = "clip-svd"
    display_name = "CLIP-SVD"
    summary = "Singular values of q/k/v/out/MLP matrices in both encoders; U and V frozen."
    Config = CLIPSVDConfig
    trains_text_encoder = True

    def setup(self, loaded, class_prompts) -> None:
        # Modules whose method CLIP-SVD replaced (its name) or hooked (a block's pre-hook), for merge().
        self.hooked_blocks: list[tuple[nn.Module, str | torch.utils.hooks.RemovableHandle]] = []
        self.decomposed: list[tuple[nn.Module, str]] = []  # (owner, parameter name) of every decomposed weight
        targets = self._targets(loaded.model)
        weights = {f"{m}.{p}": (getattr(loaded.model.get_submodule(m), p), kinds, selected)
                   for _, m, p, kinds, selected in targets}
        key = svd_cache.fingerprint(weights)
        cached = svd_cache.load(key)
        computed: dict[str, torch.Tensor] = {}
        for index, (block_path, module_path, param, kinds, selected) in enumerate(targets):
            if self.attach_cancel is not None and self.attach_cancel.is_set():
                raise AttachCancelled(f"clip-svd: cancelled while decomposing ({index}/{len(targets)} weights)")
            if cached is None:
                self.attach_progress(index, len(targets), f"decomposing {module_path}.{param} "
                                                          f"({index + 1}/{len(targets)}; cached for later runs)")
            name = f"{module_path}.{param}"
            factors = None
            if cached is not None and all(f"{name}.{k}.{t}" in cached for k in selected for t in "USV"):
                factors = {k: tuple(cached[f"{name}.{k}.{t}"] for t in "USV") for k in selected}
            host = loaded.model.get_submodule(module_path)
            try:
                svw = SingularValueWeight(getattr(host, param), kinds, selected, factors)
            except torch.linalg.LinAlgError as exc:  # NaN/Inf or a matrix LAPACK cannot decompose
                raise CheckpointError(f"CLIP-SVD cannot decompose {name} ({', '.join(sorted(selected))}) of "
                                      f"{loaded.label}: {str(exc).strip().splitlines()[0]}; the model's weights are "
                                      "not usable for CLIP-SVD") from None
            for kind in svw.sigma:
                if not key:
                    continue
                computed.update({f"{name}.{kind}.U": svw.u(kind).cpu(),
                                 f"{name}.{kind}.S": getattr(svw, f"sigma0_{kind}").cpu(),
                                 f"{name}.{kind}.V": svw.vh(kind).cpu().clone()})  # no shared storage
            host.register_module(f"{param}_svd", svw)
            del host._parameters[param]
            with torch.no_grad():
                svw()  # the evaluation cache, so the plain attribute below is the real W until training starts
            setattr(host, param, svw.current_weight())
            self.decomposed.append((host, param))
            self._route(loaded.model, loaded.model.get_submodule(block_path), module_path, host, param)
        for svw in self.singular_value_weights().values():
            svw.lean_memory = self.config.lean_memory
        if not self.hooked_blocks:
            raise ConfigError("clip-svd: the selection of encoders/layers/matrix kinds matches no matrix")
        for name, shortcut in encoder_shortcuts(loaded.model).items():
            self._replace(loaded.model, name, shortcut)
        if cached is None:
            svd_cache.save(key, computed)

    def _route(self, model: nn.Module, block: nn.Module, module_path: str, host: nn.Module, param: str) -> None:
        """Make the owner's forward apply the decomposed weight (module docstring); a block pre-hook otherwise."""
        if isinstance(host, nn.MultiheadAttention):
            self._replace(host, "forward", _attention_forward)
        elif isinstance(host, nn.Linear):
            self._replace(host, "forward", _linear_forward)
            parent = model.get_submodule(module_path.rpartition(".")[0])
            if isinstance(parent, nn.MultiheadAttention):  # it reads out_proj.weight without calling out_proj
                self._replace(parent, "forward", _attention_forward)
        else:
            if not hasattr(block, "_svd_targets"):
                block._svd_targets = []
                self.hooked_blocks.append((block, block.register_forward_pre_hook(_recompose)))
            block._svd_targets.append((host, param))

    def _replace(self, module: nn.Module, name: str, function) -> None:
        """An instance attribute shadows the class's method; a partial (not a bound method) survives deepcopy."""
        if name not in module.__dict__:
            setattr(module, name, functools.partial(function, module))
            self.hooked_blocks.append((module, name))

    def set_path(self, path: Path) -> None:
        """Force every decomposed weight onto one form ("auto": the cheaper per call), for tests and benchmarks."""
        if path not in PATHS:
            raise ConfigError(f"clip-svd path: expected one of {PATHS}, got {path!r}")
        for svw in self.singular_value_weights().values():
            svw.path = path

    def _targets(self, model: nn.Module) -> list[tuple[str, str, str, list[str], set[str]]]:
        """(block path, module path, parameter, kinds of its row blocks, selected kinds) per weight to decompose."""
        cfg = self.config
        wanted: dict[tuple[str, str, str], tuple[list[str], set[str]]] = {}
        explicit = set(cfg.module_paths or [])
        use_explicit = bool(explicit)
        for encoder in ENCODERS:
            blocks = encoder_blocks(model, encoder)
            for layer in range(len(blocks.blocks)):
                for kind in MATRIX_KINDS:
                    name = f"{blocks.block_path(layer)}.{blocks.location(kind).module.split('.')[0]}.{kind}"
                    if use_explicit:
                        chosen = name in explicit
                        explicit.discard(name)
                    else:
                        chosen = (
                            encoder in cfg.encoders
                            and (cfg.layers is None or layer in cfg.layers)
                            and kind in cfg.matrix_kinds
                        )
                    if not chosen:
                        continue
                    loc = blocks.location(kind)
                    key = (blocks.block_path(layer), f"{blocks.block_path(layer)}.{loc.module}", loc.param)
                    if key not in wanted:
                        fused = [k for k in MATRIX_KINDS if _same_weight(blocks.location(k), loc)]
                        wanted[key] = (fused if loc.row_blocks > 1 else [kind], set())
                    wanted[key][1].add(kind)
        if explicit:
            raise ConfigError(
                f"clip-svd module_paths: {sorted(explicit)} name no matrix; expected names like "
                f"'visual.transformer.resblocks.0.attn.q' (kinds {MATRIX_KINDS})"
            )
        return [(*key, kinds, selected) for key, (kinds, selected) in wanted.items()]

    def singular_value_weights(self) -> dict[str, nn.Module]:
        """Decomposed weights by module path, for analysis (σ vs σ₀)."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, SingularValueWeight)}

    def parameter_report(self) -> dict[str, float]:
        report = super().parameter_report()
        svws = self.singular_value_weights().values()
        paper_total = report["total"] + sum(s.decomposed_sizes() - s.original_sizes() for s in svws)
        report.update(paper_total=paper_total, paper_fraction=report["trainable"] / paper_total)
        return report

    def merge(self) -> nn.Module:
        """Write W = U·diag(σ)·Vᵀ back as plain frozen parameters and drop U, V, the hooks and replaced forwards."""
        for module, handle in self.hooked_blocks:
            if isinstance(handle, str):
                del module.__dict__[handle]
            else:
                handle.remove()
                del module._svd_targets
        for host, param in self.decomposed:
            with torch.no_grad():
                weight = getattr(host, f"{param}_svd")().detach().clone()
            delattr(host, f"{param}_svd")
            delattr(host, param)
            host.register_parameter(param, nn.Parameter(weight, requires_grad=False))
        self.hooked_blocks, self.decomposed = [], []
        return self.model
