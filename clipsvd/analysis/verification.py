"""Verify a run's explanations in one call: choose heads, mean-ablate them before and after fine-tuning, and
see where on the image they write the texts that entered or left their explanation.

What the Verify page, the report and `clipsvd ablate` share: the choice of heads (top-N of the weight
ranking, a text query, a hand-picked list, a whole layer), the TextSpan texts the ablation is scored on, the
world's ground truth (object masks and factor labels of the analysed images, indexed by the split's original
rows, so a capped test subset is scored against its own objects), and the patch maps of the moved texts,
before and after on one colour scale. Everything ends in an `AblationResult` cached in the run folder.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT
from clipsvd.errors import ConfigError, DataError

FACTORS = ("shape", "colour")
CHOICES = ("top", "match", "heads", "layer")  # how heads are chosen, also the URL parameter names
CHOICE_TITLES = {"top": "top-N of the Heads ranking", "match": "heads whose texts match a query",
                 "heads": "a hand-picked list", "layer": "a whole layer"}
THUMBNAIL_PX = 128  # images kept with cached maps (report, page) are at most this wide


# ----- ground truth of the world ------------------------------------------------------------------------

@dataclass
class WorldTruth:
    """The analysed test images' object masks (N, H, W) bool and factor labels {"shape", "colour"} (N,)."""

    masks: np.ndarray
    factors: dict[str, np.ndarray]


def world_dataset_name(dataset: Any) -> str | None:
    """The world dataset a dataset was drawn from (base/novel or capped subsets keep the name's start)."""
    from clipsvd.world.datasets import world_dataset_names

    name = str(getattr(dataset, "name", ""))
    return next((world for world in world_dataset_names() if name == world or name.startswith(world + ":")
                 or name.startswith(world + " ")), None)


def world_truth(dataset: Any) -> WorldTruth | None:
    """Masks and factors of `dataset.test` when it is a world dataset (None otherwise), each row of the split
    (a capped or class-filtered subset) matched to its object by `ArrayImageSplit.rows`, the original position."""
    from clipsvd.world.datasets import world_factors, world_masks

    name = world_dataset_name(dataset)
    if name is None:
        return None
    rows = getattr(dataset.test, "rows", None)
    if rows is None:
        raise DataError(f"{name}: its test images carry no original positions; cannot match them to their objects")
    masks, factors = world_masks(name, "test"), world_factors(name, "test")
    rows = np.asarray(rows, dtype=int)
    if len(rows) and rows.max() >= len(masks):
        raise DataError(f"{name}: test row {rows.max()} beyond the {len(masks)} rendered objects")
    return WorldTruth(masks[rows], {factor: values[rows] for factor, values in factors.items()})


def masks_at(masks: np.ndarray, size: int) -> np.ndarray:
    """Masks resized (nearest) to a model's input size, so they tile its patch grid as its patches tile the input."""
    if masks.shape[1:] == (size, size):
        return masks
    resized = F.interpolate(torch.as_tensor(masks)[:, None].float(), size=(size, size), mode="nearest")
    return resized[:, 0].numpy() > 0.5


def factor_prompts() -> dict[str, list[str]]:
    """The world's zero-shot prompts per factor, in label order (what shape and colour accuracy use)."""
    from clipsvd.world.factors import COLOURS, SHAPES
    from clipsvd.world.zeroshot import COLOUR_TEMPLATE, SHAPE_TEMPLATE

    return {"shape": [SHAPE_TEMPLATE.format(s.name) for s in SHAPES],
            "colour": [COLOUR_TEMPLATE.format(c.name) for c in COLOURS]}


# ----- maps of the texts that entered or left ---------------------------------------------------------

@dataclass
class TextMaps:
    """One text that entered or left a head's first k texts: the images the head writes most along it, and
    each image's per-patch contribution along the text before and after, on one colour scale (`limit`)."""

    layer: int
    head: int
    text: str
    mark: str  # "entered", "left", or "kept" (no text of the head moved: its first text)
    images: list[np.ndarray]  # (H, W, 3) uint8, as the model saw them (its input size, at most THUMBNAIL_PX)
    labels: list[str]
    before: np.ndarray  # (k, rows, cols)
    after: np.ndarray
    limit: float
    chosen_by: str  # which model's contributions picked the images

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.before.shape[1:])

    def grid_text(self) -> str:
        return f"{self.grid[0]} × {self.grid[1]} patch grid"

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "head": self.head, "text": self.text, "mark": self.mark,
                "images": [_png_text(image) for image in self.images], "labels": self.labels,
                "before": self.before.tolist(), "after": self.after.tolist(), "limit": self.limit,
                "chosen_by": self.chosen_by}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TextMaps":
        return cls(int(data["layer"]), int(data["head"]), str(data["text"]), str(data["mark"]),
                   [_png_array(text) for text in data["images"]], list(data["labels"]),
                   np.asarray(data["before"], dtype=float), np.asarray(data["after"], dtype=float),
                   float(data["limit"]), str(data.get("chosen_by", "")))


