"""The factored form of a decomposed matrix, x·Vᵀ·diag(σ)·Uᵀ, and the cost model that picks it over recomposing W.

Factored, per token: no weight gradient is ever formed, since U and V are frozen; cheaper for the thin MLP matrices
at any token count, and for square ones below ~2·d tokens. Recomposed, x·(U·diag(σ)·Vᵀ)ᵀ: one d³ recomposition and a
d³ projection of dW, then matmuls with one weight instead of two; cheaper for square matrices over many tokens
(ViT-B/16, batch 32). `training_costs` counts the multiply-adds of both for a shape and a token count
(benchmarks/bench_clip_svd_step.py measures them).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
