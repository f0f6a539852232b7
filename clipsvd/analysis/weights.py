"""What fine-tuning did to the weight matrices, read from their singular values.

Works for every method by comparing plain weights (a pretrained model and a merged fine-tuned
one): σ of both are computed with `torch.linalg.svdvals`, so they are sorted by size and matched
by rank. For CLIP-SVD the trained σ can be read directly (`singular_value_shifts_from_method`):
there σ stay aligned with their frozen singular vectors, even if training reorders them.
"""
from __future__ import annotations

import copy
import re
from typing import Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from clipsvd.analysis.current_weights import as_module, block_matrix
from clipsvd.errors import ConfigError
from clipsvd.models.layout import ENCODERS, MATRIX_KINDS, encoder_blocks

SHIFT_COLUMNS = ["encoder", "layer", "kind", "rel_change", "mean_shift", "max_abs_shift", "n_values"]


def weights_after(method) -> nn.Module:
    """A merged deep copy of an attached method's model: plain weights, the live method untouched."""
    clone = copy.deepcopy(method)
    model = clone.merge()
    return model.eval()


def shift_stats(sigma: torch.Tensor, sigma0: torch.Tensor) -> dict[str, float]:
    """rel_change = ‖σ−σ₀‖/‖σ₀‖, signed mean shift, largest absolute shift, count."""
    sigma, sigma0 = sigma.detach().double().cpu(), sigma0.detach().double().cpu()
    delta = sigma - sigma0
    norm0 = float(sigma0.norm())
    return {
        "rel_change": float(delta.norm()) / norm0 if norm0 > 0 else float("nan"),
        "mean_shift": float(delta.mean()),
        "max_abs_shift": float(delta.abs().max()),
        "n_values": int(delta.numel()),
    }


def _svdvals(weight: torch.Tensor) -> torch.Tensor:
    """Singular values in float64 (shifts of 1e-4 must stay above rounding); a tall matrix decomposes faster."""
    weight = weight.detach().double().cpu()
    return torch.linalg.svdvals(weight.t() if weight.shape[0] < weight.shape[1] else weight)


def _paired_blocks(before: nn.Module, after: nn.Module, encoder: str):
    blocks0, blocks1 = encoder_blocks(before, encoder), encoder_blocks(after, encoder)
    if len(blocks0.blocks) != len(blocks1.blocks) or blocks0.family != blocks1.family:
        raise ConfigError(
            f"{encoder}: the two models differ in architecture ({len(blocks0.blocks)} {blocks0.family} blocks "
            f"vs {len(blocks1.blocks)} {blocks1.family}); compare a fine-tuned model with its own pretrained one"
        )
    return blocks0, blocks1


def singular_value_shifts(
    before, after, encoders: tuple[str, ...] | list[str] = ENCODERS
) -> pd.DataFrame:
    """One row per encoder × layer × matrix kind: how far the singular values moved.

    `before`/`after` are CLIP modules (or LoadedModel/Method). Matrices that did not change at all
    (every method but CLIP-SVD leaves most of them alone) are not decomposed twice.
    """
    rows = []
    for encoder, layer, kind, w0, w1 in _paired_matrices(before, after, encoders):
        s0 = _svdvals(w0)
        s1 = s0 if torch.equal(w0.cpu(), w1.cpu()) else _svdvals(w1)
        rows.append({"encoder": encoder, "layer": layer, "kind": kind, **shift_stats(s1, s0)})
    return pd.DataFrame(rows, columns=SHIFT_COLUMNS)


def _paired_matrices(before, after, encoders) -> Iterator[tuple[str, int, str, torch.Tensor, torch.Tensor]]:
    """(encoder, layer, kind, W before, W after) of every decomposable matrix of both models."""
    before, after = as_module(before), as_module(after)
    for encoder in encoders:
        blocks0, blocks1 = _paired_blocks(before, after, encoder)
        for layer, (block0, block1) in enumerate(zip(blocks0.blocks, blocks1.blocks)):
            for kind in MATRIX_KINDS:
                yield (encoder, layer, kind, block_matrix(block0, blocks0.location(kind)),
                       block_matrix(block1, blocks1.location(kind)))


def _encoder_and_layer(model: nn.Module, path: str) -> tuple[str, int] | None:
    for encoder in ENCODERS:
        try:
            prefix = encoder_blocks(model, encoder).prefix
        except ConfigError:
            continue
        match = re.match(rf"^{re.escape(prefix)}\.(\d+)\.", path)
        if match:
            return encoder, int(match.group(1))
    return None


