"""TextSpan (Gandelsman et al., ICLR 2024): describe each attention head by texts from a corpus.

For one head, C (images × d) holds its direct contributions to the image embeddings and T
(texts × d) the L2-normalised text embeddings. T is projected onto the span of the top-r right
singular vectors of C, C is centred, then m times: score S = C·Tᵀ, choose the text whose score
column varies most over the images, and remove its direction from C and from every row of T.

Everything after the projection lives in that r-dimensional span, so the loop runs on r × r
covariances instead of images × texts score matrices: the same choices as the reference code
(scores C·t for t in the span equal (C·V)·(Vᵀ·t)), at a fraction of the cost.

Note on "explained variance": step i removes ‖C_i·t̂_i‖² of variance. The greedy choice makes this
usually, but not provably, non-increasing: deflating T can turn a text towards a direction C still
varies along (see tests/test_analysis.py::test_textspan_explained_variance_can_rise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from clipsvd.analysis.current_weights import as_loaded, as_module
from clipsvd.analysis.decomposition import (
    DEFAULT_LN_POST_SPLIT,
    LnPostSplit,
    direct_contributions,
    resolve_layers,
    resolve_ln_post_split,
    tower_blocks,
    vision_tower,
)
from clipsvd.analysis.textspan_cache import TextSpanCache, model_fingerprint, shared_textspan_cache
from clipsvd.errors import ConfigError, DataError

DEFAULT_TEXTS_PER_HEAD = 20
# clip_text_span's compute_complete_text_set.py: `--w_ov_rank`, default 80 (the paper's ViT-H head
# dimension); capped per head by what C has, min(rank, images, d).
DEFAULT_RANK = 80
# Eigenvalues of CᵀC below this share of the largest are C's null space (s/s_max < 1e-6, float32 rounding).
NULL_SPACE_TOLERANCE = 1e-12


@dataclass
class HeadTexts:
    """The texts TextSpan chose for one head, in order, with the share of the head's variance each explains."""

    layer: int
    head: int
    indices: list[int]  # into the corpus
    texts: list[str]
    explained_variance: list[float]  # fraction of the head's total variance removed at each step
    of_remaining: list[float]  # fraction of the variance left before the step
    total_variance: float  # variance of the head's contributions over the images (how much it matters)
    rank: int | None = None  # dimension of the span T was projected onto, min(requested rank, images, d)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "layer": self.layer,
            "head": self.head,
            "step": range(1, len(self.texts) + 1),
            "text": self.texts,
            "explained_variance": self.explained_variance,
            "cumulative_variance": np.cumsum(self.explained_variance),
            "of_remaining": self.of_remaining,
            "rank": self.rank,
        })


@dataclass
class SpanChoice:
    indices: list[int]
    explained_variance: list[float]
    of_remaining: list[float]
    total_variance: float
    rank: int  # the rank used, after the cap


