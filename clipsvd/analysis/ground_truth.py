"""What an ablation is checked against: the world's ground truth (object masks and factor labels of the analysed
images, indexed by the split's original rows, so a capped test subset is scored against its own objects), the
pointing game of each head's patch maps, and the patch maps of the texts that entered or left a head's
explanation, before and after on one colour scale. `ablation.run_ablation` uses these; `verification` chooses the
heads and runs the whole check."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT
from clipsvd.errors import ConfigError, DataError

FACTORS = ("shape", "colour")
THUMBNAIL_PX = 128  # images kept with cached maps (report, page) are at most this wide


# ----- ground truth of the world ------------------------------------------------------------------------

@dataclass
class WorldTruth:
    """The analysed test images' object masks (N, H, W) bool and factor labels {"shape", "colour"} (N,)."""

    masks: np.ndarray
    factors: dict[str, np.ndarray]


def world_dataset_name(dataset: Any) -> str | None:
    """The world dataset a dataset was drawn from (base/novel or capped subsets keep the name's start)."""
    from clipsvd.data.world import world_dataset_names

    name = str(getattr(dataset, "name", ""))
    return next((world for world in world_dataset_names() if name == world or name.startswith(world + ":")
                 or name.startswith(world + " ")), None)


def world_truth(dataset: Any) -> WorldTruth | None:
    """Masks and factors of `dataset.test` when it is a world dataset (None otherwise), each row of the split
    (a capped or class-filtered subset) matched to its object by `ArrayImageSplit.rows`, the original position."""
    from clipsvd.data.world import world_factors, world_masks

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
    from clipsvd.world.prompts import COLOUR_TEMPLATE, SHAPE_TEMPLATE

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
