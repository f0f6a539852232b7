"""How specific each head is, and what removing it costs.

- Topic specificity: with a tagged corpus (each line tagged with what it describes, e.g. the world
  corpus's factors), the share of a head's first TextSpan texts that share one tag. A head whose
  top texts all talk about colour "is" a colour head, in words.
- Mean ablation (the TextSpan paper's intervention check): replace one head's direct contribution
  to every image embedding by its mean over the images and measure zero-shot accuracy again. If
  the words are right, ablating a colour head costs colour accuracy and little else.
"""
from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from clipsvd.analysis.textspan import TextSpanResult
from clipsvd.errors import ConfigError


def head_topics(result: TextSpanResult, tags: Mapping[str, str | None], top_k: int = 5) -> pd.DataFrame:
    """Per head: the most common tag among its first `top_k` texts and that tag's share (untagged texts count
    against it). Sorted by share, most specific first."""
    rows = []
    for (layer, head), chosen in result.heads.items():
        texts = chosen.texts[:top_k]
        counts = Counter(tags.get(t) for t in texts if tags.get(t) is not None)
        topic, hits = counts.most_common(1)[0] if counts else (None, 0)
        rows.append({"layer": layer, "head": head, "topic": topic, "share": hits / max(1, len(texts)),
                     "texts": " | ".join(texts), "total_variance": chosen.total_variance})
    return pd.DataFrame(rows).sort_values(["share", "total_variance"], ascending=False, ignore_index=True)


def _accuracy(embeddings: torch.Tensor, text_features: torch.Tensor, labels: np.ndarray) -> float:
    logits = F.normalize(embeddings, dim=-1) @ F.normalize(text_features, dim=-1).T
    return float((logits.argmax(1).cpu().numpy() == np.asarray(labels)).mean())


def mean_ablated(heads: torch.Tensor, embedding: torch.Tensor, layers: Sequence[int],
                 ablate: Sequence[tuple[int, int]], mlps: torch.Tensor | None = None,
                 ablate_mlps: Sequence[int] = ()) -> torch.Tensor:
    """Embeddings (N, d) with each (layer, head) in `ablate` (and each block's MLP in `ablate_mlps`) replaced by
    its mean over the N images.

    heads: (N, L, H, d) direct contributions of `layers`; mlps: (N, blocks, d) MLP terms; embedding: (N, d),
    their sum plus the rest.
    """
    out = embedding.clone()
    for block in ablate_mlps:
        if mlps is None or not 0 <= block < mlps.shape[1]:
            raise ConfigError(f"mean ablation: no MLP term of block {block} "
                              f"({'no MLP terms given' if mlps is None else f'blocks 0..{mlps.shape[1] - 1}'})")
        term = mlps[:, block]
        out = out - term + term.mean(0, keepdim=True)
    for layer, head in ablate:
        if layer not in layers or not 0 <= head < heads.shape[2]:
            raise ConfigError(f"mean ablation: no head ({layer}, {head}) among layers {list(layers)} "
                              f"× heads 0..{heads.shape[2] - 1}")
        term = heads[:, list(layers).index(layer), head]
        out = out - term + term.mean(0, keepdim=True)
    return out


def ablation_effects(heads: torch.Tensor, embedding: torch.Tensor, layers: Sequence[int],
                     tasks: Mapping[str, tuple[torch.Tensor, np.ndarray]]) -> pd.DataFrame:
    """For every head of `layers` and every task (name -> (class text features, labels)): zero-shot accuracy
    with that head mean-ablated, and the drop from the intact accuracy."""
    baseline = {name: _accuracy(embedding, text, labels) for name, (text, labels) in tasks.items()}
    rows = []
    for li, layer in enumerate(layers):
        for head in range(heads.shape[2]):
            ablated = mean_ablated(heads, embedding, layers, [(layer, head)])
            for name, (text, labels) in tasks.items():
                accuracy = _accuracy(ablated, text, labels)
                rows.append({"layer": layer, "head": head, "task": name, "accuracy": accuracy,
                             "baseline": baseline[name], "drop": baseline[name] - accuracy})
    return pd.DataFrame(rows)
