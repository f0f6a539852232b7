"""Fine-tunes saved as adapters by other projects' code, rebuilt as full weights in the base's open_clip layout.

* The official CLIP-SVD (HealthX-Lab/CLIP-SVD, svf_utils/): every nn.Linear of OpenAI CLIP is an `SVD_Linear` —
  `fc_V` (r × in, frozen), `vector_S` (1 × r, trained), `fc_U` (out × r, frozen, with the layer's bias) — and each
  block's attention a `PlainMultiHeadAttention` with separate q_proj, k_proj, v_proj and proj. `save_model` writes
  `{"weights": model.state_dict(), "metadata": {...}}`. Recomposed here to W = U·diag(s)·V, so every σ shift is
  exactly the trained vector_S minus the base's σ₀.
* CLIP-LoRA (MaxZanella/CLIP-LoRA, loralib/utils.py `save_lora`): `{"weights": {"layer_i": {"q_proj":
  {"w_lora_A", "w_lora_B"}, ...}}, "metadata": {r, alpha, encoder, params, position}}`, layers numbered over the
  text tower's chosen blocks, then the vision tower's (`apply_lora`); ΔW = α/√r · B·A (loralib's LoRALayer).
* PEFT adapter folders (`adapter_config.json` + `adapter_model.safetensors`) saved by `peft` on open_clip with
  q/k/v split out of in_proj (as clipsvd.methods.peft_lora does); ΔW = B·A · α/r (α/√r with use_rslora); DoRA
  adapters (use_dora) also carry a magnitude per output row, merged as PEFT merges them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from clipsvd.errors import CheckpointError
from clipsvd.methods.clip_lora import position_layers

CLIP_SVD = "official CLIP-SVD checkpoint (SVD_Linear: U·diag(s)·V)"
CLIP_LORA = "CLIP-LoRA save_lora file"
PEFT_ADAPTER = "PEFT LoRA adapter folder"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
DORA_MAGNITUDE = "lora_magnitude_vector"  # PEFT's key for DoRA's per-row magnitude m
# A CLIP-SVD checkpoint whose U·diag(σ₀)·V misses the base by more than this (relative Frobenius norm) was
# decomposed from other weights. Checkpoints saved in fp16 reproduce their base to ~1e-3.
SVD_BASE_TOLERANCE = 1e-2
_QKV = ("q_proj", "k_proj", "v_proj")


def is_clip_svd(weights: dict[str, Any]) -> bool:
    return any(key.endswith(".vector_S") for key in weights)


def is_clip_lora(weights: dict[str, Any]) -> bool:
    return bool(weights) and all(key.startswith("layer_") and isinstance(v, dict) for key, v in weights.items())


def _attention_rows(key: str, width: int) -> tuple[str, slice] | None:
    """`...attn.q_proj.weight` → (`...attn.in_proj_weight`, rows of q); out projections → (`...attn.out_proj.…`)."""
    module, param = key.rsplit(".", 1)
    prefix, _, name = module.rpartition(".")
    if not prefix.endswith("attn"):
        return None
    if name in _QKV:
        index = _QKV.index(name)
        return f"{prefix}.in_proj_{param}", slice(index * width, (index + 1) * width)
    if name in ("proj", "out_proj"):
        return f"{prefix}.out_proj.{param}", slice(None)
    return None


def _base_rows(base: dict[str, torch.Tensor], key: str) -> tuple[str, slice]:
    """Where a separate-projection key's tensor lives in the base's open_clip layout (in_proj rows or as is)."""
    if key in base:
        return key, slice(None)
    prefix = key.split(".attn.")[0] + ".attn."
    width_key = prefix + "out_proj.weight"
    mapped = _attention_rows(key, base[width_key].shape[0]) if width_key in base else None
    if mapped is None or mapped[0] not in base:
        raise CheckpointError(f"'{key}' names a module the base model does not have")
    return mapped


def recompose_clip_svd(weights: dict[str, torch.Tensor], base: dict[str, torch.Tensor]
                       ) -> tuple[dict[str, torch.Tensor], float]:
    """An official CLIP-SVD state dict → open_clip-layout tensors, and the worst relative miss of U·diag(σ₀)·V
    against the base (refused above SVD_BASE_TOLERANCE, naming the module and by how much)."""
    plain: dict[str, torch.Tensor] = {}
    modules = sorted({key[: -len(".vector_S")] for key in weights if key.endswith(".vector_S")})
    worst = 0.0
    for module in modules:
        try:
            u = weights[f"{module}.fc_U.weight"].double()
            v = weights[f"{module}.fc_V.weight"].double()
        except KeyError as exc:
            raise CheckpointError(f"CLIP-SVD module '{module}' has vector_S but no {exc.args[0]}") from None
        s = weights[f"{module}.vector_S"].double().reshape(-1)
        if u.shape[1] != s.numel() or v.shape[0] != s.numel():
            raise CheckpointError(f"CLIP-SVD module '{module}': fc_U {tuple(u.shape)}, vector_S {s.numel()}, "
                                  f"fc_V {tuple(v.shape)} do not compose")
        name, rows = _base_rows(base, f"{module}.weight")
        w_base = base[name][rows].double()
        if tuple(w_base.shape) != (u.shape[0], v.shape[1]):
            raise CheckpointError(f"CLIP-SVD module '{module}' composes a {u.shape[0]} × {v.shape[1]} matrix; the "
                                  f"base's '{name}' is {tuple(w_base.shape)}")
        sigma0 = ((u.t() @ w_base) * v).sum(dim=1)  # the base's σ along the checkpoint's frozen vectors
        miss = float(torch.linalg.norm((u * sigma0) @ v - w_base) / torch.linalg.norm(w_base).clamp_min(1e-30))
        if miss > SVD_BASE_TOLERANCE:
            raise CheckpointError(
                f"CLIP-SVD module '{module}': U·diag(σ₀)·Vᵀ misses the base's '{name}' by {miss:.3g} (relative "
                f"Frobenius norm; at most {SVD_BASE_TOLERANCE:g} expected): this checkpoint was decomposed from "
                "other weights than this base")
        worst = max(worst, miss)
        plain[f"{module}.weight"] = ((u * s) @ v).to(weights[f"{module}.vector_S"].dtype)
        if f"{module}.fc_U.bias" in weights:
            plain[f"{module}.bias"] = weights[f"{module}.fc_U.bias"]
    owned = {f"{m}.{part}" for m in modules for part in ("vector_S", "fc_U.weight", "fc_V.weight", "fc_U.bias")}
    plain.update({k: v for k, v in weights.items() if k not in owned})
    return fuse_attention(plain, base), worst


def fuse_attention(weights: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Separate q/k/v/proj tensors (the official attention modules) fused into open_clip's in_proj/out_proj."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in weights.items():
        module = key.rsplit(".", 1)[0]
        if key in base or not module.rsplit(".", 1)[-1] in (*_QKV, "proj"):
            out[key] = value
            continue
        name, rows = _base_rows(base, key)
        if rows == slice(None):
            out[name] = value
        else:
            parts.setdefault(name, {})[rows.start] = value
    for name, pieces in parts.items():
        if len(pieces) != 3:
            raise CheckpointError(f"'{name}': the checkpoint holds {len(pieces)} of q_proj, k_proj, v_proj")
        out[name] = torch.cat([pieces[start] for start in sorted(pieces)], dim=0)
    return out


def _add_delta(merged: dict[str, torch.Tensor], base: dict[str, torch.Tensor], key: str, delta: torch.Tensor,
               source: str) -> None:
    name, rows = _base_rows(base, key)
    target = merged.setdefault(name, base[name].clone())
    if tuple(target[rows].shape) != tuple(delta.shape):
        raise CheckpointError(f"{source}: the update of '{key}' is {tuple(delta.shape)}, the base's '{name}' "
                              f"{'rows ' if rows != slice(None) else ''}are {tuple(target[rows].shape)}")
    target[rows] += delta.to(target.dtype)


def merge_clip_lora(data: dict[str, Any], base: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """CLIP-LoRA's saved layers folded into the base: the changed tensors only, in the base's layout."""
    meta = data.get("metadata") or {}
    try:
        r, alpha, encoder, position = int(meta["r"]), float(meta["alpha"]), meta["encoder"], meta["position"]
    except KeyError as exc:
        raise CheckpointError(f"{source}: CLIP-LoRA metadata has no {exc.args[0]!r}") from None
    blocks = []
    for prefix in ({"text": ("",), "vision": ("visual.",), "both": ("", "visual.")}.get(encoder) or ()):
        depth = len({k.split(".")[len(prefix.split(".")) + 1] for k in base
                     if k.startswith(f"{prefix}transformer.resblocks.")})
        blocks += [f"{prefix}transformer.resblocks.{i}" for i in position_layers(position, depth)]
    if not blocks:
        raise CheckpointError(f"{source}: CLIP-LoRA encoder {encoder!r} is not text, vision or both")
    weights = data["weights"]
    if len(weights) != len(blocks):
        raise CheckpointError(f"{source}: {len(weights)} LoRA layers saved, but encoder {encoder!r} at position "
                              f"{position!r} names {len(blocks)} blocks of this base")
    scaling = alpha / math.sqrt(r)
    merged: dict[str, torch.Tensor] = {}
    for index, block in enumerate(blocks):
        for proj, pair in weights[f"layer_{index}"].items():
            a, b = pair["w_lora_A"].float(), pair["w_lora_B"].float()
            _add_delta(merged, base, f"{block}.attn.{proj}.weight", (b @ a) * scaling, source)
    return merged


def merge_peft_adapter(folder: Path, base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A PEFT LoRA or DoRA adapter folder folded into the base: the changed tensors only, in the base's layout."""
    from safetensors.torch import load_file

    try:
        config = json.loads((folder / PEFT_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / PEFT_CONFIG}: not readable JSON ({exc})") from exc
    if config.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{folder}: a PEFT {config.get('peft_type')} adapter; only LoRA adapters merge")
    weights_file = folder / PEFT_WEIGHTS
    if not weights_file.is_file():
        raise CheckpointError(f"{folder}: no {PEFT_WEIGHTS} beside {PEFT_CONFIG}")
    tensors = load_file(str(weights_file))
    r, alpha = int(config["r"]), float(config.get("lora_alpha", config["r"]))
    scaling = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
    modules = sorted({k.split(".lora_A.")[0] for k in tensors if ".lora_A." in k})
    dora = bool(config.get("use_dora"))
    unknown = [k for k in tensors if ".lora_A." not in k and ".lora_B." not in k
               and not (dora and k.endswith(DORA_MAGNITUDE))]
    if unknown:
        raise CheckpointError(f"{folder}: tensors other than LoRA's A and B{' and DoRA magnitudes' if dora else ''}: "
                              f"{unknown[:5]}")
    merged: dict[str, torch.Tensor] = {}
    for module in modules:
        path = module.removeprefix("base_model.model.")
        a, b = tensors[f"{module}.lora_A.weight"].float(), tensors.get(f"{module}.lora_B.weight")
        if b is None:
            raise CheckpointError(f"{folder}: '{module}' has lora_A but no lora_B")
        try:
            _base_rows(base, f"{path}.weight")
        except (CheckpointError, KeyError):
            raise CheckpointError(f"{folder}: the adapter targets '{path}', a module this base model does not "
                                  "have (an adapter for another architecture?)") from None
        delta = (b.float() @ a) * scaling
        if not dora:
            _add_delta(merged, base, f"{path}.weight", delta, str(folder))
            continue
        magnitude = tensors.get(f"{module}.{DORA_MAGNITUDE}")
        if magnitude is None:
            raise CheckpointError(f"{folder}: a DoRA adapter (use_dora) without '{module}.{DORA_MAGNITUDE}'")
        _set_dora_rows(merged, base, f"{path}.weight", delta, magnitude.float(), str(folder))
    return merged


def _set_dora_rows(merged: dict[str, torch.Tensor], base: dict[str, torch.Tensor], key: str, delta: torch.Tensor,
                   magnitude: torch.Tensor, source: str) -> None:
    """DoRA's merge, as PEFT's DoraLinearLayer computes it: W' = m / ‖W + ΔW‖ · (W + ΔW), the norm taken per output
    row (over the input dimension) of the updated weight."""
    name, rows = _base_rows(base, key)
    target = merged.setdefault(name, base[name].clone())
    if tuple(target[rows].shape) != tuple(delta.shape) or magnitude.shape != (delta.shape[0],):
        raise CheckpointError(f"{source}: the DoRA update of '{key}' is {tuple(delta.shape)} with magnitude "
                              f"{tuple(magnitude.shape)}; the base's '{name}' {'rows ' if rows != slice(None) else ''}"
                              f"are {tuple(target[rows].shape)}")
    updated = base[name][rows].float() + delta
    target[rows] = ((magnitude / torch.linalg.norm(updated, dim=1)).unsqueeze(1) * updated).to(target.dtype)
