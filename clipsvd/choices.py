"""Choice lists shared by the library, the CLI and the dashboard, in a module that imports nothing heavy.

`clipsvd --help` builds every parser without importing torch; the modules that own these lists (presets,
model loading, dataset specs, figure export) import from here, so the CLI offers exactly what they accept.
A list that belongs to one config field lives on that field's metadata instead (`described(help, choices)`),
read back by `field_choices`, so the form, the CLI and `validate()` offer and accept the same words.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from clipsvd.errors import ConfigError

PROTOCOLS = ("few-shot", "base2novel", "cross-dataset", "domain-generalization")
# Train once on the source, evaluate unchanged on each target (CoOp/CoCoOp's Tables 2 and 3, CLIP-SVD's
# scripts/cross_dataset.sh and scripts/domain_generalization.sh): the protocols that take targets.
TRANSFER_PROTOCOLS = ("cross-dataset", "domain-generalization")
# The targets the official scripts evaluate when the user names none (CoOp's canonical dataset names): the other 10
# CoOp datasets, and ImageNet's four test-only variants.
OFFICIAL_TARGETS = {
    "cross-dataset": ("Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "FGVCAircraft",
                      "SUN397", "DescribableTextures", "EuroSAT", "UCF101"),
    "domain-generalization": ("ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"),
}
BACKBONES = ("natural", "biomedical", "world")  # whose presets apply; "world": the world CLIP on its datasets
DATASET_KINDS = ("builtin", "imagefolder", "coop", "biomedcoop", "medmnist")
# The CLI's and dashboard's default dataset: shapes in the microscopy-like style of the generated world,
# where the world CLIP's zero-shot accuracy drops and adaptation has something to do.
DEFAULT_DATASET = "world-shape-microscopy"
ACTIVATIONS = ("auto", "quickgelu", "gelu")
IMAGE_FORMATS = ("png", "svg", "pdf")
FIGURE_FORMATS = (*IMAGE_FORMATS, "html")
ANALYSES = ("sv", "heads", "textspan", "umap", "words")  # what `clipsvd analyze --what` can write
RUN_ACTIONS = ("list", "show", "delete", "export")


def described(text: str, choices: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A config field's metadata: its help, and its choice list where the value is one of a few words. Written once
    on the field, read by the CLI's flags, the dashboard's form, `validate()` and the `methods`/`config` commands."""
    return {"help": text, **({"choices": tuple(choices)} if choices is not None else {}), **extra}


def field_helps(cls: type) -> dict[str, str]:
    """Each field's help text over a dataclass and its bases; a subclass that only changes a default keeps its
    parent's help."""
    return {name: f.metadata["help"] for name, f in _fields_with(cls, "help").items()}


def field_choices(cls: type) -> dict[str, tuple[str, ...]]:
    """Each field's choice list over a dataclass and its bases (fields without one are left out)."""
    return {name: tuple(f.metadata["choices"]) for name, f in _fields_with(cls, "choices").items()}


def check_choices(config: Any) -> None:
    """Refuse a value outside its field's choice list, or a list field holding one (None passes: the fields that
    allow it mean "not set")."""
    for name, choices in field_choices(type(config)).items():
        value = getattr(config, name)
        for item in value if isinstance(value, (list, tuple)) else () if value is None else (value,):
            if item not in choices:
                raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got '{item}'")


def _fields_with(cls: type, key: str) -> dict[str, dataclasses.Field]:
    found: dict[str, dataclasses.Field] = {}
    for klass in reversed(cls.__mro__):
        for name, f in getattr(klass, "__dataclass_fields__", {}).items():
            if f.metadata.get(key):
                found[name] = f
    return found
