"""Build an open_clip model from a `ModelSpec`: an architecture name plus a weights source.

Weights come from an open_clip pretrained tag ("openai"), an `hf-hub:` / `local-dir:` model id, weights registered
under a name (clipsvd.models.registry; the shipped world CLIP's), a local checkpoint file in any common format
(clipsvd.models.checkpoints), or a seeded random initialisation. Every built model carries a `WeightsInfo` (source,
format, activation), since OpenAI weights under GELU instead of QuickGELU run without error but give wrong features.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import open_clip
import torch
import torch.nn.functional as F

from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.models import registry
from clipsvd.models.checkpoints.loaders import load_checkpoint_file
from clipsvd.models.device import resolve_device
from clipsvd.models.registry import post_build
from clipsvd.models.spec import (
    AUTO_ARCHITECTURE,
    CHECKPOINT_SUFFIXES,
    HUB_SCHEMAS,
    RANDOM_WEIGHTS,
    UNTRAINED_LABEL,
    ModelSpec,
    WeightsInfo,
    activation_of,
    looks_like_path,
)
from clipsvd.models.tiny import register_tiny_model

# Random weights come from torch's global RNG: two builds must not interleave (dashboard jobs run in
# threads). A thread drawing random numbers *during* a build (e.g. augmenting another run) can still
# shift them; builds are cached per process, so this can only happen on the first build of a spec.
_BUILD_LOCK = threading.Lock()


@dataclass
class LoadedModel:
    """A CLIP model with what is needed to feed it: tokenizer and image preprocessing constants."""

    model: torch.nn.Module
    tokenizer: Any
    spec: ModelSpec
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    info: WeightsInfo | None = None
    interpolation: str = "bicubic"  # the model's own preprocess_cfg
    resize_mode: str = "shortest"

    @property
    def label(self) -> str:
        """Architecture, where the weights came from, and the activation actually built."""
        return self.info.describe() if self.info is not None else self.spec.label

    def eval_transform(self):
        """The model's own evaluation preprocessing (same as open_clip's transform for it)."""
        from clipsvd.data import eval_transform

        return eval_transform(self.image_size, self.mean, self.std, self.interpolation, self.resize_mode)

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) of the model: 100 for OpenAI CLIP, the model's own value otherwise."""
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(prompts).to(self.device)

    def encode_text(self, prompts: Sequence[str | tuple[str, ...]]) -> torch.Tensor:
        """L2-normalised text features (differentiable: the text encoder may be training).

        A tuple of prompts is a template ensemble for one class (CLIP's ImageNet recipe, ProLIP's):
        the mean of its normalised features, normalised again.
        """
        if not any(isinstance(p, tuple) for p in prompts):
            return F.normalize(self.model.encode_text(self.tokenize(list(prompts))), dim=-1)
        groups = [p if isinstance(p, tuple) else (p,) for p in prompts]
        flat = F.normalize(self.model.encode_text(self.tokenize([t for g in groups for t in g])), dim=-1)
        means = [chunk.mean(dim=0) for chunk in flat.split([len(g) for g in groups])]
        return F.normalize(torch.stack(means), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(images.to(self.device)), dim=-1)

    def to(self, device: str | torch.device) -> "LoadedModel":
        self.device = resolve_device(device)
        self.model.to(self.device)
        return self


def list_architectures() -> list[str]:
    """open_clip architectures plus the tiny test model."""
    register_tiny_model()
    return open_clip.list_models()


def list_pretrained_tags(architecture: str) -> list[str]:
    return list(open_clip.list_pretrained_tags_by_model(architecture))


def _activation_kwargs(spec: ModelSpec) -> dict[str, bool]:
    """open_clip.create_model's quick_gelu argument for the user's explicit choice; none for auto."""
    quick_gelu = spec.quick_gelu
    return {} if quick_gelu is None else {"quick_gelu": quick_gelu}


