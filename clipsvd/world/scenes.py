"""Scenes of the world: which objects an image holds, sampled deterministically from a seed.

A scene is a list of groups; a group is `count` identical objects (same shape, colour, size and
fill) placed in distinct cells of a 3 x 3 grid, so "two red stars" is a true statement about the
picture and "at the top left" is only said of a group with one object. The arrays of a
`SceneBatch` are what the renderer draws; the groups are what captions and labels are made from.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from clipsvd.world.factors import COLOUR_RGB, COLOURS, FILLS, SHAPES, SIZE_RADIUS, SIZES

GRID = 3
MAX_OBJECTS = 4
ROTATION_JITTER = 0.2  # radians; small, so a square never turns into a diamond
COLOUR_JITTER = 0.035


@dataclass(frozen=True)
class Group:
    """`count` identical objects; `cell` is their grid cell when count == 1 (row-major 0..8), else None."""

    shape: int
    colour: int
    size: int
    fill: int
    count: int
    cell: int | None


@dataclass
class SceneBatch:
    """Objects of B images, padded to O objects: `present` marks the real ones."""

    shape: np.ndarray  # (B, O) int
    fill: np.ndarray  # (B, O) int
    rgb: np.ndarray  # (B, O, 3) float in 0..1, jittered
    radius: np.ndarray  # (B, O) fraction of the image side
    centre: np.ndarray  # (B, O, 2) x, y as fractions of the image side
    rotation: np.ndarray  # (B, O) radians
    present: np.ndarray  # (B, O) bool
    groups: list[list[Group]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.shape)


def _place(rng: np.random.Generator, groups: list[Group]) -> list[tuple[Group, float, float, float]]:
    """(group, cx, cy, radius) for every object; each object gets its own grid cell."""
    n_objects = sum(g.count for g in groups)
    free = [c for c in rng.permutation(GRID * GRID) if c not in {g.cell for g in groups}]
    objects = []
    for g in groups:
        cells = [g.cell] if g.cell is not None else [free.pop() for _ in range(g.count)]
        lo, hi = SIZE_RADIUS[g.size]
        radius = float(rng.uniform(lo, hi))
        for cell in cells:
            row, col = divmod(int(cell), GRID)
            margin = max(0.0, 0.5 / GRID - radius * (0.6 if n_objects > 1 else 0.3))
            cx = (col + 0.5) / GRID + rng.uniform(-margin, margin)
            cy = (row + 0.5) / GRID + rng.uniform(-margin, margin)
            edge = radius + 0.02
            objects.append((g, float(np.clip(cx, edge, 1 - edge)), float(np.clip(cy, edge, 1 - edge)), radius))
    return objects


def to_batch(rng: np.random.Generator, scenes: list[list[Group]]) -> SceneBatch:
    """Lay out the groups of each scene as padded object arrays."""
    b = len(scenes)
    out = SceneBatch(
        shape=np.zeros((b, MAX_OBJECTS), np.int64), fill=np.zeros((b, MAX_OBJECTS), np.int64),
        rgb=np.zeros((b, MAX_OBJECTS, 3), np.float32), radius=np.full((b, MAX_OBJECTS), 0.1, np.float32),
        centre=np.full((b, MAX_OBJECTS, 2), 0.5, np.float32), rotation=np.zeros((b, MAX_OBJECTS), np.float32),
        present=np.zeros((b, MAX_OBJECTS), bool), groups=scenes,
    )
    palette = np.asarray(COLOUR_RGB, np.float32)
    for i, groups in enumerate(scenes):
        objects = _place(rng, groups)
        if len(objects) > MAX_OBJECTS:
            raise ValueError(f"scene {i} has {len(objects)} objects; at most {MAX_OBJECTS}")
        for j, (g, cx, cy, radius) in enumerate(objects):
            out.shape[i, j], out.fill[i, j] = g.shape, g.fill
            out.rgb[i, j] = np.clip(palette[g.colour] + rng.normal(0, COLOUR_JITTER, 3), 0, 1)
            out.radius[i, j], out.centre[i, j] = radius, (cx, cy)
            out.rotation[i, j] = rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)
            out.present[i, j] = True
    return out


def sample_scene(rng: np.random.Generator, single_prob: float = 0.5) -> list[Group]:
    """A random scene: with probability `single_prob` one object, else 1-2 groups of 1-3 objects."""
    n_shapes, n_colours, n_fills = len(SHAPES), len(COLOURS), len(FILLS)
    if rng.random() < single_prob:
        return [Group(int(rng.integers(n_shapes)), int(rng.integers(n_colours)), int(rng.integers(len(SIZES))),
                      int(rng.integers(n_fills)), 1, int(rng.integers(GRID * GRID)))]
    n_groups = int(rng.integers(1, 3))
    counts = [int(rng.integers(1, 4)) for _ in range(n_groups)]
    while sum(counts) > MAX_OBJECTS:
        counts[int(np.argmax(counts))] -= 1
    kinds: set[tuple[int, int]] = set()
    groups: list[Group] = []
    cells = list(rng.permutation(GRID * GRID))
    crowded = sum(counts) > 2
    for count in counts:
        while True:  # distinct (shape, colour) per group, so captions never name one object twice
            kind = (int(rng.integers(n_shapes)), int(rng.integers(n_colours)))
            if kind not in kinds:
                kinds.add(kind)
                break
        size = int(rng.integers(2 if crowded else 3))  # no large objects in crowded scenes
        cell = int(cells.pop()) if count == 1 else None
        groups.append(Group(kind[0], kind[1], size, int(rng.integers(n_fills)), count, cell))
    return groups


def sample_scenes(rng: np.random.Generator, n: int, single_prob: float = 0.5, shape_twins: float = 0.0) -> SceneBatch:
    """n scenes; a fraction `shape_twins` of them come in pairs, the second a copy of the first with every
    group's shape changed (the pretraining's hard negatives for shape)."""
    n_twins = int(n * shape_twins) // 2
    scenes = [sample_scene(rng, single_prob) for _ in range(n - n_twins)]
    for original in scenes[:n_twins]:
        scenes.append([replace(g, shape=int((g.shape + rng.integers(1, len(SHAPES))) % len(SHAPES))) for g in original])
    return to_batch(rng, scenes)


def single_objects(rng: np.random.Generator, shapes: np.ndarray, colours: np.ndarray,
                   sizes: np.ndarray | None = None) -> SceneBatch:
    """One object per image with the given shapes and colours; size, fill and cell drawn at random
    (size from medium and large unless given, so a class is visible at 64 px after augmentation)."""
    n = len(shapes)
    sizes = rng.integers(1, 3, n) if sizes is None else sizes
    scenes = [[Group(int(s), int(c), int(z), int(rng.integers(len(FILLS))), 1, int(rng.integers(GRID * GRID)))]
              for s, c, z in zip(shapes, colours, sizes)]
    return to_batch(rng, scenes)
