"""ProLIP (arXiv 2410.05270): train only the last visual projection, pulled towards its pretrained value.

Loss: CE + λ·Σ(W − W₀)² (a sum, not a mean), λ = 1/K by default. The backbone is frozen, so the
image tower runs without autograd up to the projection.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.choices import described
from clipsvd.errors import ConfigError
from clipsvd.methods.base import Method, MethodConfig
from clipsvd.methods.registry import register_method


def last_visual_projection(visual: nn.Module) -> tuple[nn.Parameter, Callable, Callable]:
    """(projection matrix, frozen features before it, how it is applied) for open_clip and timm image towers."""
    if isinstance(getattr(visual, "proj", None), nn.Parameter) and hasattr(visual, "_pool"):  # open_clip ViT

        def features(images: torch.Tensor) -> torch.Tensor:
            return visual._pool(visual.transformer(visual._embeds(images)))[0]

        return visual.proj, features, lambda pooled: pooled @ visual.proj
    head = getattr(visual, "head", None)
    if hasattr(visual, "trunk") and isinstance(getattr(head, "proj", None), nn.Linear):  # timm (BiomedCLIP)
        names = [name for name, _ in head.named_children()]
        before = [module for name, module in head.named_children()][: names.index("proj")]

        def features(images: torch.Tensor) -> torch.Tensor:
            pooled = visual.trunk(images)
            for module in before:
                pooled = module(pooled)
            return pooled

        return head.proj.weight, features, head.proj
    raise ConfigError(f"prolip: {type(visual).__name__} has no last projection matrix this tool knows how to train")


@dataclass
class ProLIPConfig(MethodConfig):
    """ProLIP's own procedure on every dataset: 300 full-batch Adam steps on cached features of 300 augmented
    views (crop scale 0.5-1), cosine to 0 (astra-vision/ProLIP methods/ProLIP.py); cached_views=0 switches to
    the shared mini-batch loop."""

    optimizer: str = "adam"
    eps: float = 1e-4
    lr: float = 1e-5
    weight_decay: float = 0.0
    min_lr: float = 0.0
    crop_scale_min: float = 0.5
    cached_views: int = 300
    anchor_weight: float = field(default=1.0, metadata=described(
        "λ of the penalty λ·Σ(W − W₀)²; the preset sets 1/K"))


@register_method
class ProLIP(Method):
    name = "prolip"
    display_name = "ProLIP"
    summary = "Only the last visual projection, with a Frobenius penalty to the pretrained matrix."
    Config = ProLIPConfig
    features_are_tower_terms = False  # the trained projection maps the frozen tower's features

    def setup(self, loaded, class_prompts) -> None:
        self.proj, self._frozen_features, self._project = last_visual_projection(loaded.model.visual)
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

    def frozen_backbone(self):
        return self._frozen_features

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self._frozen_features(images.to(self.loaded.device))
        return F.normalize(self._project(features), dim=-1)

    def logits_from_features(self, features: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        return self.loaded.logit_scale * F.normalize(self._project(features), dim=-1) @ class_weights.t()

    def regularizer(self, class_weights: torch.Tensor) -> torch.Tensor:
        return self.config.anchor_weight * (self.proj - self.proj_init).pow(2).sum()
