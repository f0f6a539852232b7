"""What a model is and where its weights came from: `ModelSpec` (stored in every run's config, so the run can be
rebuilt) and `WeightsInfo` (what the build actually found: source, format, activation).

No package ships CLIP weights, so a spec without weights means a *seeded random* model, and its label says so
(`UNTRAINED_LABEL`) wherever it is shown: a random model is never passed off as a pretrained one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from clipsvd.choices import ACTIVATIONS
from clipsvd.errors import ConfigError
from clipsvd.models.registry import weights_label
from clipsvd.models.world_weights import WORLD_MODEL_NAME, WORLD_WEIGHTS

RANDOM_WEIGHTS = "random"
UNTRAINED_LABEL = "untrained — load a checkpoint"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
DEFAULT_ARCHITECTURE = WORLD_MODEL_NAME  # the CLI's and dashboard's default model: the shipped world CLIP
AUTO_ARCHITECTURE = "auto"  # with a checkpoint file: read the architecture off its tensors
HUB_SCHEMAS = ("hf-hub:", "local-dir:")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from; stored in every run's config so the run can be rebuilt."""

    architecture: str = DEFAULT_ARCHITECTURE
    weights: str = RANDOM_WEIGHTS  # "random", a pretrained tag, or a checkpoint path
    seed: int = 0  # only used for random weights
    activation: str = "auto"  # auto | quickgelu (OpenAI / LAION-400M weights) | gelu

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation: expected one of {ACTIVATIONS}, got '{self.activation}'")

    @property
    def is_hub_model(self) -> bool:
        return self.architecture.startswith(HUB_SCHEMAS)

    @property
    def is_pretrained(self) -> bool:
        return self.is_hub_model or self.weights != RANDOM_WEIGHTS

    @property
    def label(self) -> str:
        if self.is_hub_model:
            return self.architecture
        if not self.is_pretrained:
            return f"{self.architecture} · {UNTRAINED_LABEL} (seed {self.seed})"
        registered = weights_label(self.architecture, self.weights)
        if registered:
            return f"{self.architecture} · {registered}"
        weights = Path(self.weights).name if looks_like_path(self.weights) else self.weights
        activation = {"quickgelu": " · QuickGELU", "gelu": " · GELU"}.get(self.activation, "")
        return f"{self.architecture} · {weights}{activation}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def default(cls) -> "ModelSpec":
        """The model the CLI and dashboard start on: the small CLIP pretrained on the generated world,
        whose weights ship with the package (no CLIP weights can be downloaded here)."""
        return cls(WORLD_MODEL_NAME, WORLD_WEIGHTS)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        """A stored spec; an empty one is the default model (as everywhere a model is not named), while a named
        architecture without weights is its seeded random initialisation (as `--arch` alone on the CLI)."""
        if not data:
            return cls.default()
        unknown = set(data) - {"architecture", "weights", "seed", "activation"}
        if unknown:
            raise ConfigError(f"model spec: unknown field(s) {sorted(unknown)}; "
                              "expected architecture, weights, seed, activation")
        return cls(**data)

    @property
    def quick_gelu(self) -> bool | None:
        """The user's explicit choice (activation=quickgelu/gelu), or None for auto."""
        return {"quickgelu": True, "gelu": False}.get(self.activation)


def looks_like_path(weights: str) -> bool:
    """A checkpoint path (by suffix or separator) rather than a tag."""
    return weights.endswith(CHECKPOINT_SUFFIXES) or "/" in weights or "\\" in weights


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights of a built model came from and which activation it uses: shown in labels, stored in runs."""

    source: str  # "random (seed 0)", "ViT-B-32.pt", "openai tag", "hf-hub:…"
    format: str  # "OpenAI TorchScript archive", "safetensors", "pretrained tag", …
    activation: str  # "QuickGELU", "GELU", …
    architecture: str  # the architecture actually built (inferred ones named)
    note: str = ""  # e.g. activation unknown for a plain file

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def describe(self) -> str:
        where = self.source if self.format == "random initialisation" else f"{self.source} ({self.format})"
        text = f"{self.architecture} · {where} · {self.activation}"
        return f"{text} · {self.note}" if self.note else text


def activation_of(model: torch.nn.Module) -> str:
    """The MLP activation a built model uses, by module type (QuickGELU wins: it is OpenAI's)."""
    names = {type(module).__name__ for module in model.modules()}
    for name in ("QuickGELU", "GELU", "GELUTanh", "SiLU", "ReLU"):
        if name in names:
            return name
    hf = getattr(getattr(getattr(model, "text", None), "config", None), "hidden_act", None)
    return str(hf or "unknown")
