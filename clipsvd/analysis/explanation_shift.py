"""How much a head's explanation changed with fine-tuning, and whether the heads whose weights changed most
are the heads whose words changed most.

Two scores per head, both in [0, 1] (0: the same explanation, 1: nothing in common), computed on the first
k TextSpan texts before (A) and after (B):

- **text shift** = 1 − |A ∩ B| / max(|A|, |B|): the share of the top-k texts that were replaced. It is what a
  reader sees in the side-by-side lists, exact and easy to state in a paper. Its blind spot is paraphrase:
  "a red disc" → "a crimson circle" counts as a full change.
- **span shift** = 1 − ‖Q_Aᵀ Q_B‖²_F / max(r_A, r_B) = mean sin² of the principal angles between the spans of
  the two sets' text embeddings (Q: orthonormal bases, r: their ranks; the normalised projection distance).
  A head writes into the span of its texts, so this asks whether it still writes *in the same directions*:
  a paraphrase swap barely moves the span, a change of topic (shape → colour) moves it a lot.
  Both sets are embedded by the **pretrained** text encoder and centred on the corpus mean: CLIP-SVD also
  trains the text tower, and embedding each set with its own model would count text-encoder drift as a
  changed explanation (identical words would not score 0); and CLIP's text embeddings share a large common
  direction that would make every pair of spans look alike.

max(|A|, |B|) makes a list that TextSpan stopped early (nothing left to explain) count its missing texts as
changed, symmetrically. Weight change and explanation shift are related across heads by Spearman's rank
correlation (`shift_correlation`), with a permutation p-value: there are only a few dozen heads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from clipsvd.analysis.decomposition import resolve_layers
from clipsvd.analysis.heads import RANKING_MEASURES
from clipsvd.analysis.textspan import HeadTexts, TextSpanResult
from clipsvd.errors import ConfigError

SHIFT_TOP_K = 5  # texts per head compared; the README and head_topics also read a head by its first 5 texts
SUMMARY_TEXTS = 3  # texts per side in the paper table
SHIFT_COLUMNS = ("text_shift", "span_shift")
# Float64 rounding of two bases of the same span leaves ~1e-15; below this a span shift is 0, so identical
# explanations neither print as a run of zeros nor get ranked by noise.
SPAN_SHIFT_FLOOR = 1e-12
KEPT, ENTERED, LEFT = "kept", "entered", "left"


def text_set_shift(before: Sequence[str], after: Sequence[str]) -> float:
    """1 − |A ∩ B| / max(|A|, |B|): the share of texts replaced (0 when both are empty)."""
    a, b = set(before), set(after)
    size = max(len(a), len(b))
    return 0.0 if size == 0 else 1.0 - len(a & b) / size


def _basis(vectors: np.ndarray) -> np.ndarray:
    """Orthonormal basis (d × r) of the rows' span; near-dependent rows do not add a dimension."""
    if len(vectors) == 0:
        return np.zeros((vectors.shape[1] if vectors.ndim == 2 else 0, 0))
    u, s, _ = np.linalg.svd(vectors.T, full_matrices=False)
    keep = s > max(s.max(), 1e-300) * 1e-9 * max(vectors.shape)
    return u[:, keep]


def _as_matrix(vectors) -> np.ndarray:
    array = np.asarray(vectors.detach().cpu().double() if isinstance(vectors, torch.Tensor) else vectors,
                       dtype=np.float64)
    if array.ndim != 2:
        raise ConfigError(f"span shift: expected vectors as rows (n × d), got shape {array.shape}")
    return array


def principal_angles(before, after) -> np.ndarray:
    """Principal angles (radians, smallest first) between the spans of two sets of row vectors."""
    a, b = _as_matrix(before), _as_matrix(after)
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"span shift: vectors of {a.shape[1]} and {b.shape[1]} dimensions cannot be compared")
    qa, qb = _basis(a), _basis(b)
    if qa.shape[1] == 0 or qb.shape[1] == 0:
        return np.zeros(0)
    cosines = np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False), 0.0, 1.0)
    return np.arccos(cosines)


def span_shift(before, after) -> float:
    """1 − ‖Q_Aᵀ Q_B‖²_F / max(r_A, r_B): 0 for the same span, 1 for orthogonal spans (0 when both are empty)."""
    a, b = _as_matrix(before), _as_matrix(after)
    rank = max(_basis(a).shape[1], _basis(b).shape[1])
    if rank == 0:
        return 0.0
    cosines = np.cos(principal_angles(a, b))
    value = 1.0 - (cosines ** 2).sum() / rank
    return 0.0 if value < SPAN_SHIFT_FLOOR else float(min(value, 1.0))


