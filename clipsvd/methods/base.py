"""The one interface every adaptation method implements (PEFT-style: one interface, many methods).

A method is attached to a loaded CLIP model: it freezes the backbone, decides which tensors
train, may add a regulariser, and saves/loads only those tensors ("adapter state"). The
training loop and the evaluation code talk to methods only through this class.
"""
from __future__ import annotations

import dataclasses
import threading
from abc import ABC
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.errors import CheckpointError, ClipsvdError, ConfigError
from clipsvd.models.loading import LoadedModel

PROTOCOLS = ("few-shot", "base2novel")


class AttachCancelled(ClipsvdError):
    """The user cancelled while a method was being attached (e.g. during CLIP-SVD's decomposition)."""


@dataclass
class MethodConfig:
    """Optimisation hyperparameters shared by all methods; subclasses change defaults and add their own."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"  # adamw | adam | sgd
    weight_decay: float = 0.01
    momentum: float = 0.9  # sgd only
    eps: float = 1e-8  # adam/adamw only
    warmup_epochs: int = 0
    min_lr: float = 1e-6  # cosine schedule floor

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs: expected >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: expected >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr: expected > 0, got {self.lr}")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise ConfigError(f"optimizer: expected adamw, adam or sgd, got '{self.optimizer}'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Method(ABC):
    """Base class: zero-shot behaviour (nothing trains) unless a subclass says otherwise."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    summary: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    trains: ClassVar[bool] = True
    trains_text_encoder: ClassVar[bool] = False
    supports_novel_classes: ClassVar[bool] = True

    def __init__(self, config: MethodConfig | dict[str, Any] | None = None):
        self.config = self.make_config(config)
        self.loaded: LoadedModel | None = None
        self.original_parameter_count = 0

    # ----- configuration -------------------------------------------------------------------
    @classmethod
    def default_config(cls, protocol: str = "few-shot", shots: int | None = None) -> MethodConfig:
        """The papers' defaults for this protocol; subclasses override where the papers differ."""
        return cls.Config()

    @classmethod
    def make_config(
        cls, config: MethodConfig | dict[str, Any] | None, protocol: str = "few-shot", shots: int | None = None
    ) -> MethodConfig:
        """A validated config: as given, or the protocol's defaults with a dict of overrides applied."""
        if config is None:
            config = cls.default_config(protocol, shots)
        elif isinstance(config, dict):
            known = {f.name for f in dataclasses.fields(cls.Config)}
            unknown = set(config) - known
            if unknown:
                raise ConfigError(
                    f"{cls.name}: unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(known)}"
                )
            config = dataclasses.replace(cls.default_config(protocol, shots), **config)
        elif not isinstance(config, cls.Config):
            raise ConfigError(f"{cls.name}: expected a {cls.Config.__name__}, got {type(config).__name__}")
        config.validate()
        return config

    # ----- life cycle ----------------------------------------------------------------------
    def attach(
        self, loaded: LoadedModel, class_prompts: list[str],
        progress: Callable[[int, int, str], None] | None = None, cancel: threading.Event | None = None,
    ) -> "Method":
        """Freeze the backbone, then let the subclass open up (or insert) what it trains.

        progress(done, total, message) and cancel reach long set-ups (CLIP-SVD's first decomposition).
        """
        self.attach_progress = progress or (lambda done, total, message: None)
        self.attach_cancel = cancel
        self.loaded = loaded
        self.original_parameter_count = count_parameters(loaded.model)
        loaded.model.requires_grad_(False)
        self.setup(loaded, class_prompts)
        return self

    def setup(self, loaded: LoadedModel, class_prompts: list[str]) -> None:
        """Subclass hook, called with the backbone frozen."""

    @property
    def model(self) -> nn.Module:
        if self.loaded is None:
            raise RuntimeError(f"{self.name}: call attach(model, prompts) first")
        return self.loaded.model

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def parameter_report(self) -> dict[str, float]:
        """Trainable values and their share of the original (pretrained) model."""
        trainable = sum(p.numel() for p in self.trainable_parameters())
        total = self.original_parameter_count
        return {"trainable": trainable, "total": total, "fraction": trainable / total if total else 0.0}

    # ----- forward ---------------------------------------------------------------------------
    def class_weights(self, class_prompts: list[str]) -> torch.Tensor:
        """(classes × d) classifier rows: normalised text features of the class prompts."""
        return self.loaded.encode_text(class_prompts)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.loaded.encode_image(images)

    def logits(self, images: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        return self.loaded.logit_scale * self.image_features(images) @ class_weights.t()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels) + self.regularizer(class_weights)

    def regularizer(self, class_weights: torch.Tensor) -> torch.Tensor | float:
        return 0.0

    # ----- adapter state -------------------------------------------------------------------
    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The tensors this method changed, by name; what a checkpoint stores."""
        named = dict(self.model.named_parameters())
        return {n: p.detach().cpu().clone() for n, p in named.items() if p.requires_grad}

    def load_adapter_state(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        own = self.adapter_state()
        check_adapter_keys(own, tensors, source, self.name)
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def merge(self) -> nn.Module:
        """Fold trained tensors back into plain weights; methods that train weights in place have nothing to do."""
        return self.model


def check_adapter_keys(
    expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], source: str, method: str
) -> None:
    """Refuse a checkpoint from another method or architecture, naming the first mismatch."""
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{source} does not match {method} on this model: "
            f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'…' if len(extra) > 3 else ''}"
        )
    for name, tensor in expected.items():
        if tuple(given[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {tuple(given[name].shape)}, "
                f"this model expects {tuple(tensor.shape)} (checkpoint of another architecture?)"
            )
