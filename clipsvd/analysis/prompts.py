"""What a learned prompt says: the vocabulary words nearest to each of CoOp's context vectors.

The CoOp paper (Zhou et al., IJCV 2022, §4.5 'Interpretability') reads learned context vectors by searching
the vocabulary for the word whose token embedding is closest in Euclidean distance (its interpret_prompt.py).
Learned vectors need not lie near any word, so the distance is shown beside each word: a large one means the
vector is not a word.
"""
from __future__ import annotations

import pandas as pd
import torch

from clipsvd.errors import ConfigError

NEAREST_COLUMNS = ["class", "position", "rank", "word", "distance"]


def _decode(tokenizer, token: int) -> str:
    """One token as text (open_clip's byte-level BPE marks a word end with '</w>'; decode drops it)."""
    return tokenizer.decode([token]).strip() if hasattr(tokenizer, "decode") else str(token)


def nearest_words(method, k: int = 3) -> pd.DataFrame:
    """One row per context vector × rank: the k vocabulary tokens nearest to it (Euclidean, in the token
    embedding space), with their distances. `class` is -1 for a shared context, the class index otherwise."""
    ctx = method.learned_context()
    if not isinstance(ctx, torch.Tensor):
        raise ConfigError(f"{getattr(method, 'name', type(method).__name__)}: has no learned context vectors "
                          "(nearest words are CoOp's analysis)")
    if k < 1:
        raise ConfigError(f"k: expected >= 1 nearest words, got {k}")
    vocabulary = method.model.token_embedding.weight.detach().float()
    contexts = ctx.detach().float().to(vocabulary.device)
    contexts = contexts.unsqueeze(0) if contexts.dim() == 2 else contexts
    rows = []
    for index, context in enumerate(contexts):
        distances = torch.cdist(context, vocabulary, compute_mode="donot_use_mm_for_euclid_dist")
        values, tokens = distances.topk(min(k, vocabulary.shape[0]), dim=-1, largest=False)
        for position in range(context.shape[0]):
            for rank in range(values.shape[1]):
                rows.append({"class": index if len(contexts) > 1 else -1, "position": position + 1, "rank": rank + 1,
                             "word": _decode(method.loaded.tokenizer, int(tokens[position, rank])),
                             "distance": float(values[position, rank])})
    return pd.DataFrame(rows, columns=NEAREST_COLUMNS)


def nearest_reading(words: pd.DataFrame) -> pd.DataFrame:
    """The learned prompt read as words: per context (`class`), the nearest word at each position in order, and
    the mean distance (how far from being words the vectors are). Input: a `nearest_words` table."""
    first = words[words["rank"] == 1].sort_values(["class", "position"])
    grouped = first.groupby("class", sort=True)
    return pd.DataFrame({"class": list(grouped.groups),
                         "nearest_words": [" ".join(part["word"]) for _, part in grouped],
                         "mean_distance": [float(part["distance"].mean()) for _, part in grouped]})