def singular_value_shifts_from_method(method) -> pd.DataFrame:
    """The same table from an attached (not merged) CLIP-SVD method: trained σ against σ₀, index by index."""
    svws = method.singular_value_weights()
    if not svws:
        raise ConfigError(f"{method.name}: no trained singular values (another method, or CLIP-SVD merged already); "
                          "compare plain weights with singular_value_shifts(pretrained, weights_after(method))")
    model = as_module(method)
    rows = []
    for path, svw in svws.items():
        where = _encoder_and_layer(model, path)
        if where is None:
            continue
        for kind, sigma in svw.sigma.items():
            stats = shift_stats(sigma, getattr(svw, f"sigma0_{kind}"))
            rows.append({"encoder": where[0], "layer": where[1], "kind": kind, **stats})
    frame = pd.DataFrame(rows, columns=SHIFT_COLUMNS)
    order = {"encoder": ENCODERS, "kind": MATRIX_KINDS}
    frame["_e"] = frame["encoder"].map(order["encoder"].index)
    frame["_k"] = frame["kind"].map(order["kind"].index)
    return frame.sort_values(["_e", "layer", "_k"]).drop(columns=["_e", "_k"]).reset_index(drop=True)


def spectra(before, after, encoder: str, layer: int, kind: str) -> pd.DataFrame:
    """Singular values of one matrix before and after, largest first (index, sigma_before, sigma_after)."""
    before, after = as_module(before), as_module(after)
    if kind not in MATRIX_KINDS:
        raise ConfigError(f"kind: expected one of {MATRIX_KINDS}, got '{kind}'")
    blocks0, blocks1 = _paired_blocks(before, after, encoder)
    if not 0 <= layer < len(blocks0.blocks):
        raise ConfigError(f"layer: {encoder} has layers 0..{len(blocks0.blocks) - 1}, got {layer}")
    s0 = _svdvals(block_matrix(blocks0.blocks[layer], blocks0.location(kind))).numpy()
    s1 = _svdvals(block_matrix(blocks1.blocks[layer], blocks1.location(kind))).numpy()
    return pd.DataFrame({"index": np.arange(len(s0)), "sigma_before": s0, "sigma_after": s1})


ROTATION_COLUMNS = ["encoder", "layer", "kind", "top", "left_angle_deg", "right_angle_deg", "min_abs_cos"]


def _top_subspaces(weight: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, _, vh = torch.linalg.svd(weight.detach().double().cpu(), full_matrices=False)
    return u[:, :top], vh[:top].t()


def _largest_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest principal angle (degrees) between the column spaces of two orthonormal bases."""
    cosines = torch.linalg.svdvals(a.t() @ b).clamp(max=1.0)
    return float(torch.rad2deg(torch.arccos(cosines.min())))


def singular_vector_rotation(before, after, top: int = 8,
                             encoders: tuple[str, ...] | list[str] = ENCODERS) -> pd.DataFrame:
    """How far each matrix's top singular directions turned: one row per encoder × layer × matrix kind.

    σ shifts say how much each direction is stretched; a low-rank update (LoRA, DoRA, PiSSA) may also turn the
    directions, which CLIP-SVD by construction never does. left/right_angle_deg: the largest principal angle
    between the spans of the top-`top` left (output) / right (input) singular vectors before and after (0: the
    subspace is unchanged); min_abs_cos: the smallest |u_i·u'_i| over the top pairs matched by rank (1: each
    direction kept; it can drop where two σ cross even if the span holds). Matrices left untouched are 0 / 1.
    """
    if top < 1:
        raise ConfigError(f"top: expected >= 1 singular vectors, got {top}")
    rows = []
    for encoder, layer, kind, w0, w1 in _paired_matrices(before, after, encoders):
        k = min(top, *w0.shape)
        row = {"encoder": encoder, "layer": layer, "kind": kind, "top": k}
        if torch.equal(w0.cpu(), w1.cpu()):
            rows.append({**row, "left_angle_deg": 0.0, "right_angle_deg": 0.0, "min_abs_cos": 1.0})
            continue
        (u0, v0), (u1, v1) = _top_subspaces(w0, k), _top_subspaces(w1, k)
        rows.append({**row, "left_angle_deg": _largest_angle(u0, u1), "right_angle_deg": _largest_angle(v0, v1),
                     "min_abs_cos": float((u0 * u1).sum(0).abs().min())})
    return pd.DataFrame(rows, columns=ROTATION_COLUMNS)
