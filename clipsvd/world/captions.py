"""Captions from a small grammar: every caption is true of its scene, and most have paraphrases.

A group becomes a noun phrase "<count> <size> <fill> <colour> <shape>" with each word drawn from
its synonyms and some attributes left out at random (so that "a star" and "a red shape" are
familiar phrases too, as zero-shot prompts need); a single object may get its position. Groups
are joined with "and", and a few sentence frames vary the wording around them.
"""
from __future__ import annotations

import numpy as np

from clipsvd.world.factors import COLOURS, COUNTS, FILLS, POSITIONS, SHAPES, SIZES
from clipsvd.world.scenes import Group

FRAMES = ("{}", "{}", "a picture of {}", "an image of {}", "a scene with {}", "{} on a plain background")
GENERIC_NOUNS = (("shape", "shapes"), ("object", "objects"))


def indefinite_article(word: str) -> str:
    """"an" before a vowel-initial word ("an amber", "an orange"), else "a"; the world's words need no more rules."""
    return "an" if word[:1].lower() in ("a", "e", "i", "o", "u") else "a"


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def group_phrase(rng: np.random.Generator, group: Group, drop: float = 0.2) -> str:
    """One noun phrase for a group; each of size, fill and position is left out with probability
    `drop`, and at most one of shape and colour is (replaced by a generic noun or left unsaid)."""
    plural = group.count > 1
    shape = SHAPES[group.shape]
    words = []
    count = _pick(rng, COUNTS[group.count - 1].words)
    leave_out = rng.random()
    keep_colour = leave_out >= drop / 2
    keep_shape = leave_out < drop / 2 or leave_out >= drop
    if rng.random() >= drop:
        words.append(_pick(rng, SIZES[group.size].words))
    if group.fill != 0 and rng.random() >= drop or group.fill == 0 and rng.random() < 0.2:
        words.append(_pick(rng, FILLS[group.fill].words))
    if keep_colour:
        words.append(_pick(rng, COLOURS[group.colour].words))
    if keep_shape:
        k = int(rng.integers(len(shape.words)))
        words.append(shape.plurals[k] if plural else shape.words[k])
    else:
        words.append(_pick(rng, tuple(n[1] if plural else n[0] for n in GENERIC_NOUNS)))
    if count == "a":
        count = indefinite_article(words[0])
    phrase = " ".join([count, *words])
    if group.cell is not None and rng.random() >= drop:
        phrase += " " + _pick(rng, POSITIONS[group.cell].words)
    return phrase


def caption(rng: np.random.Generator, groups: list[Group], drop: float = 0.2) -> str:
    """A caption for a whole scene."""
    order = rng.permutation(len(groups))
    phrases = [group_phrase(rng, groups[i], drop) for i in order]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return _pick(rng, FRAMES).format(body)


def captions(rng: np.random.Generator, scenes: list[list[Group]], drop: float = 0.2) -> list[str]:
    return [caption(rng, groups, drop) for groups in scenes]
