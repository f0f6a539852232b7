"""Checkpoint files as researchers have them: detect the format, read tensors safely, convert layouts.

Formats: OpenAI TorchScript archives (read by open_clip's own `load_openai_model`, i.e. torch.jit,
never a Python pickle), safetensors, plain or training-checkpoint state dicts (`torch.load` with
`weights_only=True`), and Hugging Face `transformers` CLIPModel files, whose key layout is converted
here to open_clip's. Architecture shapes are read off the tensors, so a file can name what it is.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch

from clipsvd.errors import CheckpointError

TORCHSCRIPT = "OpenAI TorchScript archive"
SAFETENSORS = "safetensors"
STATE_DICT = "state dict"
TRAINING_CHECKPOINT = "open_clip training checkpoint"
HF_CLIP = "transformers CLIPModel, converted"
# Keys OpenAI's archives carry besides the weights.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives are zip files holding compiled `code/`; torch.save zips hold only data.pkl."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("/constants.pkl") for name in archive.namelist())


EXPECTED_FORMATS = ("a PyTorch state dict or open_clip training checkpoint (torch.save: .pt, .pth, .bin, .ckpt), "
                    "safetensors, an OpenAI TorchScript archive, or a transformers CLIPModel file")
# torch.save writes a zip (local file header "PK\x03\x04"; a truncated one still starts so, and torch.load then names
# the damage) or, before torch 1.6, a pickle of protocol 2 or later (0x80, protocol).
_PICKLE_PROTOCOL = 0x80
_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors format's own limit on its JSON header


def sniff_format(path: Path) -> str | None:
    """SAFETENSORS, STATE_DICT (a torch.save zip or pickle) or None, from the file's first bytes and not its name: a
    text file given as weights must be refused by name, not reach torch.load's unpickler and its bare IndexError."""
    with open(path, "rb") as file:
        head = file.read(9)
    if len(head) == 9 and 0 < int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER and head[8:] == b"{":
        return SAFETENSORS  # an 8-byte header length, then the header's JSON (a truncated file: safetensors says so)
    if head[:4] == b"PK\x03\x04" or (len(head) >= 2 and head[0] == _PICKLE_PROTOCOL and 2 <= head[1] <= 5):
        return STATE_DICT
    return None


