"""Build an open_clip model from an architecture name plus a weights source.

Weights come from an open_clip pretrained tag ("openai"), an `hf-hub:` / `local-dir:` model id,
or a local checkpoint file in any common format (clipsvd.models.formats). No package ships CLIP
weights, so the offline default is a *seeded random* model, and it says so (`UNTRAINED_LABEL`)
wherever it is shown: a random model is never passed off as a pretrained one. Every built model
carries a `WeightsInfo` (source, format, activation), since OpenAI weights under GELU instead of
QuickGELU run without error but give wrong features.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import open_clip
import torch
import torch.nn.functional as F

from clipsvd.choices import ACTIVATIONS
from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.models.device import resolve_device
from clipsvd.models.finite import check_finite
from clipsvd.models.tiny import register_tiny_model
from clipsvd.models.world import WORLD_MODEL_NAME, WORLD_WEIGHTS

RANDOM_WEIGHTS = "random"
UNTRAINED_LABEL = "untrained — load a checkpoint"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
DEFAULT_ARCHITECTURE = WORLD_MODEL_NAME  # the CLI's and dashboard's default model: the shipped world CLIP
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
        if (self.architecture, self.weights) in _WEIGHT_LABELS:
            return f"{self.architecture} · {_WEIGHT_LABELS[(self.architecture, self.weights)]}"
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
        unknown = set(data) - {"architecture", "weights", "seed", "activation"}
        if unknown:
            raise ConfigError(f"model spec: unknown field(s) {sorted(unknown)}; "
                              "expected architecture, weights, seed, activation")
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


def looks_like_path(weights: str) -> bool:
    """A checkpoint path (by suffix or separator) rather than a tag."""
    return weights.endswith(CHECKPOINT_SUFFIXES) or "/" in weights or "\\" in weights


AUTO_ARCHITECTURE = "auto"  # with a checkpoint file: read the architecture off its tensors

# Extension points, per architecture name: steps run on the module right after open_clip builds it
# (before any checkpoint file loads), and named weights that resolve to a local checkpoint file.
PostBuildStep = Callable[[torch.nn.Module, "ModelSpec"], "torch.nn.Module | None"]
_POST_BUILD: dict[str, list[PostBuildStep]] = {}
_WEIGHT_SOURCES: dict[tuple[str, str], Callable[["ModelSpec"], Path]] = {}
_WEIGHT_LABELS: dict[tuple[str, str], str] = {}


def register_post_build(architecture: str, step: PostBuildStep) -> None:
    """Run `step(model, spec)` on every `architecture` model after open_clip builds it (it may return a new module)."""
    steps = _POST_BUILD.setdefault(architecture, [])
    if step not in steps:
        steps.append(step)
    _build_cpu_model.cache_clear()


def register_weights_source(architecture: str, name: str, resolve: Callable[["ModelSpec"], Path],
                            label: str | None = None) -> None:
    """Let `weights=name` on `architecture` mean the checkpoint file `resolve(spec)` returns (e.g. shipped
    weights); `label` says in words what those weights are, wherever the model is named."""
    _WEIGHT_SOURCES[(architecture, name)] = resolve
    if label:
        _WEIGHT_LABELS[(architecture, name)] = label
    _build_cpu_model.cache_clear()


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


def _post_build(model: torch.nn.Module, spec: ModelSpec) -> torch.nn.Module:
    for step in _POST_BUILD.get(spec.architecture, []):
        model = step(model, spec) or model
    return model


def _quick_gelu_of(spec: ModelSpec) -> bool | None:
    """The user's explicit choice (activation=quickgelu/gelu), or None for auto."""
    return {"quickgelu": True, "gelu": False}.get(spec.activation)


def _activation_kwargs(spec: ModelSpec) -> dict[str, bool]:
    """open_clip.create_model's quick_gelu argument for the user's explicit choice; none for auto."""
    quick_gelu = _quick_gelu_of(spec)
    return {} if quick_gelu is None else {"quick_gelu": quick_gelu}


