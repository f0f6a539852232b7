"""Which attention heads changed most, measured per head on the recomposed weights.

Head h owns rows h·d_h…(h+1)·d_h of W_Q, W_K, W_V and the matching columns of W_O. Its effect on
the residual stream is the OV circuit W_O^h W_V^h and its attention pattern comes from the QK
circuit W_Q^hᵀ W_K^h; both are compared before/after. (The CLIP-SVD paper's "head" plot instead
cuts the sorted σ of v/out into blocks, see `legacy_sigma_block_scores`; that is not per head.)
"""
from __future__ import annotations

from enum import Enum

import pandas as pd
import torch

from clipsvd.analysis.current_weights import as_module, block_matrix
from clipsvd.analysis.weights import _encoder_and_layer, _paired_blocks
from clipsvd.errors import ConfigError
from clipsvd.models.layout import attention_heads

RANKING_MEASURES = ("ov_change", "value_change", "qk_change", "out_change")


class HeadChange(str, Enum):
    """What a run did to a tower's attention weights; decides whether a ranking by weight change means anything."""

    NOTHING_TRAINED = "nothing trained"  # zero-shot: the "after" model is the pretrained one
    NO_WEIGHT = "no weight changed"  # CoOp, linear probe: what trains lies outside the model's weights
    NO_HEAD = "no head changed"  # CLIPFit, ProLIP, linear probe: they train LayerNorms, a projection, a head
    NOT_BY_MEASURE = "no head changed by this measure"  # e.g. only q/k trained, ranked by ov_change
    CHANGED = "changed"

    @property
    def ranks_by_weight(self) -> bool:
        """Only then is "most changed" a ranking; otherwise it would be an arbitrary order of zeros."""
        return self is HeadChange.CHANGED

    @property
    def weights_differ(self) -> bool:
        """Whether any weight of the model can differ from before; where none can (nothing trained, or only a
        prompt or a head beside the model), the image tower computes exactly what it did before, so analyses of
        it before vs after (TextSpan, explanation shift) would only show the same thing twice."""
        return self not in (HeadChange.NOTHING_TRAINED, HeadChange.NO_WEIGHT)


def head_change(changes: pd.DataFrame, measure: str, trains: bool = True, changes_weights: bool = True) -> HeadChange:
    """Whether the heads of a `head_changes` table moved under `measure` (any head > 0), under another
    measure only, or not at all; `trains` False (zero-shot) and `changes_weights` False (a method whose trained
    tensors lie outside the model: `Method.changes_weights`) are their own cases: no weight could have moved."""
    if not trains:
        return HeadChange.NOTHING_TRAINED
    if not changes_weights:
        return HeadChange.NO_WEIGHT
    if measure not in changes:
        raise ConfigError(f"head change: the table has no column '{measure}'")
    if (changes[measure] > 0).any():
        return HeadChange.CHANGED
    others = [m for m in RANKING_MEASURES if m in changes and m != measure]
    return HeadChange.NOT_BY_MEASURE if (changes[others] > 0).to_numpy().any() else HeadChange.NO_HEAD


def head_change_note(state: HeadChange, what: str, method: str, summary: str, measure: str,
                     instead: str = "") -> str | None:
    """The one line a page or the report shows where ranking heads by weight change would mean nothing
    (`instead`: what it shows in its place); None when heads changed. `method`/`summary`: the method's
    display name and what it trains."""
    if state is HeadChange.NOTHING_TRAINED:
        return (f"{method} trains nothing: the 'after' model is the pretrained one, so none of the {what} can "
                "differ from before. Pick a trained run to see what fine-tuning changed.")
    if state is HeadChange.NO_WEIGHT:
        trains = f": it trains {summary[:1].lower()}{summary[1:].rstrip('.')}" if summary else ""
        return (f"{method} changes no weight of the model{trains}. The weights before and after are the same, so "
                f"none of the {what} changed. {instead}").rstrip()
    if state is HeadChange.NO_HEAD:
        trains = f": {method} trains {summary[:1].lower()}{summary[1:]}" if summary else f" ({method})"
        return f"This run changed none of the {what}{trains} {instead}".rstrip()
    if state is HeadChange.NOT_BY_MEASURE:
        return f"No head's {measure} changed in this run (other measures did: rank by one of them). {instead}".rstrip()
    return None


def pair_head_change_note(before: str, after: str, what: str, measure: str | None = None, instead: str = "") -> str:
    """The one line where two fine-tuned runs of the same base do not differ in `what` (or not under `measure`,
    where other measures do), named as the pages and the report name the two sides ("run …")."""
    if measure:
        return (f"No head's {measure} differs between {before} and {after} (other measures do: rank by one of "
                f"them). {instead}").rstrip()
    return (f"{before[:1].upper()}{before[1:]} and {after} do not differ in any of the {what}: both changed them "
            f"alike, or neither changed them. {instead}").rstrip()


def unchanged_weights_note(method, what: str) -> str | None:
    """The one line every weight analysis (σ shifts, singular-vector turns, heads) shows for a method that changes
    no weight of the model (`Method.changes_weights` False: CoOp, a linear probe, zero-shot), read from the
    method (class or instance) rather than its name; None for methods that change weights."""
    if method.changes_weights:
        return None
    state = HeadChange.NO_WEIGHT if method.trains else HeadChange.NOTHING_TRAINED
    return head_change_note(state, what, method.display_name, method.summary, "")