@functools.lru_cache(maxsize=4)
def _build_cpu_model(spec: ModelSpec) -> tuple[torch.nn.Module, Any, WeightsInfo]:
    """Build once per spec and process; callers get deep copies, since methods edit models in place."""
    register_tiny_model()
    if spec.is_hub_model:
        if spec.weights != RANDOM_WEIGHTS:
            raise ConfigError(f"weights: '{spec.weights}' given with '{spec.architecture}', whose weights come with it")
        return _load_hub_model(spec)
    resolver = registry.weights_source(spec.architecture, spec.weights)
    if resolver is not None:  # registered weights: their registrant knows what they are, activation included
        model, tokenizer, info = load_checkpoint_file(spec, Path(resolver(spec)), source=spec.weights)
        label = registry.weights_label(spec.architecture, spec.weights)
        return model, tokenizer, dataclasses.replace(info, source=label or info.source, note="")
    if looks_like_path(spec.weights):
        return load_checkpoint_file(spec, Path(spec.weights))
    if spec.architecture == AUTO_ARCHITECTURE:
        raise ConfigError("architecture: 'auto' needs a checkpoint file to read the architecture from; name one "
                          "with --arch (e.g. ViT-B-16)")
    if spec.architecture not in open_clip.list_models():
        raise ConfigError(
            f"architecture: '{spec.architecture}' is not an open_clip model; "
            f"choose one of open_clip.list_models() (e.g. ViT-B-16, ViT-B-32, {register_tiny_model()})"
        )
    kwargs = _activation_kwargs(spec)
    if spec.weights == RANDOM_WEIGHTS:
        with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = post_build(_create(spec.architecture, None, **kwargs), spec)
        info = WeightsInfo(f"{UNTRAINED_LABEL} (seed {spec.seed})", "random initialisation", activation_of(model),
                           spec.architecture)
    else:
        tags = list_pretrained_tags(spec.architecture)
        if spec.weights not in tags and Path(spec.weights).is_file():  # a file without a checkpoint's suffix
            return load_checkpoint_file(spec, Path(spec.weights))  # its bytes say what it is (or that it is none)
        if spec.weights not in tags:
            raise ConfigError(
                f"weights: '{spec.weights}' is neither a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}) "
                f"nor a pretrained tag of {spec.architecture} (tags: {', '.join(tags) or 'none'})"
            )
        if not kwargs and tag_uses_quick_gelu(spec.architecture, spec.weights):
            kwargs = {"quick_gelu": True}  # OpenAI / LAION-400M weights were trained with QuickGELU
        model = post_build(_create(spec.architecture, spec.weights, **kwargs), spec)
        info = WeightsInfo(f"'{spec.weights}'", "pretrained tag", activation_of(model), spec.architecture)
    return model, open_clip.get_tokenizer(spec.architecture), info


def tag_uses_quick_gelu(architecture: str, tag: str) -> bool:
    """Whether open_clip's record of a pretrained tag says its weights were trained with QuickGELU."""
    return bool((open_clip.get_pretrained_cfg(architecture, tag) or {}).get("quick_gelu", False))


def _create(architecture: str, pretrained: str | None, **kwargs: Any) -> torch.nn.Module:
    try:
        return open_clip.create_model(architecture, pretrained=pretrained, device="cpu", **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        if pretrained or architecture.startswith(HUB_SCHEMAS):
            raise CheckpointError(
                f"could not load weights for {architecture} ({pretrained or 'hub'}): {exc}. Offline, the hub cache "
                "must hold them (HF_HUB_OFFLINE=1 is set); fill it where the internet is reachable, "
                "or give a local checkpoint file with --weights"
            ) from exc
        raise


def _load_hub_model(spec: ModelSpec) -> tuple[torch.nn.Module, Any, WeightsInfo]:
    """hf-hub:/local-dir: models, after checking that everything they need is on disk."""
    from clipsvd.models.hub import check_hub_model

    check_hub_model(spec.architecture)
    kwargs = _activation_kwargs(spec)
    model = post_build(_create(spec.architecture, None, **kwargs), spec)
    try:
        tokenizer = open_clip.get_tokenizer(spec.architecture)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{spec.architecture}: its tokenizer could not be built offline: "
                              f"{str(exc).strip().splitlines()[0]}") from exc
    info = WeightsInfo(spec.architecture, "hub model", activation_of(model), spec.architecture)
    return model, tokenizer, info


registry.on_change(_build_cpu_model.cache_clear)  # a registration changes what a spec builds


def load_model(spec: ModelSpec | None = None, device: str | torch.device | None = "auto") -> LoadedModel:
    """A fresh, trainable copy of the model `spec` names, on `device` (auto: CUDA if present)."""
    spec = spec or ModelSpec.default()
    cpu_model, tokenizer, info = _build_cpu_model(spec)
    model = copy.deepcopy(cpu_model).float()
    target = resolve_device(device)
    visual = model.visual
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    size = cfg.get("size") or visual.image_size
    image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = tuple(cfg.get("mean") or getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(cfg.get("std") or getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    loaded = LoadedModel(model=model, tokenizer=tokenizer, spec=spec, image_size=image_size, mean=mean, std=std,
                         info=info, interpolation=cfg.get("interpolation") or "bicubic",
                         resize_mode=cfg.get("resize_mode") or "shortest")
    return loaded.to(target)


def save_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """Write a model's weights as safetensors, loadable again through ModelSpec(weights=path)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path
