"""A model fine-tuned elsewhere, stored as its difference from the base (clipsvd.importing makes such runs).

Nothing trains: attaching the method to the base model and loading the run's tensors adds each stored ΔW to the
tensor of the same name, so `merge()` is the fine-tuned model and every analysis of a run works on it unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from clipsvd.checksums import sha256_of_unchanged
from clipsvd.choices import described
from clipsvd.errors import CheckpointError
from clipsvd.methods.base import Method, MethodConfig
from clipsvd.methods.presets import Setting
from clipsvd.methods.registry import register_method

DELTA_PREFIX = "delta."  # adapter keys: "delta.<name in the base's state dict>"


@dataclass
class ImportedConfig(MethodConfig):
    base_sha256: str | None = field(default=None, metadata=described(
        "sha256 of the base checkpoint file the differences were taken against (None for tags and hub models); a "
        "run is not rebuilt on a file that has changed since"))


@register_method
class Imported(Method):
    name = "imported"
    display_name = "Imported fine-tune"
    summary = ("A model fine-tuned elsewhere (full weights, CLIP-SVD, PEFT or CLIP-LoRA checkpoint), stored as its "
               "difference from the base model; `clipsvd import` makes these runs.")
    Config = ImportedConfig
    trains = False
    runnable = False  # made by clipsvd.importing, never trained
    trains_text_encoder = True  # a full fine-tune may change either tower

    def __init__(self, config: MethodConfig | dict | None = None):
        super().__init__(config)
        self._deltas: dict[str, torch.Tensor] = {}

    @classmethod
    def default_config(cls, setting: Setting = Setting()) -> MethodConfig:
        """Nothing trains here: no preset applies."""
        return ImportedConfig(epochs=0)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """The differences this run holds (empty until loaded): only the tensors the fine-tune changed."""
        return {DELTA_PREFIX + name: delta.clone() for name, delta in self._deltas.items()}

    def load_adapter_state(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Add each stored ΔW to the base tensor of the same name; refuse names or shapes the base does not have,
        and a base checkpoint file that is not the one the differences were taken against."""
        self._check_base_file(source)
        state = self.model.state_dict(keep_vars=True)
        deltas: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            name = key[len(DELTA_PREFIX):] if key.startswith(DELTA_PREFIX) else None
            if name is None or name not in state:
                raise CheckpointError(f"{source}: '{key}' is not the difference of a tensor of this base model")
            if tuple(value.shape) != tuple(state[name].shape):
                raise CheckpointError(f"{source}: '{key}' has shape {tuple(value.shape)}, the base's '{name}' has "
                                      f"{tuple(state[name].shape)} (imported against another base?)")
            deltas[name] = value
        with torch.no_grad():
            for name, delta in deltas.items():
                state[name].add_(delta.to(state[name].device, state[name].dtype))
        self._deltas = {**self._deltas, **{k: v.detach().cpu() for k, v in deltas.items()}}

    def _check_base_file(self, source: str) -> None:
        """ΔW added to another file than the one it was taken against would be another model, silently."""
        expected = self.config.base_sha256
        weights = Path(str(self.loaded.spec.weights))
        if not expected or not weights.is_file():
            return
        actual = sha256_of_unchanged(weights)
        if actual != expected:
            raise CheckpointError(f"{source}: the base checkpoint {weights} has changed since the import (sha256 "
                                  f"{actual[:12]}…, imported against {expected[:12]}…); import the fine-tune again "
                                  "against this file, or restore the original one")
