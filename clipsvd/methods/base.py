"""The one interface every adaptation method implements (PEFT-style: one interface, many methods).

A method is attached to a loaded CLIP model: it freezes the backbone, decides which tensors
train, may add a regulariser, and saves/loads only those tensors ("adapter state"). The
training loop and the evaluation code talk to methods only through this class.
"""
from __future__ import annotations

import dataclasses
import threading
from abc import ABC
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.choices import check_choices, described
from clipsvd.errors import CheckpointError, ClipsvdError, ConfigError
from clipsvd.methods.presets import Preset, Setting, official_preset
from clipsvd.models.loading import LoadedModel



class AttachCancelled(ClipsvdError):
    """The user cancelled while a method was being attached (e.g. during CLIP-SVD's decomposition)."""


OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "cosine-cyclic", "cosine-epoch", "constant")
WARMUPS = ("linear", "constant")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class MethodConfig:
    """Optimisation hyperparameters shared by all methods; subclasses change defaults and add their own.

    The defaults here are generic; `Method.default_config(setting)` resolves the official protocol of the
    method's paper for a protocol × dataset × backbone × K (clipsvd/methods/presets/).
    """

    epochs: int = field(default=10, metadata=described(
        "passes over the training split (ignored when iterations is set)"))
    iterations: int | None = field(default=None, metadata=described(
        "total optimiser steps, replacing epochs (official CLIP-SVD few-shot: 200×K)"))
    batch_size: int = field(default=32, metadata=described("images per optimiser step"))
    drop_last: bool = field(default=False, metadata=described(
        "drop each epoch's last incomplete batch when the split holds at least one batch (Dassl's loaders, "
        "used by CLIPFit); CLIP-SVD's loader keeps it"))
    lr: float = field(default=1e-3, metadata=described("peak learning rate (per step, after warm-up)"))
    optimizer: str = field(default="adamw", metadata=described(
        "adamw: Adam with decoupled weight decay; adam; sgd (with momentum)", choices=OPTIMIZERS))
    weight_decay: float = field(default=0.01, metadata=described(
        "weight decay coefficient: decoupled for adamw, an L2 term for adam and sgd"))
    momentum: float = field(default=0.9, metadata=described("SGD momentum (sgd only)"))
    eps: float = field(default=1e-8, metadata=described("Adam's ε added to the denominator (adam/adamw only)"))
    schedule: str = field(default="cosine", metadata=described(
        "cosine: one cosine from lr to min_lr over all steps, stepped per iteration; cosine-cyclic: the official "
        "CLIP-SVD scheduler, CosineAnnealingLR(T_max=epochs) stepped every iteration, so the rate cycles with "
        "period 2×epochs steps; cosine-epoch: Dassl's cosine over epochs, stepped once per epoch; constant",
        choices=SCHEDULES))
    warmup_epochs: int = field(default=0, metadata=described("epochs of warm-up before the schedule starts"))
    warmup: str = field(default="linear", metadata=described(
        "linear: ramp up to lr; constant: hold warmup_lr (Dassl's ConstantWarmupScheduler)", choices=WARMUPS))
    warmup_lr: float = field(default=1e-5, metadata=described("the rate held during a constant warm-up"))
    min_lr: float = field(default=1e-6, metadata=described("the cosine's floor (eta_min), an absolute learning rate"))
    crop_scale_min: float = field(default=0.08, metadata=described(
        "smallest area fraction of RandomResizedCrop in training augmentation"))
    templates: list[str] = field(default_factory=list, metadata=described(
        "prompt templates with {} for the class name; several form an ensemble (mean of normalised text "
        "features); empty: the dataset's own template"))
    cached_views: int = field(default=0, metadata=described(
        "train on the features of this many augmented views, computed once by the frozen backbone: each step is "
        "one full-batch step on one view (the official ProLIP); 0: the mini-batch loop. Only for methods whose "
        "trainable part follows a frozen backbone"))
    precision: str = field(default="auto", metadata=described(
        "auto: fp16 autocast with a loss scaler on CUDA, fp32 on CPU; fp32; fp16; bf16", choices=PRECISIONS))

    def field_used(self, name: str) -> bool:
        """Whether a field matters for this config (the form hides the others): momentum for SGD only, eps for
        Adam/AdamW only, warm-up settings only with warm-up epochs, epochs only without iterations."""
        return {
            "momentum": self.optimizer == "sgd",
            "eps": self.optimizer != "sgd",
            "warmup": self.warmup_epochs > 0,
            "warmup_lr": self.warmup_epochs > 0 and self.warmup == "constant",
            "epochs": self.iterations is None and not self.cached_views,
            "drop_last": not self.cached_views,
            "batch_size": not self.cached_views,
        }.get(name, True)

    def validate(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"epochs: expected >= 0, got {self.epochs}")
        if self.iterations is not None and self.iterations < 0:
            raise ConfigError(f"iterations: expected >= 0 or null, got {self.iterations}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: expected >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"lr: expected > 0, got {self.lr}")
        check_choices(self)  # optimizer, schedule, warmup, precision: the lists on the fields
        if self.cached_views < 0:
            raise ConfigError(f"cached_views: expected >= 0, got {self.cached_views}")
        if not 0 < self.crop_scale_min <= 1:
            raise ConfigError(f"crop_scale_min: expected a fraction in (0, 1], got {self.crop_scale_min}")
        for template in self.templates:
            if not isinstance(template, str) or "{}" not in template:
                raise ConfigError(f"templates: {template!r} has no '{{}}' for the class name")

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
    # False: runs of this method come from elsewhere (`clipsvd import`); train, sweeps and the forms do not offer it
    runnable: ClassVar[bool] = True
    # Whether training changes any weight of the CLIP model itself; False where what trains lies outside it (CoOp's
    # prompt context, a linear probe's head, nothing for zero-shot): weight analyses then say so in one line
    # instead of comparing a model with itself.
    changes_weights: ClassVar[bool] = True
    # Whether the method learns prompt context vectors in the token-embedding space (CoOp), which
    # `learned_context()` returns and `analysis.prompts.nearest_words` reads as words.
    learns_context: ClassVar[bool] = False
    # Whether the run's image features are the image tower's own output, so the tower's per-head terms (TextSpan's
    # decomposition) sum to them and mean-ablating heads measures this method; False where a trained part after the
    # decomposed terms produces the features (ProLIP's projection, trained on cached tower features).
    features_are_tower_terms: ClassVar[bool] = True

    def __init__(self, config: MethodConfig | dict[str, Any] | None = None):
        self.config = self.make_config(config)
        self.loaded: LoadedModel | None = None
        self.original_parameter_count = 0

    # ----- configuration -------------------------------------------------------------------
    @classmethod
    def preset(cls, setting: Setting = Setting()) -> Preset:
        """The official protocol of this method's paper for `setting` (clipsvd/methods/presets/<name>.json)."""
        return official_preset(cls.name, setting)

    @classmethod
    def default_config(cls, setting: Setting = Setting()) -> MethodConfig:
        """The Config defaults with the official preset for `setting` applied on top."""
        return cls.Config(**cls.preset(setting).values)

    @classmethod
    def make_config(cls, config: MethodConfig | dict[str, Any] | None, setting: Setting = Setting()) -> MethodConfig:
        """A validated config: as given, or the setting's defaults with a dict of overrides applied."""
        if config is None:
            config = cls.default_config(setting)
        elif isinstance(config, dict):
            known = {f.name for f in dataclasses.fields(cls.Config)}
            unknown = set(config) - known
            if unknown:
                raise ConfigError(
                    f"{cls.name}: unknown hyperparameter(s) {sorted(unknown)}; known: {sorted(known)}"
                )
            config = dataclasses.replace(cls.default_config(setting), **config)
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

    # ----- analysis capabilities ----------------------------------------------------------------
    def singular_value_weights(self) -> dict[str, nn.Module]:
        """Decomposed weights by module path, whose σ can be compared with σ₀ (CLIP-SVD); empty for methods that
        train no singular values, so analyses say so instead of drawing zeros."""
        return {}

    def learned_context(self) -> torch.Tensor | None:
        """The learned prompt context vectors ((M × d) shared, or (classes × M × d) per class) where
        `learns_context`; None for methods that learn no prompt."""
        return None

    # ----- training on cached features (a capability) --------------------------------------------
    def frozen_backbone(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """images -> the features the trainable part starts from, where everything before it is frozen, so
        training may run on features computed once (cached_views); None where the backbone trains."""
        return None

    def logits_from_features(self, features: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        """Logits from frozen_backbone()'s features; methods that offer frozen_backbone() implement it."""
        raise NotImplementedError(f"{self.name} does not train on cached features")

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