def check_rank(rank: int) -> int:
    """The rank, refused early when it is not a positive integer (min(rank, N, d) needs one)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"TextSpan rank: expected a positive integer, got {rank!r}")
    return rank


def text_span(
    contributions: torch.Tensor, text_embeddings: torch.Tensor, n_texts: int = DEFAULT_TEXTS_PER_HEAD,
    rank: int = DEFAULT_RANK,
) -> SpanChoice:
    """The TextSpan greedy choice for one head: C (N × d) contributions, T (M × d) text embeddings.

    rank: how many right singular vectors of C span the projection, capped at min(rank, N, d) and at C's
    numerical rank (default: the official code's 80). Beyond its rank (the world CLIP's width-32 heads write into
    35 of 128 directions) the "singular vectors" are an arbitrary basis of C's null space that a 1e-7 change of the
    weights rotates, and with it every later greedy choice. Texts are L2-normalised here. Stops early when nothing of C
    is left in the span of the remaining texts.
    """
    if contributions.ndim != 2 or text_embeddings.ndim != 2 or contributions.shape[1] != text_embeddings.shape[1]:
        raise ConfigError(f"text_span: expected C (images × d) and T (texts × d), got "
                          f"{tuple(contributions.shape)} and {tuple(text_embeddings.shape)}")
    check_rank(rank)
    c = contributions.detach().double().cpu()
    t = F.normalize(text_embeddings.detach().double().cpu(), dim=-1)
    n, d = c.shape
    # (1) Span of C's top right singular vectors (of the uncentred C, as in the reference code).
    eigenvalues, eigenvectors = torch.linalg.eigh(c.t() @ c)  # ascending; Cᵀ·C = V·diag(s²)·Vᵀ
    numerical_rank = int((eigenvalues > eigenvalues[-1].clamp_min(0) * NULL_SPACE_TOLERANCE).sum())
    r = max(1, min(rank, n, d, numerical_rank))
    basis = eigenvectors[:, -r:].flip(1)  # (d, r)
    texts_r = t @ basis  # rows of T projected onto the span, in span coordinates
    # (2) Centre C; its covariance in span coordinates drives every later step.
    centred = c - c.mean(dim=0)
    total = float((centred ** 2).sum()) / n
    coords = centred @ basis
    cov = coords.t() @ coords / n
    chosen: list[int] = []
    explained: list[float] = []
    of_remaining: list[float] = []
    remaining = total
    tiny = 1e-12 * max(total, 1e-30)
    for _ in range(min(n_texts, t.shape[0])):
        # (3) Variance over images of each text's scores: tᵀ·Cov·t.
        variance = ((texts_r @ cov) * texts_r).sum(dim=1)
        variance[chosen] = -float("inf")
        best = int(torch.argmax(variance))
        direction = texts_r[best]
        norm2 = float(direction @ direction)
        if variance[best] <= tiny or norm2 <= 1e-24:
            break
        unit = direction / norm2 ** 0.5
        removed = float(unit @ cov @ unit)
        chosen.append(best)
        explained.append(removed / total if total > 0 else 0.0)
        of_remaining.append(removed / remaining if remaining > 0 else 0.0)
        remaining -= removed
        # Remove the chosen direction from C (its covariance) and from every text.
        project_out = torch.eye(r, dtype=cov.dtype) - torch.outer(unit, unit)
        cov = project_out @ cov @ project_out
        texts_r = texts_r - torch.outer(texts_r @ unit, unit)
    return SpanChoice(chosen, explained, of_remaining, total, r)


@torch.no_grad()
def encode_texts(loaded: Any, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(M × d) L2-normalised text embeddings on the CPU, computed in batches."""
    loaded = as_loaded(loaded)
    if loaded is None:
        raise ConfigError("text embeddings need the model's tokenizer: pass a LoadedModel or an attached Method")
    parts = [loaded.encode_text(list(texts[i:i + batch_size])).float().cpu() for i in range(0, len(texts), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0)


def _image_tensor(batch: Any) -> torch.Tensor:
    images = batch[0] if isinstance(batch, (list, tuple)) else batch
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise DataError("image batches must be (N, 3, H, W) tensors or (images, labels) pairs, "
                        f"got {type(images).__name__} {tuple(getattr(images, 'shape', ()))}")
    return images


def collect_contributions(
    model: Any, image_batches: Iterable[Any], layers: Sequence[int] | None = None, batch_size: int = 64,
    progress: Callable[[int], None] | None = None, ln_post_split: str | LnPostSplit = DEFAULT_LN_POST_SPLIT,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Stream images through the decomposition: (heads (N, L, H, d), embeddings (N, d), layers), on the CPU.

    Only the pooled per-head terms are kept, never every token of every image.
    """
    heads, embeddings = [], []
    chosen: tuple[int, ...] = ()
    done = 0
    for batch in image_batches:
        images = _image_tensor(batch)
        for start in range(0, len(images), batch_size):
            parts = direct_contributions(model, images[start:start + batch_size], layers, ln_post_split)
            heads.append(parts.heads.cpu())
            embeddings.append(parts.embedding.cpu())
            chosen = parts.layers
            done += len(parts.embedding)
            if progress:
                progress(done)
    if not heads:
        raise DataError("TextSpan: no images were given")
    return torch.cat(heads), torch.cat(embeddings), chosen


@dataclass
class TextSpanResult:
    """TextSpan texts for every head of `layers`, plus what is needed to look up images per text."""

    layers: tuple[int, ...]
    corpus: list[str]
    heads: dict[tuple[int, int], HeadTexts]
    contributions: torch.Tensor = field(repr=False)  # (N, L, H, d) on the CPU
    text_embeddings: torch.Tensor = field(repr=False)  # (M, d)
    rank: int = DEFAULT_RANK  # as requested; each head's HeadTexts.rank is after the cap
    ln_post_split: str = DEFAULT_LN_POST_SPLIT.value

    @property
    def n_heads(self) -> int:
        return self.contributions.shape[2]

    def head(self, layer: int, head: int) -> HeadTexts:
        try:
            return self.heads[(layer, head)]
        except KeyError:
            raise ConfigError(f"TextSpan result has layers {list(self.layers)} × heads 0..{self.n_heads - 1}; "
                              f"got layer {layer}, head {head}") from None

    def contributions_of(self, layer: int, head: int) -> torch.Tensor:
        self.head(layer, head)
        return self.contributions[:, self.layers.index(layer), head]

    def frame(self) -> pd.DataFrame:
        """Every chosen text of every head, long format, with the settings that produced them."""
        frame = pd.concat([h.frame() for h in self.heads.values()], ignore_index=True)
        return frame.assign(ln_post_split=self.ln_post_split)

    def importance(self) -> pd.DataFrame:
        """Heads by the variance of their direct contributions (what TextSpan's explanations are shares of)."""
        rows = [{"layer": h.layer, "head": h.head, "total_variance": h.total_variance,
                 "explained_by_texts": float(sum(h.explained_variance)), "rank": h.rank,
                 "ln_post_split": self.ln_post_split} for h in self.heads.values()]
        return pd.DataFrame(rows).sort_values("total_variance", ascending=False, ignore_index=True)


def explain_heads(
    model_or_loaded: Any,
    image_batches: Iterable[Any],
    corpus_texts: Sequence[str],
    layers: Sequence[int] | None = None,
    texts_per_head: int = DEFAULT_TEXTS_PER_HEAD,
    batch_size: int = 64,
    rank: int = DEFAULT_RANK,
    cache: TextSpanCache | None = None,
    images_key: str | None = None,
    progress: Callable[[int], None] | None = None,
    ln_post_split: str | LnPostSplit = DEFAULT_LN_POST_SPLIT,
) -> TextSpanResult:
    """TextSpan for every head of `layers` (default: the last 4) of a model's image tower.

    image_batches: an iterable of (N, 3, H, W) tensors or (images, labels) pairs, already
    preprocessed for the model. rank and ln_post_split default to the official code's (80, and its
    split of ln_post; "even" is this project's earlier convention). The corpus's text embeddings are
    read back from `cache` (default: `shared_textspan_cache()`, the one every caller shares) when the same
    model met the same corpus before, in any process. With a cache and an `images_key` naming the images (dataset, split, subset,
    transform), the forward passes are read back too when the same model meets the same images.
    """
    corpus = list(corpus_texts)
    if not corpus:
        raise DataError("TextSpan: the corpus is empty")
    if len(set(corpus)) != len(corpus):
        raise DataError("TextSpan: the corpus has duplicate lines; load it with clipsvd.analysis.corpus")
    check_rank(rank)
    split = resolve_ln_post_split(ln_post_split)
    visual = vision_tower(model_or_loaded)
    chosen = resolve_layers(len(tower_blocks(visual)), layers)
    use_cache = cache is not None and images_key is not None
    text_cache = cache if cache is not None else shared_textspan_cache()
    fingerprint = model_fingerprint(as_module(model_or_loaded))

    stored = cache.load_contributions(fingerprint, images_key, chosen, split) if use_cache else None
    if stored is None:
        heads, embeddings, chosen = collect_contributions(model_or_loaded, image_batches, chosen, batch_size,
                                                          progress, split)
        if use_cache:
            cache.save_contributions(fingerprint, images_key, chosen, heads, embeddings, split)
    else:
        heads, embeddings = stored
    text_embeddings = text_cache.load_text_embeddings(fingerprint, corpus)
    if text_embeddings is None:
        text_embeddings = encode_texts(model_or_loaded, corpus, batch_size)
        text_cache.save_text_embeddings(fingerprint, corpus, text_embeddings)
    if text_embeddings.shape[1] != heads.shape[-1]:
        raise ConfigError(f"text embeddings have {text_embeddings.shape[1]} dims, image contributions "
                          f"{heads.shape[-1]}: they must come from the same CLIP model")

    results = {}
    for li, layer in enumerate(chosen):
        for head in range(heads.shape[2]):
            choice = text_span(heads[:, li, head], text_embeddings, texts_per_head, rank)
            results[(layer, head)] = HeadTexts(
                layer, head, choice.indices, [corpus[i] for i in choice.indices],
                choice.explained_variance, choice.of_remaining, choice.total_variance, choice.rank)
    return TextSpanResult(chosen, corpus, results, heads, text_embeddings, rank, split.value)


def compare_heads(before: TextSpanResult, after: TextSpanResult, layer: int, head: int) -> pd.DataFrame:
    """One head's texts before and after fine-tuning, step by step, marking texts found in both lists."""
    a, b = before.head(layer, head), after.head(layer, head)
    steps = max(len(a.texts), len(b.texts))

    def column(values: list, i: int):
        return values[i] if i < len(values) else None

    rows = []
    for i in range(steps):
        text_a, text_b = column(a.texts, i), column(b.texts, i)
        rows.append({
            "step": i + 1,
            "text_before": text_a,
            "explained_before": column(a.explained_variance, i),
            "text_after": text_b,
            "explained_after": column(b.explained_variance, i),
            "before_also_after": text_a in b.texts if text_a is not None else None,
            "after_also_before": text_b in a.texts if text_b is not None else None,
        })
    return pd.DataFrame(rows)


def top_images_for_text(contributions_of_head: torch.Tensor, text_embedding: Any, k: int = 8) -> np.ndarray:
    """Indices of the k images whose head contribution points most along a text (C·t, highest first)."""
    c = torch.as_tensor(contributions_of_head).double()
    t = torch.as_tensor(np.asarray(text_embedding)).double().reshape(-1)
    if c.ndim != 2 or c.shape[1] != t.shape[0]:
        raise ConfigError(f"top_images_for_text: contributions {tuple(c.shape)} and text {tuple(t.shape)} do not match")
    scores = c @ t
    return torch.argsort(scores, descending=True, stable=True)[: max(0, k)].numpy()