def describe_start(path: Path) -> str:
    """What a file that is not a checkpoint looks like, for the error: empty, text (its first words) or bytes."""
    with open(path, "rb") as file:
        head = file.read(48)
    if not head:
        return "it is empty"
    text = head.decode("utf-8", errors="ignore")  # ignore: a character cut at byte 48
    if len(text.encode()) < len(head) - 3 or any(ch < " " and ch not in "\t\r\n" for ch in text):
        return f"it starts with the bytes {head[:8].hex(' ')}"
    return f"it is text, starting {text.splitlines()[0][:40]!r}"


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors, format) of a safetensors or torch file, unwrapped from training checkpoints; no pickle code runs."""
    sniffed = sniff_format(path)
    if sniffed is None:
        raise CheckpointError(f"checkpoint {path}: not a checkpoint file ({describe_start(path)}). Expected "
                              f"{EXPECTED_FORMATS}")
    if sniffed == SAFETENSORS:
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), SAFETENSORS
        except Exception as exc:
            raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from exc
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # refused pickle, truncated file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a tensor file with weights_only=True ({first}). "
            f"Expected {EXPECTED_FORMATS}"
        ) from exc
    fmt = STATE_DICT
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data, fmt = data["state_dict"], TRAINING_CHECKPOINT
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"checkpoint {path}: expected a dict of tensors (a state dict), got {type(data).__name__}")
    if all(key.startswith("module.") for key in data):
        data = {key[len("module."):]: value for key, value in data.items()}
    for key in _OPENAI_EXTRA_KEYS:
        data.pop(key, None)
    return data, fmt


# ----- Hugging Face transformers CLIP ------------------------------------------------------------

def hf_family(state_dict: dict[str, torch.Tensor], config: dict[str, Any] | None) -> str | None:
    """'clip' for a transformers CLIPModel file, another family name for other transformers files, else None."""
    if config and config.get("model_type"):
        return str(config["model_type"])
    keys = state_dict.keys()
    if not any(k.startswith(("vision_model.", "text_model.")) for k in keys):
        return None
    if "logit_bias" in keys or any(k.startswith("vision_model.head.") for k in keys):
        return "siglip"
    if "visual_projection.weight" in keys and "text_projection.weight" in keys:
        return "clip"
    return "unknown transformers model"


def hf_config_next_to(path: Path) -> dict[str, Any] | None:
    """The config.json beside a transformers weights file (a snapshot folder), if there is one."""
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config}: not readable JSON ({exc})") from exc


def convert_hf_clip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPModel keys → open_clip CLIP keys (q/k/v fused into in_proj, projections transposed)."""
    out: dict[str, torch.Tensor] = {}
    towers = {"text_model.": "", "vision_model.": "visual."}
    renames = {
        "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
        "text_model.embeddings.position_embedding.weight": "positional_embedding",
        "text_model.final_layer_norm.weight": "ln_final.weight",
        "text_model.final_layer_norm.bias": "ln_final.bias",
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
        "logit_scale": "logit_scale",
    }
    layer_parts = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue
        if key in renames:
            out[renames[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif ".encoder.layers." in key:
            tower, rest = key.split(".encoder.layers.", 1)
            layer, rest = rest.split(".", 1)
            prefix = f"{towers[tower + '.']}transformer.resblocks.{layer}."
            module, param = rest.rsplit(".", 1)
            if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault(f"{prefix}attn.in_proj_{param}", {})[module[-6]] = value
            elif module in layer_parts:
                out[f"{prefix}{layer_parts[module]}.{param}"] = value
            else:
                raise CheckpointError(f"transformers CLIP key '{key}' has no open_clip counterpart")
        else:
            raise CheckpointError(f"transformers CLIP key '{key}' has no open_clip counterpart")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def open_clip_config_from_hf(config: dict[str, Any]) -> dict[str, Any]:
    """An open_clip CLIP config with the shapes and activation of a transformers CLIPConfig."""
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    v_width, t_width = vision["hidden_size"], text["hidden_size"]
    return {
        "embed_dim": config.get("projection_dim", 512),
        "quick_gelu": vision.get("hidden_act", "quick_gelu") == "quick_gelu",
        "vision_cfg": {
            "image_size": vision["image_size"], "patch_size": vision["patch_size"], "width": v_width,
            "layers": vision["num_hidden_layers"], "head_width": v_width // vision["num_attention_heads"],
            "mlp_ratio": vision["intermediate_size"] / v_width,
        },
        "text_cfg": {
            "context_length": text.get("max_position_embeddings", 77), "vocab_size": text.get("vocab_size", 49408),
            "width": t_width, "heads": text["num_attention_heads"], "layers": text["num_hidden_layers"],
            "mlp_ratio": text["intermediate_size"] / t_width,
        },
    }


# ----- what architecture do tensors belong to -----------------------------------------------------

def _shape_summary(state_dict: dict[str, torch.Tensor]) -> dict[str, int] | None:
    """Shapes of an open_clip/OpenAI-layout ViT CLIP state dict (None for other layouts)."""
    try:
        conv = state_dict["visual.conv1.weight"]
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        return {
            "embed_dim": state_dict["text_projection"].shape[1],
            "vision_width": conv.shape[0],
            "vision_layers": len({k.split(".")[3] for k in state_dict if k.startswith("visual.transformer.resblocks.")}),
            "patch_size": conv.shape[-1],
            "image_size": conv.shape[-1] * grid,
            "text_width": state_dict["ln_final.weight"].shape[0],
            "text_layers": len({k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks.")}),
            "context_length": state_dict["positional_embedding"].shape[0],
        }
    except (KeyError, IndexError):
        return None


def _config_summary(cfg: dict[str, Any]) -> dict[str, int] | None:
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if "timm_model_name" in vision or "hf_model_name" in text or not isinstance(vision.get("layers"), int):
        return None
    size = vision.get("image_size", 224)
    return {
        "embed_dim": cfg.get("embed_dim"), "vision_width": vision.get("width", 768),
        "vision_layers": vision.get("layers"), "patch_size": vision.get("patch_size", 16),
        "image_size": size[0] if isinstance(size, (list, tuple)) else size,
        "text_width": text.get("width", 512), "text_layers": text.get("layers", 12),
        "context_length": text.get("context_length", 77),
    }


def matching_architectures(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """open_clip architectures (registered ones included) whose shapes these tensors have."""
    summary = _shape_summary(state_dict)
    if summary is None:
        return []
    names = [name for name in open_clip.list_models()
             if _config_summary(open_clip.get_model_config(name) or {}) == summary]
    return sorted(names, key=lambda n: ("quickgelu" in n, len(n), n))


def describe_tensors(state_dict: dict[str, torch.Tensor]) -> str:
    """Say what architecture a state dict looks like, in words a user can act on."""
    names = matching_architectures(state_dict)
    summary = _shape_summary(state_dict)
    if summary is None:
        if any(k.startswith("visual.trunk.") for k in state_dict):
            return "a timm image tower (e.g. BiomedCLIP), not an open_clip ViT"
        return f"no open_clip ViT layout (first keys: {list(state_dict)[:3]})"
    shapes = (f"ViT {summary['vision_layers']}×{summary['vision_width']}, patch {summary['patch_size']}, "
              f"{summary['image_size']} px; text {summary['text_layers']}×{summary['text_width']}; "
              f"embed {summary['embed_dim']}")
    return f"{names[0]} ({shapes})" if names else f"an architecture not registered with open_clip ({shapes})"


def config_from_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """An open_clip config with the shapes of an OpenAI-layout ViT state dict (heads: width / 64, as OpenAI's)."""
    summary = _shape_summary(state_dict)
    if summary is None:
        raise CheckpointError(f"cannot infer an architecture from these tensors ({describe_tensors(state_dict)}); "
                              "name it with --arch")
    return {
        "embed_dim": summary["embed_dim"],
        "vision_cfg": {"image_size": summary["image_size"], "patch_size": summary["patch_size"],
                       "width": summary["vision_width"], "layers": summary["vision_layers"], "head_width": 64},
        "text_cfg": {"context_length": summary["context_length"],
                     "vocab_size": state_dict["token_embedding.weight"].shape[0], "width": summary["text_width"],
                     "heads": summary["text_width"] // 64, "layers": summary["text_layers"]},
    }
