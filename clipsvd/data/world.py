"""Classification datasets drawn from the world, in every style, available like the built-ins.

- ``world-shape-<style>``: 8 shapes (colour, size, fill and position vary);
- ``world-colour-<style>``: 8 colours (shape, size, fill and position vary);
- ``world-object-<style>``: the 64 colour x shape combinations, ordered so that CoOp's base/novel
  split (first half of the labels = base) puts each shape with four colours in base and with the
  four others in novel: novel classes are combinations never shown during adaptation, made of
  shapes and colours that were.

Images are single objects at 64 px, rendered deterministically from a seed per split, so every
run (and every machine) sees the same pixels.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from clipsvd.data.dataset import ClassificationDataset
from clipsvd.data.splits import ArrayImageSplit
from clipsvd.errors import DataError
from clipsvd.world.factors import COLOURS, SHAPES
from clipsvd.world.prompts import COLOUR_TEMPLATE, OBJECT_TEMPLATE, SHAPE_TEMPLATE
from clipsvd.world.render import STYLES, render, to_uint8
from clipsvd.world.scenes import single_objects

TASKS = ("shape", "colour", "object")
IMAGES_PER_CLASS = {"shape": (160, 40, 100), "colour": (160, 40, 100), "object": (24, 8, 16)}  # train/val/test
SPLIT_SEEDS = {"train": 11, "val": 12, "test": 13}
STYLE_WORDS = {
    "clean": "flat colours on a light background (the style the world CLIP was pretrained on)",
    "microscopy": "cell-like objects on a stained, blurred, noisy slide (a domain shift)",
    "sketch": "hand-drawn outlines and hatching on paper (a domain shift)",
}


def world_dataset_names() -> list[str]:
    return [f"world-{task}-{style}" for task in TASKS for style in STYLES]


def object_classes() -> list[tuple[int, int]]:
    """(shape, colour) per label: the 32 base combinations ((s + c) even) first, then the 32 novel ones."""
    pairs = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS))]
    return [p for p in pairs if sum(p) % 2 == 0] + [p for p in pairs if sum(p) % 2 == 1]


def _classes(task: str) -> tuple[list[str], list[tuple[int, int]] | None, str]:
    if task == "shape":
        return [s.name for s in SHAPES], None, SHAPE_TEMPLATE
    if task == "colour":
        return [c.name for c in COLOURS], None, COLOUR_TEMPLATE
    pairs = object_classes()
    return [f"{COLOURS[c].name} {SHAPES[s].name}" for s, c in pairs], pairs, OBJECT_TEMPLATE


@lru_cache(maxsize=16)
def _split_arrays(task: str, style: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = _render_split(task, style, split, size, masks=False)
    return images, labels


def _split_factors(task: str, split: str):
    """The seeded generator, labels and (shape, colour) of every object of a split, in image order."""
    n_classes = len(_classes(task)[0])
    per_class = IMAGES_PER_CLASS[task][("train", "val", "test").index(split)]
    seed = SPLIT_SEEDS[split] * 1000 + TASKS.index(task)  # the same objects in every style
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    rng.shuffle(labels)
    n = len(labels)
    if task == "shape":
        shapes, colours = labels, rng.integers(0, len(COLOURS), n)
    elif task == "colour":
        shapes, colours = rng.integers(0, len(SHAPES), n), labels
    else:
        pairs = np.asarray(object_classes())[labels]
        shapes, colours = pairs[:, 0], pairs[:, 1]
    return seed, rng, labels, shapes, colours


def world_factors(name: str, split: str = "test") -> dict[str, np.ndarray]:
    """{"shape": ..., "colour": ...}: each object's shape and colour index (into SHAPES, COLOURS) of a world
    dataset's split, in its image order (no rendering): the ground truth a per-factor ablation is scored on."""
    task, _ = _parse(name)
    if split not in SPLIT_SEEDS:
        raise DataError(f"split {split!r}: expected one of {', '.join(SPLIT_SEEDS)}")
    _, _, _, shapes, colours = _split_factors(task, split)
    return {"shape": np.asarray(shapes), "colour": np.asarray(colours)}


def _render_split(task: str, style: str, split: str, size: int, masks: bool):
    seed, rng, labels, shapes, colours = _split_factors(task, split)
    scenes = single_objects(rng, shapes, colours)
    drawn = render(scenes, style, size, seed=seed, return_masks=masks)
    images = to_uint8(drawn[0] if masks else drawn)
    images.setflags(write=False)
    return images, labels, (drawn[1].numpy() if masks else None)


def world_masks(name: str, split: str = "test", size: int = 64) -> np.ndarray:
    """Object masks (N, size, size) bool of a world dataset's split, in its image order: the renderer's own
    geometry, redrawn from the same seed (the images are not changed by asking)."""
    task, style = _parse(name)
    if split not in SPLIT_SEEDS:
        raise DataError(f"split {split!r}: expected one of {', '.join(SPLIT_SEEDS)}")
    return _split_masks(task, style, split, size)


@lru_cache(maxsize=4)
def _split_masks(task: str, style: str, split: str, size: int) -> np.ndarray:
    """Rendered once per process (a test split takes seconds): every ablation of a run asks again."""
    masks = _render_split(task, style, split, size, masks=True)[2]
    masks.setflags(write=False)
    return masks


def _parse(name: str) -> tuple[str, str]:
    parts = name.split("-")
    if len(parts) != 3 or parts[0] != "world" or parts[1] not in TASKS or parts[2] not in STYLES:
        raise DataError(f"unknown world dataset {name!r}; expected world-<task>-<style> with task in "
                        f"{', '.join(TASKS)} and style in {', '.join(STYLES)}")
    return parts[1], parts[2]


def describe_world(name: str, size: int = 64) -> str:
    """One line on a world dataset (no rendering needed)."""
    task, style = _parse(name)
    n_classes = len(_classes(task)[0])
    train, val, test = IMAGES_PER_CLASS[task]
    return (f"Generated world, {task} task: {n_classes} classes, {STYLE_WORDS[style]}; {train}/{val}/{test} "
            f"train/val/test single objects per class at {size} px, rendered from fixed seeds. Synthetic, "
            "not biomedical images: a world whose truth is known.")


def load_world(name: str, template: str | None = None, size: int = 64) -> ClassificationDataset:
    """`world-<task>-<style>`, e.g. world-shape-microscopy."""
    task, style = _parse(name)
    classnames, _, default_template = _classes(task)
    splits = {}
    for split in ("train", "val", "test"):
        images, labels = _split_arrays(task, style, split, size)
        splits[split] = ArrayImageSplit(images, labels.tolist(), f"{name}:{split}")
    return ClassificationDataset(
        name=name, classnames=classnames, template=template or default_template,
        train=splits["train"], val=splits["val"], test=splits["test"], description=describe_world(name, size),
    )
