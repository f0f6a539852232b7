"""The shipped world CLIP knows its world: the issue's claims, measured on the shipped weights in seconds."""
from __future__ import annotations

import shutil

import pytest

from clipsvd.checksums import sha256_of
from clipsvd.errors import CheckpointError
from clipsvd.models import ModelSpec, load_model
from clipsvd.models import world_weights as world_model
from clipsvd.worldclip.evaluation import ablation_table, factor_heads, zero_shot_by_style


@pytest.fixture(scope="module")
def world_clip():
    return load_model(ModelSpec.default(), "cpu")


@pytest.fixture(scope="module")
def zero_shot(world_clip):
    return zero_shot_by_style(world_clip, styles=("clean", "microscopy")).set_index(["task", "style"])["accuracy"]


def test_the_default_model_is_the_shipped_world_clip(world_clip):
    assert "pretrained on the generated world" in world_clip.label and "not OpenAI" in world_clip.label
    assert world_model.WORLD_CHECKPOINT_SHA256 == sha256_of(world_model.WORLD_CHECKPOINT)


def test_a_corrupted_checkpoint_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "clipsvd-world.safetensors"
    shutil.copy(world_model.WORLD_CHECKPOINT, copy)
    with open(copy, "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\x00" * 8)
    monkeypatch.setattr(world_model, "WORLD_CHECKPOINT", copy)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        world_model.verified_world_checkpoint()


def test_zero_shot_on_clean_single_objects(zero_shot):
    assert zero_shot[("colour", "clean")] >= 90  # chance 12.5 %
    assert zero_shot[("shape", "clean")] >= 70


def test_the_microscopy_style_is_a_real_shift(zero_shot):
    for task in ("shape", "colour"):
        assert zero_shot[(task, "clean")] - zero_shot[(task, "microscopy")] >= 10


@pytest.fixture(scope="module")
def topics(world_clip):
    return factor_heads(world_clip)[0]


def test_textspan_finds_factor_specific_heads(topics):
    specific = topics[topics.share >= 0.8]
    assert len(specific) >= 2, topics[["layer", "head", "topic", "share", "texts"]]


def test_ablating_the_most_shape_specific_head_costs_shape_not_colour(world_clip, topics):
    """TextSpan's intervention check. (Colour is carried redundantly: no single colour head's ablation moves
    colour accuracy off 100 %, see README; the check holds for shape.)"""
    drops = ablation_table(world_clip).pivot_table(index=["layer", "head"], columns="task", values="drop")
    shape_head = topics[topics.topic == "shape"].iloc[0]
    shape = drops.loc[(int(shape_head["layer"]), int(shape_head["head"]))]
    assert shape["shape"] > 0.01 and shape["shape"] >= 2 * max(shape["colour"], 0.0), drops
