"""Build a model from a local checkpoint file, one loader per format (the formats: clipsvd.models.checkpoints.formats).

`load_checkpoint_file` dispatches: a transformers snapshot folder or file, a safetensors or torch state dict, or
OpenAI's TorchScript archive (`load_openai_archive`); each returns exactly what its own loader gives, refused with the
architecture its tensors look like when they do not fit (`check_shapes`, `load_state_dict_into`).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any, Iterator

import open_clip
import torch

from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.models.checkpoints import formats
from clipsvd.models.finite import check_finite
from clipsvd.models.registry import post_build
from clipsvd.models.spec import AUTO_ARCHITECTURE, ModelSpec, WeightsInfo, activation_of


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


def load_checkpoint_file(
    spec: ModelSpec, path: Path, source: str | None = None
) -> tuple[torch.nn.Module, Any, WeightsInfo]:
    """Any checkpoint file format, loaded to exactly what its own loader gives (see clipsvd.models.checkpoints.formats)."""
    if path.is_dir():  # a transformers snapshot folder
        files = [path / name for name in formats.HF_WEIGHT_FILES if (path / name).is_file()]
        if not files:
            raise CheckpointError(f"checkpoint folder {path} holds none of {formats.HF_WEIGHT_FILES}")
        path = files[0]
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    source = source or path.name
    if formats.is_torchscript_archive(path):
        return load_openai_archive(spec, path, source)
    state_dict, fmt = formats.read_state_dict(path)
    check_finite(state_dict, path)
    hf_config = formats.hf_config_next_to(path)
    family = formats.hf_family(state_dict, hf_config)
    quick_gelu, note = spec.quick_gelu, ""
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
        open_clip.set_model_preprocess_cfg(model, openai_preprocess(model))
        tokenizer = open_clip.SimpleTokenizer(context_length=config["text_cfg"]["context_length"])
    else:
        model = create_model_for_weights(spec.architecture, device="cpu", **kwargs)  # the file's weights load below
        tokenizer = open_clip.get_tokenizer(spec.architecture)
    model = post_build(model, spec)
    load_state_dict_into(model, state_dict, path, arch_name)
    return model.eval(), tokenizer, WeightsInfo(source, fmt, activation_of(model), arch_name, note)


def openai_preprocess(model: torch.nn.Module) -> dict[str, Any]:
    size = model.visual.image_size
    return {"size": size, "mode": "RGB", "mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD,
            "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}


def load_openai_archive(spec: ModelSpec, path: Path, source: str) -> tuple[torch.nn.Module, Any, WeightsInfo]:
    """OpenAI's TorchScript archive, read by open_clip's own loader (torch.jit; QuickGELU, as OpenAI trained)."""
    if spec.quick_gelu is False:
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
        check_shapes(spec.architecture, state, path)
        arch_name = spec.architecture
    open_clip.set_model_preprocess_cfg(model, openai_preprocess(model))
    tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    info = WeightsInfo(source, formats.TORCHSCRIPT, activation_of(model), arch_name)
    return model.eval(), tokenizer, info


def check_shapes(architecture: str, state: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a checkpoint whose tensors belong to another architecture, saying which one they look like."""
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


def load_state_dict_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: Path, arch: str) -> None:
    """open_clip's load_checkpoint steps on a dict (conversions, logit_scale shape, position ids), then strict."""
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
