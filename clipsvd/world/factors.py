"""The factors of the generated world and the words for them.

Every image of the world is a set of objects, each with a shape, a colour, a size, a fill and a
position; a group of identical objects also has a count. Each factor value has several words, so
captions can paraphrase ("a pair of tiny crimson stars" = "two small red stars"). The first word
of each list is the canonical one, used for class names and prompts.
"""
from __future__ import annotations

from dataclasses import dataclass

@dataclass(frozen=True)
class Value:
    """One value of a factor: its canonical name and the words captions may use for it."""

    name: str
    words: tuple[str, ...]
    plurals: tuple[str, ...] = ()  # shapes only, in the order of `words`


SHAPES = (
    Value("circle", ("circle", "disc", "round dot"), ("circles", "discs", "round dots")),
    Value("square", ("square", "box"), ("squares", "boxes")),
    Value("triangle", ("triangle",), ("triangles",)),
    Value("diamond", ("diamond", "rhombus"), ("diamonds", "rhombuses")),
    Value("star", ("star",), ("stars",)),
    Value("cross", ("cross", "plus sign"), ("crosses", "plus signs")),
    Value("heart", ("heart",), ("hearts",)),
    Value("crescent", ("crescent", "moon"), ("crescents", "moons")),
)

COLOURS = (
    Value("red", ("red", "crimson", "scarlet")),
    Value("orange", ("orange", "tangerine", "amber")),
    Value("yellow", ("yellow", "golden", "lemon")),
    Value("green", ("green", "emerald")),
    Value("cyan", ("cyan", "turquoise", "teal")),
    Value("blue", ("blue", "cobalt")),
    Value("purple", ("purple", "violet")),
    Value("pink", ("pink", "rose")),
)
# sRGB in 0..1, one per colour above; chosen far apart in hue so that 8 classes stay separable.
COLOUR_RGB = (
    (0.86, 0.15, 0.15),
    (0.96, 0.53, 0.08),
    (0.94, 0.84, 0.12),
    (0.16, 0.63, 0.24),
    (0.12, 0.75, 0.78),
    (0.14, 0.27, 0.84),
    (0.51, 0.20, 0.75),
    (0.96, 0.45, 0.73),
)

SIZES = (
    Value("small", ("small", "tiny", "little")),
    Value("medium", ("medium-sized", "mid-sized")),
    Value("large", ("large", "big", "huge")),
)
# Radius as a fraction of the image side (uniform within the range).
SIZE_RADIUS = ((0.095, 0.115), (0.145, 0.17), (0.21, 0.25))

FILLS = (
    Value("solid", ("solid", "filled")),
    Value("outline", ("outlined", "hollow")),
    Value("striped", ("striped", "stripy")),
)

COUNTS = (
    Value("one", ("a", "one", "a single")),
    Value("two", ("two", "a pair of")),
    Value("three", ("three", "a trio of")),
    Value("four", ("four",)),
)

# 3 x 3 grid of regions, row-major from the top left; the words are whole phrases.
POSITIONS = (
    Value("top left", ("at the top left", "in the top left corner", "in the upper left")),
    Value("top", ("at the top", "near the top edge", "at the top centre")),
    Value("top right", ("at the top right", "in the top right corner", "in the upper right")),
    Value("left", ("on the left", "at the left edge", "on the left side")),
    Value("centre", ("in the centre", "in the middle", "at the centre")),
    Value("right", ("on the right", "at the right edge", "on the right side")),
    Value("bottom left", ("at the bottom left", "in the bottom left corner", "in the lower left")),
    Value("bottom", ("at the bottom", "near the bottom edge", "at the bottom centre")),
    Value("bottom right", ("at the bottom right", "in the bottom right corner", "in the lower right")),
)

VALUES: dict[str, tuple[Value, ...]] = {
    "shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS, "count": COUNTS, "fill": FILLS,
}


def names(factor: str) -> list[str]:
    """Canonical value names of a factor, in label order."""
    return [v.name for v in VALUES[factor]]
