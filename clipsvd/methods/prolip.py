"""ProLIP (arXiv 2410.05270): train only the last visual projection, pulled towards its pretrained value.

Loss: CE + λ·Σ(W − W₀)² (a sum, not a mean), λ = 1/K by default. The backbone is frozen, so the
image tower runs without autograd up to the projection.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipsvd.errors import ConfigError
from clipsvd.methods.base import Method, MethodConfig
from clipsvd.methods.registry import register_method


@dataclass
class ProLIPConfig(MethodConfig):
    optimizer: str = "adam"
    eps: float = 1e-4
    lr: float = 1e-5
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 50
    anchor_weight: float = 1.0  # λ; default_config sets 1/K


@register_method
class ProLIP(Method):
    name = "prolip"
    display_name = "ProLIP"
    summary = "Only the last visual projection, with a Frobenius penalty to the pretrained matrix."
    Config = ProLIPConfig

    @classmethod
    def default_config(cls, protocol: str = "few-shot", shots: int | None = None) -> ProLIPConfig:
        return ProLIPConfig(anchor_weight=1.0 / shots if shots else 1.0)

    def setup(self, loaded, class_prompts) -> None:
        visual = loaded.model.visual
        if getattr(visual, "proj", None) is None or not hasattr(visual, "_pool"):
            raise ConfigError(f"prolip: {type(visual).__name__} has no `proj` matrix to train")
        self.proj = visual.proj
        self.proj_init = self.proj.detach().clone()
        self.proj.requires_grad_(True)
        with torch.no_grad():
            self.text_weights = loaded.encode_text(class_prompts)
        self.train_prompts = list(class_prompts)

    def class_weights(self, class_prompts: list[str]) -> torch.Tensor:
        if class_prompts == self.train_prompts:
            return self.text_weights  # the text encoder is frozen: compute once
        with torch.no_grad():
            return self.loaded.encode_text(class_prompts)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.loaded.model.visual
        with torch.no_grad():
            pooled, _ = visual._pool(visual.transformer(visual._embeds(images.to(self.loaded.device))))
        return F.normalize(pooled @ self.proj, dim=-1)

    def regularizer(self, class_weights: torch.Tensor) -> torch.Tensor:
        return self.config.anchor_weight * (self.proj - self.proj_init).pow(2).sum()
