"""Build an open_clip model from an architecture name plus a weights source.

Weights come from an open_clip pretrained tag ("openai"), an `hf-hub:` / `local-dir:` model id,
or a local checkpoint file (.pt/.pth/.bin/.safetensors). No package ships CLIP weights, so the
offline default is a *seeded random* model, and it says so (`UNTRAINED_LABEL`) wherever it is
shown: a random model is never passed off as a pretrained one.
"""
from __future__ import annotations

import copy
import functools
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F

from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.models.device import resolve_device
from clipsvd.models.tiny import register_tiny_model

RANDOM_WEIGHTS = "random"
UNTRAINED_LABEL = "untrained — load a checkpoint"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
DEFAULT_ARCHITECTURE = "ViT-B-16"
HUB_SCHEMAS = ("hf-hub:", "local-dir:")
# Random weights come from torch's global RNG: two builds must not interleave (dashboard jobs run in
# threads). A thread drawing random numbers *during* a build (e.g. augmenting another run) can still
# shift them; builds are cached per process, so this can only happen on the first build of a spec.
_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from; stored in every run's config so the run can be rebuilt."""

    architecture: str = DEFAULT_ARCHITECTURE
    weights: str = RANDOM_WEIGHTS  # "random", a pretrained tag, or a checkpoint path
    seed: int = 0  # only used for random weights

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
        weights = Path(self.weights).name if _looks_like_path(self.weights) else self.weights
        return f"{self.architecture} · {weights}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        unknown = set(data) - {"architecture", "weights", "seed"}
        if unknown:
            raise ConfigError(f"model spec: unknown field(s) {sorted(unknown)}; expected architecture, weights, seed")
        return cls(**data)


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

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale) of the model: 100 for OpenAI CLIP, the model's own value otherwise."""
        return float(self.model.logit_scale.detach().exp().clamp(max=100.0))

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(prompts).to(self.device)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised text features (differentiable: the text encoder may be training)."""
        return F.normalize(self.model.encode_text(self.tokenize(prompts)), dim=-1)

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


def _looks_like_path(weights: str) -> bool:
    return weights.endswith(CHECKPOINT_SUFFIXES) or "/" in weights or "\\" in weights


@functools.lru_cache(maxsize=4)
def _build_cpu_model(spec: ModelSpec) -> tuple[torch.nn.Module, Any]:
    """Build once per spec and process; callers get deep copies, since methods edit models in place."""
    register_tiny_model()
    if spec.is_hub_model:
        if spec.weights != RANDOM_WEIGHTS:
            raise ConfigError(f"weights: '{spec.weights}' given with '{spec.architecture}', whose weights come with it")
        return _create(spec.architecture, None), open_clip.get_tokenizer(spec.architecture)
    if spec.architecture not in open_clip.list_models():
        raise ConfigError(
            f"architecture: '{spec.architecture}' is not an open_clip model; "
            f"choose one of open_clip.list_models() (e.g. ViT-B-16, ViT-B-32, {register_tiny_model()})"
        )
    if spec.weights == RANDOM_WEIGHTS:
        with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = _create(spec.architecture, None)
    elif _looks_like_path(spec.weights):
        model = _load_checkpoint_file(spec.architecture, Path(spec.weights))
    else:
        tags = list_pretrained_tags(spec.architecture)
        if spec.weights not in tags:
            raise ConfigError(
                f"weights: '{spec.weights}' is neither a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}) "
                f"nor a pretrained tag of {spec.architecture} (tags: {', '.join(tags) or 'none'})"
            )
        model = _create(spec.architecture, spec.weights)
    return model, open_clip.get_tokenizer(spec.architecture)


def _create(architecture: str, pretrained: str | None) -> torch.nn.Module:
    try:
        return open_clip.create_model(architecture, pretrained=pretrained, device="cpu")
    except RuntimeError as exc:
        if pretrained or architecture.startswith(HUB_SCHEMAS):
            raise CheckpointError(
                f"could not fetch weights for {architecture} ({pretrained or 'hub'}): {exc}. "
                "This machine may be offline: download the checkpoint elsewhere and give its local path."
            ) from exc
        raise


def _load_checkpoint_file(architecture: str, path: Path) -> torch.nn.Module:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    model = open_clip.create_model(architecture, pretrained=None, device="cpu")
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as exc:  # truncated file, pickle refused, size/key mismatch: all name the file
        detail = str(exc).strip().splitlines()
        summary = "; ".join(line.strip() for line in detail[:4])
        raise CheckpointError(
            f"checkpoint {path} does not load into {architecture}: {summary}"
        ) from exc
    return model


def load_model(spec: ModelSpec | None = None, device: str | torch.device | None = "auto") -> LoadedModel:
    """A fresh, trainable copy of the model `spec` names, on `device` (auto: CUDA if present)."""
    spec = spec or ModelSpec()
    cpu_model, tokenizer = _build_cpu_model(spec)
    model = copy.deepcopy(cpu_model).float()
    target = resolve_device(device)
    visual = model.visual
    size = visual.image_size
    image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    loaded = LoadedModel(model=model, tokenizer=tokenizer, spec=spec, image_size=image_size, mean=mean, std=std)
    return loaded.to(target)


def save_checkpoint(model: torch.nn.Module, path: str | Path) -> Path:
    """Write a model's weights as safetensors, loadable again through ModelSpec(weights=path)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    return path
