"""CLIPFit (arXiv 2409.16718): train text-MLP c_proj biases and all image-encoder LayerNorms.

The loss adds a text-consistency term λ·(1 − mean_c cos(t_c, t_c⁰)) that keeps the class text
features near the frozen zero-shot ones t_c⁰, computed once before anything is unfrozen.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.choices import described
from clipsvd.methods.base import Method, MethodConfig
from clipsvd.methods.registry import register_method
from clipsvd.models.layout import encoder_blocks


@dataclass
class CLIPFitConfig(MethodConfig):
    optimizer: str = "sgd"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    text_consistency_weight: float = field(default=2.0, metadata=described(
        "λ of the text-consistency term λ·(1 − mean cosine to the zero-shot class features); the presets set 2 "
        "few-shot (8 on DTD and SUN397) and 8 base→novel"))


def clipfit_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Text MLP output biases plus every LayerNorm parameter of the image encoder (the paper's choice)."""
    text = encoder_blocks(model, "text")
    proj = text.location("proj").module
    text_biases = [f"{text.block_path(i)}.{proj}.bias" for i in range(len(text.blocks))]
    visual_norms = [
        f"{name}.{pname}"
        for name, module in model.named_modules()
        if name.startswith("visual") and isinstance(module, nn.LayerNorm)
        for pname, _ in module.named_parameters(recurse=False)
    ]
    params = dict(model.named_parameters())
    return [(n, params[n]) for n in text_biases + visual_norms]


@register_method
class CLIPFit(Method):
    name = "clipfit"
    display_name = "CLIPFit"
    summary = "Text MLP c_proj biases + all image LayerNorms, with a text-consistency loss."
    Config = CLIPFitConfig
    trains_text_encoder = True

    def setup(self, loaded, class_prompts) -> None:
        with torch.no_grad():
            self.frozen_text = loaded.encode_text(class_prompts).detach()
        for _, param in clipfit_parameters(loaded.model):
            param.requires_grad_(True)

    def regularizer(self, class_weights: torch.Tensor) -> torch.Tensor | float:
        if class_weights.shape != self.frozen_text.shape:
            return 0.0  # evaluating on other classes: no reference features
        similarity = F.cosine_similarity(class_weights, self.frozen_text, dim=-1).mean()
        return self.config.text_consistency_weight * (1.0 - similarity)
