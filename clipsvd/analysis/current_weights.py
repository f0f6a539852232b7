"""Read weights the way the forward pass sees them, whatever wraps the model.

Analyses take a LoadedModel, an attached Method or a bare CLIP module, and may meet CLIP-SVD's
unmerged weights, whose plain attribute is only refreshed at the next forward pass: reading the
recomposed U·diag(σ)·Vᵀ here keeps every analysis in step with the current σ.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clipsvd.models.layout import MatrixLocation


def as_module(obj: Any) -> nn.Module:
    """The CLIP nn.Module inside a LoadedModel or Method (or the module itself)."""
    if isinstance(obj, nn.Module):
        return obj
    loaded = getattr(obj, "loaded", None)  # Method
    if loaded is not None:
        return loaded.model
    model = getattr(obj, "model", None)  # LoadedModel
    if isinstance(model, nn.Module):
        return model
    raise TypeError(f"expected a CLIP nn.Module, LoadedModel or attached Method, got {type(obj).__name__}")


def as_loaded(obj: Any):
    """The LoadedModel (model + tokenizer) behind a LoadedModel or Method, or None for a bare module."""
    if isinstance(obj, nn.Module):
        return None
    loaded = getattr(obj, "loaded", None)
    if loaded is not None:
        return loaded
    return obj if hasattr(obj, "encode_text") and hasattr(obj, "model") else None


def current_weight(host: nn.Module, param: str) -> torch.Tensor:
    """host.<param> as the next forward pass will use it (CLIP-SVD: recomposed from the current σ; a low-rank
    adapter — clip-lora, PEFT's lora/dora/pissa — gives W + ΔW through the host's `effective_weight(param)`)."""
    with torch.no_grad():
        svd = getattr(host, f"{param}_svd", None)
        effective = getattr(host, "effective_weight", None)
        weight = svd() if isinstance(svd, nn.Module) else effective(param) if callable(effective) \
            else getattr(host, param)
    return weight.detach()


def block_matrix(block: nn.Module, location: MatrixLocation) -> torch.Tensor:
    """One (out × in) matrix of a transformer block, cut out of a fused weight when needed."""
    weight = current_weight(block.get_submodule(location.module), location.param)
    if location.row_blocks > 1:
        weight = weight.chunk(location.row_blocks, dim=0)[location.row_block]
    return weight