@dataclass
class HeadShift:
    """One head's explanation before vs after: the two scores, what entered, left and stayed, variance shares."""

    layer: int
    head: int
    text_shift: float
    span_shift: float
    kept: list[str]
    entered: list[str]  # in the after list, not in the before list (after's order)
    left: list[str]  # in the before list, not in the after list (before's order)
    explained_before: float  # share of the head's variance its top-k texts explain, before
    explained_after: float
    largest_angle: float  # degrees, the largest principal angle between the spans


def head_shift(before: HeadTexts, after: HeadTexts, text_embeddings: torch.Tensor, corpus: Sequence[str],
               k: int = SHIFT_TOP_K) -> HeadShift:
    """Scores of one head from its texts before and after; `text_embeddings` (rows in `corpus` order) are the
    pretrained model's, so the same words always sit at the same place."""
    if k < 1:
        raise ConfigError(f"explanation shift: k must be at least 1, got {k}")
    a, b = before.texts[:k], after.texts[:k]
    reference = _as_matrix(text_embeddings)
    reference = reference - reference.mean(axis=0)
    index = {text: i for i, text in enumerate(corpus)}
    missing = [t for t in (*a, *b) if t not in index]
    if missing:
        raise ConfigError(f"explanation shift: texts not in the corpus: {missing[:3]}")
    va, vb = reference[[index[t] for t in a]], reference[[index[t] for t in b]]
    angles = principal_angles(va, vb)
    return HeadShift(
        before.layer, before.head, text_set_shift(a, b), span_shift(va, vb),
        kept=[t for t in b if t in a], entered=[t for t in b if t not in a], left=[t for t in a if t not in b],
        explained_before=float(sum(before.explained_variance[:k])),
        explained_after=float(sum(after.explained_variance[:k])),
        largest_angle=float(np.degrees(angles.max())) if len(angles) else 0.0,
    )