def _png_text(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _png_array(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def moved_texts(before: Any, after: Any, layer: int, head: int, k: int) -> list[tuple[str, str]]:
    """(text, "entered"|"left") for the texts that entered or left a head's first k TextSpan texts."""
    from clipsvd.analysis.explanation_shift import head_shift

    shift = head_shift(before.head(layer, head), after.head(layer, head), before.text_embeddings, before.corpus, k)
    return [(text, "entered") for text in shift.entered] + [(text, "left") for text in shift.left]


def _input_images(pair: Any, dataset: Any, indices: Sequence[int]) -> tuple[torch.Tensor, list[np.ndarray]]:
    transform = pair.before.eval_transform()
    pictures = [dataset.test.load_image(int(i)).convert("RGB") for i in indices]
    size = pair.before.image_size
    shown = [np.asarray(p.resize((min(size, THUMBNAIL_PX),) * 2, Image.BILINEAR)) for p in pictures]
    return torch.stack([transform(p) for p in pictures]), shown


def text_maps(pair: Any, dataset: Any, results: Sequence[Any], layer: int, head: int, text: str, mark: str,
              k: int = 4, ln_post_split: str = DEFAULT_LN_POST_SPLIT.value) -> TextMaps:
    """The k images (of the TextSpan images `dataset`) the head writes most along `text` — by the pretrained
    model for a text that left, by the fine-tuned one otherwise — with both models' patch maps."""
    from clipsvd.analysis.spatial import normalised_pair, patch_maps
    from clipsvd.analysis.textspan import top_images_for_text

    before, after = results
    chooser = before if mark == "left" else after
    if len(dataset.test) != chooser.contributions.shape[0]:
        raise ConfigError(f"maps: {len(dataset.test)} images given, TextSpan ran on {chooser.contributions.shape[0]}")
    if text not in chooser.corpus:
        raise ConfigError(f"maps: '{text}' is not in the corpus TextSpan used")
    index = chooser.corpus.index(text)
    chosen = top_images_for_text(chooser.contributions_of(layer, head), chooser.text_embeddings[index], k)
    x, shown = _input_images(pair, dataset, chosen)
    maps = [patch_maps(model, x, layer, head, torch.as_tensor(result.text_embeddings[index]).float(),
                       ln_post_split=ln_post_split).maps[:, 0]
            for model, result in ((pair.before, before), (pair.method, after))]
    b, a, limit = normalised_pair(*maps)
    return TextMaps(layer, head, text, mark, shown, [dataset.classnames[dataset.test.labels[int(i)]] for i in chosen],
                    b.numpy(), a.numpy(), limit, "pretrained" if mark == "left" else "fine-tuned")


def ground_truth_scores(pair: Any, dataset: Any, results: Sequence[Any], heads: Sequence[tuple[int, int]],
                        truth: WorldTruth, ln_post_split: str = DEFAULT_LN_POST_SPLIT.value,
                        batch_size: int = 64) -> list[dict[str, Any]]:
    """Per head and model: pointing game and mass in mask of its map along its first TextSpan text over every
    analysed image, against chance (the objects' area share)."""
    from clipsvd.analysis.run_pair import image_batches
    from clipsvd.analysis.spatial import patch_maps, score_maps
    from clipsvd.analysis.textspan import _image_tensor

    x = torch.cat([_image_tensor(batch) for batch in image_batches(dataset, pair.before, batch_size)])
    masks = masks_at(truth.masks, pair.before.image_size)
    rows = []
    for name, model, result in (("pretrained", pair.before, results[0]), ("fine-tuned", pair.method, results[1])):
        for layer, head in heads:
            if (layer, head) not in result.heads:
                continue
            first = result.heads[(layer, head)].texts[0]
            direction = torch.as_tensor(result.text_embeddings[result.corpus.index(first)]).float()
            maps = patch_maps(model, x, layer, head, direction, batch_size, ln_post_split)
            score = score_maps(maps.maps[:, 0], masks)
            rows.append({"model": name, "head": f"L{layer}.H{head}", "text": first, "grid": maps.grid_text(),
                         **score.as_dict()})
    return rows


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
