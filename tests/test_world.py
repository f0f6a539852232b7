"""The generated world: determinism, truthful captions, datasets, corpus, pretraining entry point."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipsvd.analysis.corpus import corpus_tags
from clipsvd.analysis.head_topics import ablation_effects, head_topics, mean_ablated
from clipsvd.data import base_novel, load_dataset
from clipsvd.data.spec import DatasetSpec
from clipsvd.data.world import load_world, object_classes, world_dataset_names
from clipsvd.errors import ConfigError, DataError
from clipsvd.world.captions import caption
from clipsvd.world.corpus import TAGS, world_corpus_lines
from clipsvd.world.factors import COLOUR_RGB, COLOURS, COUNTS, POSITIONS, SHAPES, SIZES
from clipsvd.world.render import STYLES, render, to_uint8
from clipsvd.world.scenes import Group, sample_scenes, single_objects, to_batch


def test_rendering_is_deterministic_and_seeded():
    a = render(sample_scenes(np.random.default_rng(3), 16), "microscopy", seed=5)
    b = render(sample_scenes(np.random.default_rng(3), 16), "microscopy", seed=5)
    c = render(sample_scenes(np.random.default_rng(4), 16), "microscopy", seed=5)
    assert a.shape == (16, 3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert 0 <= float(a.min()) and float(a.max()) <= 1


def test_clean_objects_have_their_colour_and_styles_shift_it():
    rng = np.random.default_rng(0)
    scenes = to_batch(rng, [[Group(0, c, 2, 0, 1, 4)] for c in range(len(COLOURS))])  # large solid circles, centre
    clean = render(scenes, "clean")[:, :, 32, 32]  # the centre pixel is inside every circle
    assert torch.allclose(clean, torch.tensor(COLOUR_RGB), atol=0.12)
    microscopy = render(scenes, "microscopy")[:, :, 32, 32]
    assert (microscopy - torch.tensor(COLOUR_RGB)).abs().mean() > 0.1  # the shift is real
    for style in STYLES:  # colours stay distinguishable in every style: nearest palette colour per image
        assert not torch.equal(render(scenes, style)[0], render(scenes, style)[1])


def test_shapes_differ_in_every_style():
    rng = np.random.default_rng(1)
    scenes = single_objects(rng, np.arange(len(SHAPES)), np.zeros(len(SHAPES), int), sizes=np.full(len(SHAPES), 2))
    masks = render(scenes, "clean").mean(1) < 0.7  # object pixels are darker than the light background
    areas = masks.flatten(1).sum(1)
    assert (areas > 100).all(), areas  # every shape is drawn
    with pytest.raises(ValueError, match="style 'photo' is unknown"):
        render(scenes, "photo")


def test_captions_tell_the_truth():
    rng = np.random.default_rng(2)
    for _ in range(200):
        scenes = sample_scenes(rng, 1, single_prob=0.5)
        groups = scenes.groups[0]
        text = caption(rng, groups, drop=0.0)
        for g in groups:
            shape_words = SHAPES[g.shape].plurals if g.count > 1 else SHAPES[g.shape].words
            assert any(w in text for w in shape_words), text
            assert any(w in text for w in COLOURS[g.colour].words), text
            assert any(w in text for w in SIZES[g.size].words), text
            if g.count > 1:
                assert any(w in text for w in COUNTS[g.count - 1].words), text
            if g.cell is not None:
                assert any(w in text for w in POSITIONS[g.cell].words), text
        assert int(scenes.present.sum()) == sum(g.count for g in groups)


def test_world_datasets_are_builtins_with_known_splits():
    names = world_dataset_names()
    assert {"world-shape-microscopy", "world-colour-sketch", "world-object-clean"} <= set(names)
    shape = load_dataset(DatasetSpec("builtin", "world-shape-microscopy"))
    assert shape.classnames == [s.name for s in SHAPES]
    assert set(shape.class_counts("train").values()) == {160}
    clean = load_world("world-shape-clean")
    assert clean.test.labels == shape.test.labels  # the same objects, another style
    image, _ = shape.test[0]
    assert image.size == (64, 64) and image.mode == "RGB"
    with pytest.raises(DataError, match="world-<task>-<style>"):
        load_world("world-texture-clean")
    with pytest.raises(DataError, match="generated, not read from files"):
        load_dataset(DatasetSpec("builtin", "world-shape-clean", root="/tmp"))


def test_object_task_novel_classes_are_unseen_combinations_of_seen_factors():
    pairs = object_classes()
    assert len(pairs) == len(set(pairs)) == len(SHAPES) * len(COLOURS)
    base, novel = base_novel(load_world("world-object-clean"))
    base_pairs, novel_pairs = set(pairs[:32]), set(pairs[32:])
    assert not base_pairs & novel_pairs
    for s in range(len(SHAPES)):  # every shape and every colour is seen in base
        assert any(p[0] == s for p in base_pairs) and any(p[0] == s for p in novel_pairs)
    for c in range(len(COLOURS)):
        assert any(p[1] == c for p in base_pairs) and any(p[1] == c for p in novel_pairs)
    assert base.classnames[0] == f"{COLOURS[pairs[0][1]].name} {SHAPES[pairs[0][0]].name}"
    assert len(base.classnames) == len(novel.classnames) == 32


def test_world_corpus_file_matches_its_generator_and_is_tagged():
    tags = corpus_tags("world")
    expected = [line.split("] ", 1) for line in world_corpus_lines()]
    assert list(tags.items()) == [(text, tag.lstrip("[")) for tag, text in expected]
    assert set(tags.values()) == set(TAGS)
    assert sum(tag == "shape" for tag in tags.values()) >= len(SHAPES) * 3


def _planted_heads(n: int = 400, d: int = 8, seed: int = 0):
    """Two heads of one layer: head 0 carries the colour label along e0, head 1 the shape label along e1."""
    g = torch.Generator().manual_seed(seed)
    colour, shape = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    heads = torch.zeros(n, 1, 2, d)
    heads[:, 0, 0, 0] = colour.float() * 2 - 1
    heads[:, 0, 1, 1] = shape.float() * 2 - 1
    rest = 0.05 * torch.randn(n, d, generator=g)
    texts = torch.eye(d)
    tasks = {"colour": (torch.stack([-texts[0], texts[0]]), colour.numpy()),
             "shape": (torch.stack([-texts[1], texts[1]]), shape.numpy())}
    return heads, heads.sum((1, 2)) + rest, tasks


def test_mean_ablation_removes_what_a_head_carries():
    heads, embedding, tasks = _planted_heads()
    effects = ablation_effects(heads, embedding, (5,), tasks).set_index(["head", "task"])["drop"]
    assert effects[(0, "colour")] > 0.3 and abs(effects[(0, "shape")]) < 0.05
    assert effects[(1, "shape")] > 0.3 and abs(effects[(1, "colour")]) < 0.05
    ablated = mean_ablated(heads, embedding, (5,), [(5, 0)])
    assert torch.allclose(ablated[:, 0], embedding[:, 0] - heads[:, 0, 0, 0] + heads[:, 0, 0, 0].mean(), atol=1e-6)
    with pytest.raises(ConfigError, match=r"no head \(4, 0\)"):
        mean_ablated(heads, embedding, (5,), [(4, 0)])


def test_head_topics_scores_the_majority_tag():
    from clipsvd.analysis.textspan import HeadTexts, TextSpanResult

    texts = ["a red object", "crimson colouring", "something blue", "a star", "a tiny object"]
    tags = {"a red object": "colour", "crimson colouring": "colour", "something blue": "colour",
            "a star": "shape", "a tiny object": "size"}
    heads = {(3, 0): HeadTexts(3, 0, [0, 1, 2, 3, 4], texts, [0.2] * 5, [0.2] * 5, 1.0),
             (3, 1): HeadTexts(3, 1, [3, 4], ["a star", "a tiny object"], [0.1] * 2, [0.1] * 2, 0.5)}
    result = TextSpanResult((3,), texts, heads, torch.zeros(1, 1, 2, 4), torch.zeros(5, 4))
    frame = head_topics(result, tags, top_k=5).set_index("head")
    assert frame.loc[0, "topic"] == "colour" and frame.loc[0, "share"] == pytest.approx(0.6)
    assert frame.loc[1, "share"] == pytest.approx(0.5)


def test_pretrain_world_writes_a_loadable_checkpoint(tmp_path):
    from clipsvd.models import ModelSpec, load_model
    from clipsvd.worldclip.config import PretrainConfig
    from clipsvd.worldclip.pretrain import pretrain_world

    out = tmp_path / "w.safetensors"
    _, history = pretrain_world(PretrainConfig(steps=2, batch_size=8, warmup=1, eval_every=2, device="cpu"), out)
    assert out.is_file() and out.with_suffix(".jsonl").is_file()
    assert [r["step"] for r in history if "shape_acc" in r] == [0, 2]
    loaded = load_model(ModelSpec("clipsvd-world", str(out)), "cpu")
    assert type(loaded.model.visual.conv1).__name__ == "ConvStem"
    again, _ = pretrain_world(PretrainConfig(steps=0, eval_every=1, device="cpu", init_from=str(out)),
                              tmp_path / "again.safetensors")  # a second stage starts from the first's weights
    assert torch.equal(again.visual.proj.half(), loaded.model.visual.proj.half().cpu())
    assert to_uint8(render(sample_scenes(np.random.default_rng(0), 2), "clean")).shape == (2, 64, 64, 3)


def test_the_generator_imports_only_itself_and_the_leaf_modules():
    """clipsvd.world sits low in the house: data and the world CLIP build on it, never the reverse (a fresh process,
    so modules other tests imported do not hide an import)."""
    root = Path(__file__).resolve().parents[1]
    code = ("import importlib, pkgutil, sys, clipsvd.world as w\n"
            "for m in pkgutil.iter_modules(w.__path__): importlib.import_module('clipsvd.world.' + m.name)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('clipsvd'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert {"clipsvd.world.render", "clipsvd.world.prompts", "clipsvd.world.corpus"} <= loaded
    leaves = {"clipsvd", "clipsvd.choices", "clipsvd.formatting", "clipsvd.resources", "clipsvd.checksums",
              "clipsvd.errors"}
    assert sorted(m for m in loaded if m not in leaves and not m.startswith("clipsvd.world.")
                  and m != "clipsvd.world") == []