def _difference_norms(a1: torch.Tensor, b1: torch.Tensor, a0: torch.Tensor, b0: torch.Tensor) -> torch.Tensor:
    """Per head ‖A1·B1 − A0·B0‖_F / ‖A0·B0‖_F for stacks A (H, m, d), B (H, d, n), without forming m × n.

    A1·B1 − A0·B0 = [ΔA, A0]·[B1; ΔB] and ‖X·Y‖²_F = tr((XᵀX)(YYᵀ)), so only 2d × 2d Gram matrices
    are needed; every term of that trace scales with the change, so tiny changes do not drown in
    rounding, and unchanged heads give exactly 0.
    """
    x = torch.cat([a1 - a0, a0], dim=2)
    y = torch.cat([b1, b1 - b0], dim=1)
    diff = _product_norm(x, y)
    return diff / _product_norm(a0, b0)


def _product_norm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖A·B‖_F per head via tr((AᵀA)(BBᵀ))."""
    return torch.einsum("hij,hji->h", a.transpose(1, 2) @ a, b @ b.transpose(1, 2)).clamp_min(0).sqrt()


def _rows_by_head(w: torch.Tensor, heads: int) -> torch.Tensor:
    """(H, d_h, in): the rows of a q/k/v matrix that belong to each head."""
    return w.reshape(heads, w.shape[0] // heads, w.shape[1])


def _relative(delta: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    return delta.flatten(1).norm(dim=1) / base.flatten(1).norm(dim=1)


def head_changes(before, after, encoder: str = "visual", rank_by: str = "ov_change") -> pd.DataFrame:
    """One row per layer × head, ranked across layers (rank 1 = changed most by `rank_by`).

    value_change: ‖ΔW_V^h‖/‖W_V^h‖ (its d_h rows); out_change: the same for its d_h columns of W_O;
    ov_change: relative change of W_O^h W_V^h; qk_change: relative change of W_Q^hᵀ W_K^h.
    """
    if rank_by not in RANKING_MEASURES:
        raise ConfigError(f"rank_by: expected one of {RANKING_MEASURES}, got '{rank_by}'")
    before, after = as_module(before), as_module(after)
    blocks0, blocks1 = _paired_blocks(before, after, encoder)
    heads = attention_heads(before, encoder)
    frames = []
    for layer, (block0, block1) in enumerate(zip(blocks0.blocks, blocks1.blocks)):
        q0, k0, v0, o0 = (block_matrix(block0, blocks0.location(k)).double().cpu() for k in ("q", "k", "v", "out"))
        q1, k1, v1, o1 = (block_matrix(block1, blocks1.location(k)).double().cpu() for k in ("q", "k", "v", "out"))
        v0h, v1h = _rows_by_head(v0, heads), _rows_by_head(v1, heads)  # (H, d_h, width)
        q0h, q1h = _rows_by_head(q0, heads), _rows_by_head(q1, heads)
        k0h, k1h = _rows_by_head(k0, heads), _rows_by_head(k1, heads)
        o0h = _rows_by_head(o0.t(), heads).transpose(1, 2)  # (H, width, d_h): the head's columns of W_O
        o1h = _rows_by_head(o1.t(), heads).transpose(1, 2)
        frames.append(pd.DataFrame({
            "encoder": encoder,
            "layer": layer,
            "head": range(heads),
            "value_change": _relative(v1h - v0h, v0h).numpy(),
            "out_change": _relative(o1h - o0h, o0h).numpy(),
            "ov_change": _difference_norms(o1h, v1h, o0h, v0h).numpy(),
            "qk_change": _difference_norms(q1h.transpose(1, 2), k1h, q0h.transpose(1, 2), k0h).numpy(),
        }))
    return _ranked(pd.concat(frames, ignore_index=True), rank_by)


def _ranked(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    frame = frame.sort_values(column, ascending=False, kind="stable").reset_index(drop=True)
    frame["rank"] = range(1, len(frame) + 1)
    return frame


def legacy_sigma_block_scores(method, encoder: str = "visual") -> pd.DataFrame:
    """The CLIP-SVD paper's "head" score, for comparison only — it is NOT a per-head measure.

    The paper reshapes the σ of v and out (width values each) into H blocks of d_h and calls block
    h "head h". But σ are sorted by size, and each singular vector spans all heads' rows/columns,
    so block h is "the h-th group of singular directions by magnitude", not attention head h. Use
    `head_changes` for a true per-head measure. Score: mean over v and out of ‖σ_b − σ₀_b‖/‖σ₀_b‖.
    """
    weights = method.singular_value_weights()
    if not weights:
        raise ConfigError("legacy_sigma_block_scores needs an attached, unmerged CLIP-SVD method")
    model = as_module(method)
    heads = attention_heads(model, encoder)
    scores: dict[int, dict[str, torch.Tensor]] = {}
    for path, svw in weights.items():
        where = _encoder_and_layer(model, path)
        if where is None or where[0] != encoder:
            continue
        for kind in ("v", "out"):
            if kind in svw.sigma:
                sigma = svw.sigma[kind].detach().double().cpu().reshape(heads, -1)
                sigma0 = getattr(svw, f"sigma0_{kind}").double().cpu().reshape(heads, -1)
                scores.setdefault(where[1], {})[kind] = _relative(sigma - sigma0, sigma0)
    if not scores:
        raise ConfigError(f"clip-svd: no v or out singular values trained in the {encoder} encoder")
    rows = []
    for layer in sorted(scores):
        by_kind = scores[layer]
        mean = torch.stack(list(by_kind.values())).mean(0)
        for block in range(heads):
            rows.append({
                "encoder": encoder, "layer": layer, "head": block,
                "legacy_sigma_block": float(mean[block]),
                "legacy_v": float(by_kind["v"][block]) if "v" in by_kind else float("nan"),
                "legacy_out": float(by_kind["out"][block]) if "out" in by_kind else float("nan"),
            })
    return _ranked(pd.DataFrame(rows), "legacy_sigma_block")
