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

The package, one job per module: `factored` (the hand-written factored projection and the cost model that picks the
form), `weight` (SingularValueWeight, the decomposed weight), `forwards` (the replaced forwards of attention and
linear modules), `shortcuts` (the exact encoder shortcuts) and `method` (CLIPSVD and its config; importing it
registers the method).
"""
from clipsvd.methods.clip_svd.factored import FactoredProjection, training_costs
from clipsvd.methods.clip_svd.method import CLIPSVD, CLIPSVDConfig
from clipsvd.methods.clip_svd.shortcuts import (
    ENCODER_SHORTCUTS,
    encode_image_to_class_token,
    encode_text_to_last_eot,
    encoder_shortcuts,
    trims_image_tokens,
    trims_text_padding,
)
from clipsvd.methods.clip_svd.weight import PATHS, SingularValueWeight

__all__ = [
    "CLIPSVD", "CLIPSVDConfig", "ENCODER_SHORTCUTS", "FactoredProjection", "PATHS", "SingularValueWeight",
    "encode_image_to_class_token", "encode_text_to_last_eot", "encoder_shortcuts", "training_costs",
    "trims_image_tokens", "trims_text_padding",
]
