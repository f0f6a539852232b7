"""Refuse weights with NaN or Inf at load: a model with them evaluates to chance and makes CLIP-SVD's decomposition
fail, so the run would be wasted or, worse, reported as a completed 12.5 % run."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from clipsvd.errors import CheckpointError


def check_finite(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """CheckpointError naming `path` and the first tensor holding NaN or Inf (one torch.isfinite pass per floating
    tensor, stopping at the first bad one)."""
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            values = tensor.detach()[~finite]
            kinds = " and ".join(k for k, present in (("NaN", bool(torch.isnan(values).any())),
                                                      ("Inf", bool(torch.isinf(values).any()))) if present)
            raise CheckpointError(f"checkpoint {path}: tensor '{name}' holds {kinds} ({int((~finite).sum())} of "
                                  f"{tensor.numel()} values); refusing weights that are not finite")


__all__ = ["check_finite"]
