"""Import a model fine-tuned elsewhere as a run of the store, so every analysis of runs works on it.

The fine-tuned file (any format below) is converted to the base's open_clip layout and compared tensor by tensor
with the base; the run keeps only the differences ΔW of the tensors that changed (method `imported`, whose
`merge()` adds them back), and config.json records both sources. Formats: full state dicts as the model loader
reads them (open_clip, OpenAI TorchScript, safetensors, transformers CLIPModel, open_clip training checkpoints),
the official CLIP-SVD checkpoints, CLIP-LoRA's saved LoRA files and PEFT LoRA adapter folders
(clipsvd.importing.adapters). Nothing is unpickled: torch files are read with weights_only=True.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from clipsvd.checksums import sha256_of, sha256_of_unchanged
from clipsvd.errors import CheckpointError
from clipsvd.importing import adapters
from clipsvd.methods.imported import DELTA_PREFIX, Imported
from clipsvd.models import ModelSpec, load_model
from clipsvd.models.checkpoints import formats
from clipsvd.runs import Run, RunStore
from clipsvd.runs.cells import run_record
from clipsvd.training.experiment import ExperimentConfig

IMPORT_RECORD = "imported"  # config.json's key for where the run came from
_LISTED = 8  # keys named in an error before "… and N more"


@dataclass
class FineTuned:
    """A fine-tuned model's tensors in the base's open_clip layout: all of them (`complete`), or only those an
    adapter changed (the rest are the base's)."""

    tensors: dict[str, torch.Tensor]
    format: str
    complete: bool = True
    note: str = ""


def _listed(keys: list[str]) -> str:
    more = f" … and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return ", ".join(keys[:_LISTED]) + more


def _torch_file(path: Path) -> Any:
    """A torch.save file's contents with weights_only=True (no pickled code), refused by name otherwise."""
    if formats.sniff_format(path) != formats.STATE_DICT:
        return None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path}: cannot be read as a tensor file with weights_only=True "
                              f"({first}). Expected {formats.EXPECTED_FORMATS}") from exc


def read_finetuned(path: Path, base: dict[str, torch.Tensor]) -> FineTuned:
    """The fine-tuned model at `path` in the base's layout, whatever format it was saved in."""
    if path.is_dir() and (path / adapters.PEFT_CONFIG).is_file():
        return FineTuned(adapters.merge_peft_adapter(path, base), adapters.PEFT_ADAPTER, complete=False)
    if path.is_dir():  # a transformers snapshot folder
        files = [path / name for name in formats.HF_WEIGHT_FILES if (path / name).is_file()]
        if not files:
            raise CheckpointError(f"{path}: a folder holding neither {adapters.PEFT_CONFIG} (a PEFT adapter) nor "
                                  f"any of {formats.HF_WEIGHT_FILES} (a transformers snapshot)")
        path = files[0]
    if not path.is_file():
        raise CheckpointError(f"fine-tuned checkpoint not found: {path}")
    if formats.is_torchscript_archive(path):
        try:
            model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
        except Exception as exc:
            raise CheckpointError(f"checkpoint {path}: OpenAI TorchScript archive could not be read: {exc}") from exc
        return FineTuned(dict(model.state_dict()), formats.TORCHSCRIPT)
    data = _torch_file(path)
    if isinstance(data, dict) and isinstance(data.get("weights"), dict):  # {"weights", "metadata"}: official code
        weights = data["weights"]
        if adapters.is_clip_svd(weights):
            tensors, miss = adapters.recompose_clip_svd(weights, base)
            return FineTuned(tensors, adapters.CLIP_SVD, note=f"U·diag(σ₀)·Vᵀ reproduces the base to {miss:.1e}")
        if adapters.is_clip_lora(weights):
            return FineTuned(adapters.merge_clip_lora(data, base, str(path)), adapters.CLIP_LORA, complete=False)
        raise CheckpointError(f"checkpoint {path}: a {{'weights', 'metadata'}} file that is neither an official "
                              "CLIP-SVD checkpoint (no vector_S) nor a CLIP-LoRA file (no layer_i entries)")
    state_dict, fmt = formats.read_state_dict(path)
    family = formats.hf_family(state_dict, formats.hf_config_next_to(path))
    if family is not None:
        if family != "clip":
            raise CheckpointError(f"checkpoint {path} is a transformers '{family}' model; only CLIPModel checkpoints "
                                  "convert to open_clip")
        state_dict, fmt = formats.convert_hf_clip(state_dict), formats.HF_CLIP
    if adapters.is_clip_svd(state_dict):  # an official CLIP-SVD state dict saved bare
        tensors, miss = adapters.recompose_clip_svd(state_dict, base)
        return FineTuned(tensors, adapters.CLIP_SVD, note=f"U·diag(σ₀)·Vᵀ reproduces the base to {miss:.1e}")
    return FineTuned(state_dict, fmt)