def marked_texts(before: HeadTexts, after: HeadTexts, k: int = SHIFT_TOP_K) -> pd.DataFrame:
    """The first k texts before and after side by side, each marked kept / left (before) or kept / entered (after)."""
    a, b = before.texts[:k], after.texts[:k]
    rows = []
    for i in range(max(len(a), len(b))):
        text_a, text_b = (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
        rows.append({
            "step": i + 1,
            "text_before": text_a, "mark_before": None if text_a is None else KEPT if text_a in b else LEFT,
            "explained_before": before.explained_variance[i] if text_a is not None else None,
            "text_after": text_b, "mark_after": None if text_b is None else KEPT if text_b in a else ENTERED,
            "explained_after": after.explained_variance[i] if text_b is not None else None,
        })
    return pd.DataFrame(rows, columns=["step", "text_before", "mark_before", "explained_before", "text_after",
                                       "mark_after", "explained_after"])


def _check_pair(before: TextSpanResult, after: TextSpanResult) -> None:
    if before.corpus != after.corpus:
        raise ConfigError("explanation shift: the before and after TextSpan results used different corpora")
    if set(before.heads) != set(after.heads):
        raise ConfigError("explanation shift: the before and after TextSpan results cover different heads")


def top_changed_heads(changes: pd.DataFrame, n: int, layers: Sequence[int] | None = None,
                      measure: str | None = None) -> list[tuple[int, int]]:
    """The n most-changed heads in `head_changes` order (its rank), only among `layers` when given; with
    `measure`, only heads that changed under it (a head whose weights did not move is not "most changed")."""
    ranked = changes.sort_values("rank", kind="stable")
    if layers is not None:
        ranked = ranked[ranked["layer"].isin(list(layers))]
    if measure is not None:
        ranked = ranked[ranked[measure] > 0]
    return [(int(r.layer), int(r.head)) for r in ranked.head(max(0, n)).itertuples()]


def layers_to_explain(n_layers: int, changes: pd.DataFrame, n: int, measure: str | None = None) -> tuple[int, ...]:
    """TextSpan's default layers (the last four) plus the layers of the n most-changed heads, so the heads
    Explain starts from are always among those analysed (only the last four when no head changed)."""
    top = top_changed_heads(changes, n, measure=measure)
    return tuple(sorted(set(resolve_layers(n_layers, None)) | {layer for layer, _ in top}))


SHIFT_ORDER = ("span_shift", "text_shift")  # explanation-shift order: span shift first (paraphrase-proof)


def by_explanation_shift(table: pd.DataFrame) -> pd.DataFrame:
    """An `explanation_shifts` table ordered by how far each head's explanation moved (span shift, then text
    shift; ties by layer and head) with `shift_rank` 1…n, and without the weight-change `rank`: for a run
    whose attention weights did not change (CLIPFit, ProLIP) the heads whose words moved anyway are the finding,
    and a weight rank would be an arbitrary order of zeros."""
    for column in SHIFT_ORDER:
        if column not in table:
            raise ConfigError(f"explanation shift order: the table has no column '{column}'")
    ordered = table.drop(columns=["rank", "shift_rank"], errors="ignore").sort_values(
        [*SHIFT_ORDER, "layer", "head"], ascending=[False, False, True, True], kind="stable", ignore_index=True)
    ordered.insert(0, "shift_rank", range(1, len(ordered) + 1))
    return ordered


def top_shifted_heads(table: pd.DataFrame, n: int) -> list[tuple[int, int]]:
    """The n heads whose explanation moved most (`by_explanation_shift` order)."""
    ordered = table if "shift_rank" in table else by_explanation_shift(table)
    return [(int(r.layer), int(r.head)) for r in ordered.sort_values("shift_rank").head(max(0, n)).itertuples()]


def explanation_shifts(before: TextSpanResult, after: TextSpanResult, changes: pd.DataFrame | None = None,
                       k: int = SHIFT_TOP_K, texts: int = SUMMARY_TEXTS) -> pd.DataFrame:
    """The paper table: one row per analysed head with its weight change (when `changes`, a `head_changes`
    table of the image tower, is given: its rank and every change measure), both shift scores, the variance
    its top-k texts explain before and after, and its first `texts` texts before and after.

    Rows follow the weight ranking when `changes` is given, else the head order.
    """
    _check_pair(before, after)
    rows = []
    for key in sorted(before.heads):
        shift = head_shift(before.heads[key], after.heads[key], before.text_embeddings, before.corpus, k)
        rows.append({
            "layer": key[0], "head": key[1], "text_shift": shift.text_shift, "span_shift": shift.span_shift,
            "largest_angle_deg": shift.largest_angle, "kept": len(shift.kept), "entered": len(shift.entered),
            "left": len(shift.left), "explained_before": shift.explained_before,
            "explained_after": shift.explained_after,
            "variance_before": before.heads[key].total_variance, "variance_after": after.heads[key].total_variance,
            "texts_before": " | ".join(before.heads[key].texts[:texts]),
            "texts_after": " | ".join(after.heads[key].texts[:texts]),
            "entered_texts": " | ".join(shift.entered), "left_texts": " | ".join(shift.left), "k": k,
        })
    table = pd.DataFrame(rows)
    if changes is None:
        return table
    weights = changes[["layer", "head", "rank", *[m for m in RANKING_MEASURES if m in changes]]]
    joined = weights.merge(table, on=["layer", "head"], how="inner")
    if len(joined) != len(table):
        raise ConfigError("explanation shift: the weight-change table does not cover every analysed head; "
                          "pass head_changes(..., encoder='visual') of the same models")
    return joined.sort_values("rank", kind="stable", ignore_index=True)


@dataclass
class Correlation:
    """Spearman's ρ between two columns across heads, with a two-sided permutation p-value; where one column
    is constant there is no ρ (None) and `reason` says why, in words, instead of printing nan."""

    rho: float | None
    p_value: float | None
    n: int
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.rho is not None

    def text(self) -> str:
        if self.rho is None:
            return f"no correlation: {self.reason}"
        return f"ρ = {self.rho:+.2f} (p = {self.p_value:.2g}, n = {self.n} heads)"


def _constant_reason(values: pd.Series, column: str) -> str:
    """Why a constant column has no rank correlation, in words."""
    if column in RANKING_MEASURES and (values == 0).all():
        return "no head's weights changed"
    name = column.replace("_", " ")
    return f"every head has the same {name} ({values.iloc[0]:.3g})" if len(values) else f"no {name}"


def shift_correlation(table: pd.DataFrame, measure: str = "ov_change", shift: str = "span_shift",
                      permutations: int = 20_000, seed: int = 0) -> Correlation:
    """Spearman's ρ (Pearson on average ranks, so ties are fair) of weight change vs explanation shift.

    The p-value is the share of random pairings of the ranks with |ρ| at least as large (seeded): exact
    enough for a few dozen heads and free of a normal approximation.
    """
    for column in (measure, shift):
        if column not in table:
            raise ConfigError(f"shift correlation: the table has no column '{column}'")
    data = table[[measure, shift]].dropna()
    n = len(data)
    if n < 3:
        raise ConfigError(f"shift correlation needs at least 3 heads, got {n}")
    for column in (measure, shift):
        if data[column].nunique() == 1:  # ranks all tied: ρ is 0/0
            return Correlation(None, None, n, _constant_reason(data[column], column))
    x, y = (data[c].rank().to_numpy() for c in (measure, shift))
    x, y = x - x.mean(), y - y.mean()
    scale = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    rho = float(x @ y / scale)
    shuffled = np.random.default_rng(seed).permuted(np.tile(y, (permutations, 1)), axis=1)
    null = shuffled @ x / scale
    p_value = float((1 + np.sum(np.abs(null) >= abs(rho) - 1e-12)) / (1 + permutations))
    return Correlation(rho, p_value, n)