@functools.lru_cache(maxsize=4)
def _build_cpu_model(spec: ModelSpec) -> tuple[torch.nn.Module, Any, WeightsInfo]:
    """Build once per spec and process; callers get deep copies, since methods edit models in place."""
    register_tiny_model()
    if spec.is_hub_model:
        if spec.weights != RANDOM_WEIGHTS:
            raise ConfigError(f"weights: '{spec.weights}' given with '{spec.architecture}', whose weights come with it")
        return _load_hub_model(spec)
    resolver = _WEIGHT_SOURCES.get((spec.architecture, spec.weights))
    if resolver is not None:  # registered weights: their registrant knows what they are, activation included
        model, tokenizer, info = _load_checkpoint_file(spec, Path(resolver(spec)), source=spec.weights)
        label = _WEIGHT_LABELS.get((spec.architecture, spec.weights))
        return model, tokenizer, dataclasses.replace(info, source=label or info.source, note="")
    if looks_like_path(spec.weights):
        return _load_checkpoint_file(spec, Path(spec.weights))
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
            model = _post_build(_create(spec.architecture, None, **kwargs), spec)
        info = WeightsInfo(f"{UNTRAINED_LABEL} (seed {spec.seed})", "random initialisation", activation_of(model),
                           spec.architecture)
    else:
        tags = list_pretrained_tags(spec.architecture)
        if spec.weights not in tags and Path(spec.weights).is_file():  # a file without a checkpoint's suffix
            return _load_checkpoint_file(spec, Path(spec.weights))  # its bytes say what it is (or that it is none)
        if spec.weights not in tags:
            raise ConfigError(
                f"weights: '{spec.weights}' is neither a checkpoint file ({', '.join(CHECKPOINT_SUFFIXES)}) "
                f"nor a pretrained tag of {spec.architecture} (tags: {', '.join(tags) or 'none'})"
            )
        if not kwargs and tag_uses_quick_gelu(spec.architecture, spec.weights):
            kwargs = {"quick_gelu": True}  # OpenAI / LAION-400M weights were trained with QuickGELU
        model = _post_build(_create(spec.architecture, spec.weights, **kwargs), spec)
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


class _DropRecord(logging.Filter):
    """Drops one exact log message from one thread; the same message from another thread still passes."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message, self.thread = message, threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread == self.thread and record.getMessage() == self.message)


@contextlib.contextmanager
def _dropping_root_record(message: str) -> Iterator[None]:
    """open_clip logs through the root logger (`logging.warning`), whose own filters see its records."""
    root, drop = logging.getLogger(), _DropRecord(message)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def create_model_for_weights(architecture: str, **kwargs: Any) -> torch.nn.Module:
    """open_clip.create_model with no pretrained weights, for a caller that loads its own weights right after (or
    reads only the shapes): without open_clip's "No pretrained weights loaded for model '…'. Model initialized
    randomly.", which is untrue by the time anyone uses the model. A random model asked for keeps that message."""
    message = f"No pretrained weights loaded for model '{architecture}'. Model initialized randomly."
    with _dropping_root_record(message):
        return open_clip.create_model(architecture, pretrained=None, **kwargs)


def _load_hub_model(spec: ModelSpec) -> tuple[torch.nn.Module, Any, WeightsInfo]:
    """hf-hub:/local-dir: models, after checking that everything they need is on disk."""
    from clipsvd.models.hub import check_hub_model

    check_hub_model(spec.architecture)
    kwargs = _activation_kwargs(spec)
    model = _post_build(_create(spec.architecture, None, **kwargs), spec)
    try:
        tokenizer = open_clip.get_tokenizer(spec.architecture)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{spec.architecture}: its tokenizer could not be built offline: "
                              f"{str(exc).strip().splitlines()[0]}") from exc
    info = WeightsInfo(spec.architecture, "hub model", activation_of(model), spec.architecture)
    return model, tokenizer, info


def _load_checkpoint_file(
    spec: ModelSpec, path: Path, source: str | None = None
) -> tuple[torch.nn.Module, Any, WeightsInfo]:
    """Any checkpoint file format, loaded to exactly what its own loader gives (see clipsvd.models.formats)."""
    from clipsvd.models import formats

    if path.is_dir():  # a transformers snapshot folder
        files = [path / name for name in formats.HF_WEIGHT_FILES if (path / name).is_file()]
        if not files:
            raise CheckpointError(f"checkpoint folder {path} holds none of {formats.HF_WEIGHT_FILES}")
        path = files[0]
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    source = source or path.name
    if formats.is_torchscript_archive(path):
        return _load_openai_archive(spec, path, source)
    state_dict, fmt = formats.read_state_dict(path)
    check_finite(state_dict, path)
    hf_config = formats.hf_config_next_to(path)
    family = formats.hf_family(state_dict, hf_config)
    quick_gelu, note = _quick_gelu_of(spec), ""
    config: dict[str, Any] | None = None
    if family is not None:
        if family != "clip":
            raise CheckpointError(
                f"checkpoint {path} is a transformers '{family}' model; only CLIPModel checkpoints "
                "(model_type 'clip') can be converted to open_clip. Use open_clip's own weights for this family")
        state_dict, fmt = formats.convert_hf_clip(state_dict), formats.HF_CLIP
        if hf_config is not None:
            config = formats.open_clip_config_from_hf(hf_config)
            quick_gelu = config["quick_gelu"] if quick_gelu is None else quick_gelu
    if spec.architecture == AUTO_ARCHITECTURE:
        config = config or formats.config_from_tensors(state_dict)
        matches = formats.matching_architectures(state_dict)
        arch_name = f"{matches[0]} (inferred)" if matches else "inferred from tensors"
    else:
        if spec.architecture not in open_clip.list_models():
            raise ConfigError(f"architecture: '{spec.architecture}' is not an open_clip model")
        config, arch_name = None, spec.architecture
        if spec.architecture.endswith("-quickgelu") and quick_gelu is None:
            quick_gelu = True
    if quick_gelu is None:
        note = ("activation unknown: built as the architecture's default; pass --activation quickgelu for "
                "OpenAI or LAION-400M weights")
    kwargs = {} if quick_gelu is None else {"quick_gelu": quick_gelu}
    if config is not None:
        model_cfg = {**config, **kwargs}
        model = open_clip.model.CLIP(**model_cfg)
        open_clip.set_model_preprocess_cfg(model, _openai_preprocess(model))
        tokenizer = open_clip.SimpleTokenizer(context_length=config["text_cfg"]["context_length"])
    else:
        model = create_model_for_weights(spec.architecture, device="cpu", **kwargs)  # the file's weights load below
        tokenizer = open_clip.get_tokenizer(spec.architecture)
    model = _post_build(model, spec)
    _load_state_dict(model, state_dict, path, arch_name)
    return model.eval(), tokenizer, WeightsInfo(source, fmt, activation_of(model), arch_name, note)