def _check_architecture(tensors: dict[str, torch.Tensor], base: dict[str, torch.Tensor], path: Path,
                        base_label: str) -> None:
    """Refuse tensors of another architecture, naming the first whose shapes differ and both shapes."""
    wrong = [k for k in tensors if k in base and tuple(tensors[k].shape) != tuple(base[k].shape)]
    if wrong:
        shown = "; ".join(f"{k}: {tuple(tensors[k].shape)} here, {tuple(base[k].shape)} in the base"
                          for k in wrong[:3])
        raise CheckpointError(
            f"{path} and its base {base_label} are different architectures: {len(wrong)} tensors differ in shape "
            f"({shown}). The fine-tuned tensors look like {formats.describe_tensors(tensors)}")


def import_checkpoint(store: RunStore, base: ModelSpec, finetuned: str | Path, strict: bool = True,
                      label: str | None = None) -> Run:
    """A run of `store` holding `finetuned` as its difference from `base` (method `imported`, nothing trained).

    Refused: another architecture than the base's, a model identical to its base (no run kept), keys missing or
    extra (listed; with strict=False missing ones stay the base's and extra ones are dropped, and the label says
    so), adapters for modules the base does not have, CLIP-SVD checkpoints decomposed from other weights.
    """
    path = Path(finetuned).expanduser()
    loaded = load_model(base, "cpu")
    base_state = {k: v.detach() for k, v in loaded.model.state_dict().items()}
    fine = read_finetuned(path, base_state)
    tensors = dict(fine.tensors)
    for key, value in list(tensors.items()):  # OpenAI's scalar logit_scale vs open_clip's, and the like
        if key in base_state and value.numel() == base_state[key].numel() and value.ndim != base_state[key].ndim:
            tensors[key] = value.reshape(base_state[key].shape)
    _check_architecture(tensors, base_state, path, base.label)
    missing = sorted(set(base_state) - set(tensors)) if fine.complete else []
    extra = sorted(set(tensors) - set(base_state))
    if (missing or extra) and strict:
        parts = ([f"missing {len(missing)} of the base's tensors ({_listed(missing)})"] if missing else []) + \
                ([f"{len(extra)} the base does not have ({_listed(extra)})"] if extra else [])
        raise CheckpointError(f"{path} does not match its base {base.label} key for key: {'; '.join(parts)}. "
                              "Import with strict=False (--strict false) to keep the base's values for the missing "
                              "tensors and drop the extra ones")
    deltas: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key not in base_state:
            continue
        own = base_state[key]
        if not own.is_floating_point():
            if not torch.equal(value.to(own.dtype), own):
                raise CheckpointError(f"{path}: the integer tensor '{key}' differs from the base's")
            continue
        value = value.to(own.dtype)
        if not torch.equal(value, own):
            deltas[key] = value - own
    if not deltas:
        raise CheckpointError(f"{path} is identical to its base {base.label}: every tensor it holds equals the "
                              "base's, so there is nothing to analyse; no run was kept")
    run_label = label or f"imported from {path.name}"
    if missing and not label:
        run_label += f" (missing {len(missing)} tensors, kept the base's: {_listed(missing)})"
    base_file = Path(str(base.weights))
    config = ExperimentConfig(method=Imported.name, model=base, shots=None, device="cpu", hyperparameters={
        "base_sha256": sha256_of_unchanged(base_file) if base_file.is_file() else None})
    record = run_record(config, 0, prompts=[], imported={
        "label": run_label,
        "finetuned": {"path": str(path.resolve()), "format": fine.format,
                      "sha256": sha256_of(path) if path.is_file() else None, "note": fine.note},
        "base": {"spec": base.to_dict(), "weights": loaded.info.to_dict()},
        "changed_tensors": sorted(deltas), "missing": missing, "extra": extra,
    })
    changed_values = sum(d.numel() for d in deltas.values())
    total_values = sum(v.numel() for v in base_state.values() if v.is_floating_point())
    metrics = {"trainable": changed_values, "total": total_values,
               "trainable_fraction": changed_values / total_values if total_values else 0.0}
    run = Run(run_id=store.new_run_id(Imported.name, path.stem), config=record, metrics=metrics, message=run_label)
    return store.save(run, {DELTA_PREFIX + k: v for k, v in deltas.items()})
