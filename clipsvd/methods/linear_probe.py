"""Linear probe: a linear classifier on frozen, normalised image features.

The head starts from the zero-shot text weights (so epoch 0 equals zero-shot CLIP) and is trained
with the shared loop. It knows only the classes it was trained on: novel classes are unsupported.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clipsvd.errors import ConfigError
from clipsvd.methods.base import Method, MethodConfig, check_adapter_keys
from clipsvd.methods.registry import register_method


@dataclass
class LinearProbeConfig(MethodConfig):
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 20


@register_method
class LinearProbe(Method):
    name = "linear-probe"
    display_name = "Linear probe"
    summary = "A linear head on frozen image features, initialised from the class prompts."
    Config = LinearProbeConfig
    supports_novel_classes = False
    changes_weights = False  # the head lives beside the model; the CLIP weights stay pretrained

    def setup(self, loaded, class_prompts) -> None:
        with torch.no_grad():
            text = loaded.encode_text(class_prompts)
        self.head = nn.Parameter(text.clone())
        self.train_prompts = list(class_prompts)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.head]

    def class_weights(self, class_prompts: list[str]) -> torch.Tensor:
        if class_prompts != self.train_prompts:
            raise ConfigError("linear-probe: the head only knows its training classes; novel classes are unsupported")
        return self.head

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().image_features(images)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        return {"head": self.head.detach().cpu().clone()}

    def load_adapter_state(self, tensors: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        check_adapter_keys(self.adapter_state(), tensors, source, self.name)
        with torch.no_grad():
            self.head.copy_(tensors["head"].to(self.head.device))