def _openai_preprocess(model: torch.nn.Module) -> dict[str, Any]:
    size = model.visual.image_size
    return {"size": size, "mode": "RGB", "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD,
            "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}


def _load_openai_archive(spec: ModelSpec, path: Path, source: str) -> tuple[torch.nn.Module, Any, WeightsInfo]:
    """OpenAI's TorchScript archive, read by open_clip's own loader (torch.jit; QuickGELU, as OpenAI trained)."""
    from clipsvd.models import formats

    if _quick_gelu_of(spec) is False:
        raise ConfigError(f"activation: 'gelu' was asked for, but {path} is an OpenAI archive, trained with QuickGELU")
    try:
        model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}: OpenAI TorchScript archive could not be read: {exc}") from exc
    state = model.state_dict()
    check_finite(state, path)
    matches = formats.matching_architectures(state)
    if spec.architecture == AUTO_ARCHITECTURE:
        arch_name = f"{matches[0]} (inferred)" if matches else "inferred from tensors"
    else:
        _check_shapes(spec.architecture, state, path)
        arch_name = spec.architecture
    open_clip.set_model_preprocess_cfg(model, _openai_preprocess(model))
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    info = WeightsInfo(source, formats.TORCHSCRIPT, activation_of(model), arch_name)
    return model.eval(), tokenizer, info


def _check_shapes(architecture: str, state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a checkpoint whose tensors belong to another architecture, saying which one they look like."""
    from clipsvd.models import formats

    if architecture not in open_clip.list_models():
        raise ConfigError(f"architecture: '{architecture}' is not an open_clip model")
    with torch.device("meta"):
        expected = create_model_for_weights(architecture, device="meta").state_dict()  # shapes only
    wrong = [k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in state and k != "attn_mask"]
    if wrong or missing:
        raise CheckpointError(
            f"checkpoint {path} is not {architecture}: its tensors look like {formats.describe_tensors(state)}. "
            f"Pass that architecture with --arch (or omit --arch for OpenAI archives)")


def _load_state_dict(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """open_clip's load_checkpoint steps on a dict (conversions, logit_scale shape, position ids), then strict."""
    from clipsvd.models import formats

    original = dict(state_dict)  # open_clip's resizing edits the dict; describe what the file holds
    state_dict = open_clip.convert.convert_state_dict(model, dict(state_dict))
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = open_clip.model.convert_to_custom_text_state_dict(state_dict)
    for key in ("logit_scale", "logit_bias"):
        own = getattr(model, key, None)
        if key in state_dict and own is not None and own.ndim != state_dict[key].ndim:
            state_dict[key] = state_dict[key].reshape(own.shape)
    if "logit_bias" not in state_dict and getattr(model, "logit_bias", None) is not None:
        state_dict["logit_bias"] = torch.zeros_like(state_dict["logit_scale"])
    position_ids = "text.transformer.embeddings.position_ids"
    if position_ids in state_dict and not hasattr(model, position_ids):
        del state_dict[position_ids]
    try:
        open_clip.model.resize_pos_embed(state_dict, model)
        open_clip.model.resize_text_pos_embed(state_dict, model)
        model.load_state_dict(state_dict, strict=True)
    except (RuntimeError, AssertionError, KeyError) as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines()[:3]]
        raise CheckpointError(
            f"checkpoint {path} does not load into {arch}: its tensors look like "
            f"{formats.describe_tensors(original)}. ({'; '.join(lines)[:300]})"
        ) from exc


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
