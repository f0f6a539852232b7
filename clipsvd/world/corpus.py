"""The world description corpus (corpus/world.txt): short descriptions, each tagged with the one factor
it describes, so TextSpan's choices for a head can be scored by how factor-specific they are.

The file holds `world_corpus_lines()`, one line each (rewrite it from them after changing a line here);
a test keeps the two identical.
"""
from __future__ import annotations

from clipsvd.world.captions import indefinite_article
from clipsvd.world.factors import COLOURS, POSITIONS, SHAPES

TAGS = ("shape", "colour", "size", "position", "count", "fill", "style")

_COLOUR_FRAMES = ("{article} {} object", "something {}", "{} colouring", "a bright {} shape", "{} paint", "a patch of {}")
_SHAPE_LINES = {
    "circle": ("a round shape", "a perfect circle", "a round disc", "a smooth curved outline with no corners",
               "a ball-like round form", "an object shaped like a coin"),
    "square": ("a square", "a boxy shape with four right angles", "straight edges and square corners",
               "an upright square block", "a shape like a tile", "four equal sides meeting at right angles"),
    "triangle": ("a triangle", "a shape with three corners", "a triangle pointing upwards",
                 "a pointed triangular shape", "a shape like a warning sign", "a pyramid-like outline"),
    "diamond": ("a diamond", "a rhombus standing on its tip", "a square turned on its corner",
                "a diamond shape like a playing-card suit", "a shape with four slanted sides", "a kite-like diamond"),
    "star": ("a star", "a five-pointed star", "a shape with spiky points", "a star like a sheriff's badge",
             "sharp points radiating outwards", "a twinkling star shape"),
    "cross": ("a cross", "a plus sign", "a shape with four straight arms", "a medical cross symbol",
              "two bars crossing at the centre", "a shape like an addition sign"),
    "heart": ("a heart", "a love heart", "two rounded lobes meeting in a point", "a valentine heart shape",
              "a shape like a heart symbol", "a heart with a pointed bottom"),
    "crescent": ("a crescent", "a crescent moon", "a thin curved sliver", "a moon shape",
                 "a shape like a banana curve", "a circle with a bite taken out"),
}
_SIZE_LINES = (
    "a tiny object", "a very small shape", "a little speck of a shape", "small shapes with lots of empty space",
    "a miniature object", "a shape much smaller than the picture", "a medium-sized object",
    "a mid-sized shape", "an object of moderate size", "a shape of ordinary size", "a large object",
    "a big shape filling much of the picture", "a huge shape", "an oversized object", "a shape that dominates the frame",
    "a bold large form",
)
_POSITION_FRAMES = ("an object {}", "something {}", "a shape placed {}")
_COUNT_LINES = (
    "a single object", "one shape alone", "just one thing", "an isolated shape", "two objects", "a pair of shapes",
    "two identical shapes side by side", "three objects", "a trio of shapes", "three identical things",
    "four objects", "several shapes", "many small shapes", "a group of repeated shapes", "two different kinds of shape",
    "a crowded scene of shapes",
)
_FILL_LINES = (
    "a solid filled shape", "a shape filled with flat colour", "an opaque solid object", "a fully coloured shape",
    "a hollow outline", "an outlined shape with an empty middle", "only the edge of a shape", "a thin line drawing",
    "a striped shape", "diagonal stripes", "a shape with a striped pattern", "candy-cane stripes",
    "alternating coloured bands", "a hatched pattern", "a ring-like border", "a shape with a see-through centre",
)
_STYLE_LINES = (
    "a flat vector graphic", "a plain light background", "a clean digital illustration", "a simple clip-art icon",
    "a stained microscope slide", "cells under a microscope", "a blurry, noisy micrograph",
    "a pink and purple histology stain", "a cell with a dark nucleus", "a pencil sketch on paper",
    "a hand-drawn doodle", "cross-hatched ink lines", "a grainy photo", "a soft blurred image",
)


def world_corpus_lines() -> list[str]:
    """Every line as "[factor] text", grouped by factor."""
    lines: list[str] = []
    for colour in COLOURS:
        lines += [f"[colour] {frame.format(word, article=indefinite_article(word))}" for word in colour.words
                  for frame in _COLOUR_FRAMES[:3]]
        lines += [f"[colour] {frame.format(colour.name)}" for frame in _COLOUR_FRAMES[3:]]
    for shape in SHAPES:
        lines += [f"[shape] {text}" for text in _SHAPE_LINES[shape.name]]
    lines += [f"[size] {text}" for text in _SIZE_LINES]
    for position in POSITIONS:
        lines += [f"[position] {frame.format(words)}" for frame, words in zip(_POSITION_FRAMES, position.words)]
    lines += [f"[count] {text}" for text in _COUNT_LINES]
    lines += [f"[fill] {text}" for text in _FILL_LINES]
    lines += [f"[style] {text}" for text in _STYLE_LINES]
    seen: dict[str, None] = {}
    for line in lines:
        seen.setdefault(line, None)
    return list(seen)
