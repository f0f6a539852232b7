"""The world's zero-shot prompt templates: one per classification task, shared by the world's datasets (their
default template) and the world CLIP's held-out checks, so both ask the model the same question."""
from __future__ import annotations

SHAPE_TEMPLATE = "a picture of a {}."
COLOUR_TEMPLATE = "a picture of a {} shape."
OBJECT_TEMPLATE = "a picture of a {}."
