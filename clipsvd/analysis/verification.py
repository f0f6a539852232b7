"""Verify a run's explanations in one call: choose heads, mean-ablate them before and after fine-tuning, and
see where on the image they write the texts that entered or left their explanation.

What the Verify page, the report and `clipsvd ablate` share: the choice of heads (top-N of the weight
ranking, a text query, a hand-picked list, a whole layer) and the TextSpan texts the ablation is scored on;
the ground truth and patch maps come from `ground_truth`. Everything ends in an `AblationResult` cached in the
run folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT
from clipsvd.errors import ConfigError

CHOICES = ("top", "match", "heads", "layer")  # how heads are chosen, also the URL parameter names
CHOICE_TITLES = {"top": "top-N of the Heads ranking", "match": "heads whose texts match a query",
                 "heads": "a hand-picked list", "layer": "a whole layer"}




# ----- the whole check, as the page and the CLI ask for it ----------------------------------------------

@dataclass(frozen=True)
class HeadChoice:
    """How the heads are chosen: kind in CHOICES and its value (N, a query, "L3.H2,L2.H1", a layer number)."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        if self.kind not in CHOICES:
            raise ConfigError(f"heads: choose them by one of {', '.join(CHOICES)}, not '{self.kind}'")


def textspan_layers(choice: HeadChoice, n_layers: int, n_heads: int, ranking: Any = None) -> list[int]:
    """The layers TextSpan must explain before the heads can be chosen and scored (a query reads them all)."""
    return sorted({layer for layer, _ in resolve_choice(choice, n_layers, n_heads, ranking).heads}) \
        if choice.kind != "match" else list(range(n_layers))


def resolve_choice(choice: HeadChoice, n_layers: int, n_heads: int, ranking: Any = None,
                   results: Sequence[Any] = (), top_k: int = 5, tags: Mapping[str, str | None] | None = None):
    """The Ablation a choice names; bad input (a head out of range, N not a number) refused with a message."""
    from clipsvd.analysis.ablation import layer_heads, matching_heads, parse_heads, top_ranked

    value = str(choice.value).strip()
    if choice.kind == "heads":
        return parse_heads(value, n_layers, n_heads)
    if choice.kind == "layer":
        try:
            layer = int(value.upper().lstrip("L"))
        except ValueError:
            raise ConfigError(f"layer '{value}': expected a layer number 0..{n_layers - 1}") from None
        return layer_heads(layer, n_layers, n_heads)
    if choice.kind == "top":
        try:
            n = int(value)
        except ValueError:
            raise ConfigError(f"top '{value}': expected a number of heads, 1..{n_layers * n_heads}") from None
        if ranking is None:
            raise ConfigError("top-N: this run has no head ranking to take the top of")
        return top_ranked(ranking, min(n, n_layers * n_heads))
    return matching_heads(results, value, top_k, tags)


def verify(pair: Any, dataset: Any, choice: HeadChoice, corpus: Sequence[str], texts_per_head: int = 10,
           top_k: int = 3, ranking: Any = None, tags: Mapping[str, str | None] | None = None,
           cache: Any = None, images_key: str | None = None, maps_per_text: int = 4, map_heads: int = 4,
           ln_post_split: str = DEFAULT_LN_POST_SPLIT.value, use_cache: bool = True,
           progress: Callable[[str], None] | None = None):
    """Choose the heads, explain them (TextSpan before/after, cached), ablate them and map their moved texts.

    Returns (ablation, result): result is None when the choice selects nothing (a query matching no head's
    texts: `ablation.how` says so, nothing is ablated)."""
    from clipsvd.analysis.ablation import check_method, run_ablation, tower_shape
    from clipsvd.analysis.run_pair import run_textspan

    say = progress or (lambda message: None)
    check_method(pair.method)
    n_layers, n_heads = tower_shape(pair.before)
    layers = textspan_layers(choice, n_layers, n_heads, ranking)
    say(f"TextSpan of layers {', '.join(map(str, layers))}, before and after")
    results = run_textspan(pair, dataset, list(corpus), layers, texts_per_head, cache, images_key,
                           ln_post_split=ln_post_split)
    ablation = resolve_choice(choice, n_layers, n_heads, ranking, results, top_k, tags)
    if ablation.empty:
        return ablation, None
    result = run_ablation(pair, dataset, ablation, results, top_k=top_k, ln_post_split=ln_post_split,
                          images_key=images_key, use_cache=use_cache, progress=say, maps_per_text=maps_per_text,
                          map_heads=map_heads)
    return ablation, result
