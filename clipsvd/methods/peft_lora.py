"""PEFT's LoRA family on open_clip: `lora`, `dora` and `pissa` through PEFT's own LoraConfig.

PEFT adapts nn.Linear layers; open_clip's attention is one nn.MultiheadAttention with a fused in_proj. Each
selected attention is re-expressed as `SeparateProjectionAttention` — q_proj, k_proj, v_proj and out_proj as
nn.Linear around the same scaled-dot-product attention, the same function up to float rounding
(tests/test_peer_methods.py) — and PEFT's `inject_adapter_in_model` wraps the chosen projections. So the three
methods act on exactly CLIP-LoRA's matrices (q, k, v of every block of both towers, rank 2, α 1, dropout 0.25,
α/√r scaling via `use_rslora`) and differ only in PEFT's choice:
  * lora:  W + s·B·A, B = 0 (PEFT's default init: A Kaiming-uniform);
  * dora:  m ⊙ (W + s·B·A)/‖W + s·B·A‖ per output row, m trainable (use_dora=True; Liu et al., 2024);
  * pissa: A, B from the r principal singular triplets of W and the frozen base set to the residual
           W − s·B·A (init_lora_weights="pissa"; Meng et al., 2024): the low-rank relative of CLIP-SVD.
A run stores only the adapter tensors (adapter.safetensors); PiSSA's residual is recomputed from the
pretrained W when the run is restored (a deterministic SVD). `merge()` writes W_eff back into the original
nn.MultiheadAttention. Analyses read W_eff through `effective_weight` (clipsvd.analysis.current_weights).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.errors import ConfigError
from clipsvd.methods.base import Method
from clipsvd.methods.clip_lora import (
    CLIPLoRAConfig,
    check_rank,
    lora_attention_modules,
    plain_self_attention_call,
    scaled_dot_product_heads,
)
from clipsvd.methods.registry import register_method

PEFT_MINIMUM = "0.11.0"  # DoRA (use_dora) since 0.9, PiSSA (init_lora_weights="pissa") since 0.11
PROJECTIONS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj"}


def require_peft(method: str) -> None:
    """Refuse before training when PEFT is missing or too old, naming the version needed."""
    from clipsvd.resources import require

    require("peft", f"the '{method}' method", ConfigError)
    import peft
    from packaging.version import Version

    if Version(peft.__version__) < Version(PEFT_MINIMUM):
        raise ConfigError(f"{method}: needs peft >= {PEFT_MINIMUM} (LoraConfig use_dora and init_lora_weights="
                          f"'pissa'); peft {peft.__version__} is installed: pip install 'peft>={PEFT_MINIMUM}'")


def effective_linear_weight(layer: nn.Module) -> torch.Tensor:
    """The (out × in) matrix a linear layer applies, PEFT-wrapped or not: for a PEFT layer, read off its forward on
    the identity in eval mode (LoRA, DoRA and PiSSA alike: exactly what its merge would write)."""
    base = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
    if base is layer:
        return layer.weight
    was_training = layer.training
    layer.eval()
    try:
        with torch.no_grad():
            eye = torch.eye(base.in_features, dtype=base.weight.dtype, device=base.weight.device)
            out = layer(eye)
            if base.bias is not None:
                out = out - base.bias
    finally:
        layer.train(was_training)
    return out.t()


class SeparateProjectionAttention(nn.Module):
    """open_clip's nn.MultiheadAttention as q_proj, k_proj, v_proj, out_proj linears (what PEFT can wrap).

    `in_proj_weight`/`in_proj_bias` read back the fused (effective) weights, so code written for
    nn.MultiheadAttention (TextSpan's decomposition, head rankings) reads this module unchanged.
    """

    def __init__(self, attn: nn.MultiheadAttention):
        super().__init__()
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            raise ConfigError("peft methods: this nn.MultiheadAttention has separate k/v widths or bias_k/zero "
                              "attention, which the separate-projection form does not reproduce")
        width = attn.embed_dim
        self.embed_dim, self.num_heads, self.head_dim = width, attn.num_heads, attn.head_dim
        self.batch_first, self.dropout = attn.batch_first, attn.dropout
        bias = attn.in_proj_bias is not None
        weight, biases = attn.in_proj_weight.detach(), attn.in_proj_bias
        for index, name in enumerate(("q_proj", "k_proj", "v_proj")):
            linear = nn.Linear(width, width, bias=bias, device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(weight[index * width:(index + 1) * width])
                if bias:
                    linear.bias.copy_(biases.detach()[index * width:(index + 1) * width])
            linear.requires_grad_(False)
            self.add_module(name, linear)
        self.out_proj = attn.out_proj

    def effective_weight(self, param: str) -> torch.Tensor:
        if param != "in_proj_weight":
            raise AttributeError(param)
        return torch.cat([effective_linear_weight(getattr(self, n)) for n in ("q_proj", "k_proj", "v_proj")])

    @property
    def in_proj_weight(self) -> torch.Tensor:
        return self.effective_weight("in_proj_weight")

    @property
    def in_proj_bias(self) -> torch.Tensor | None:
        biases = [self._base(n).bias for n in ("q_proj", "k_proj", "v_proj")]
        return None if biases[0] is None else torch.cat(biases)

    def _base(self, name: str) -> nn.Linear:
        layer = getattr(self, name)
        return layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not plain_self_attention_call(self, query, key_padding_mask, need_weights, attn_mask):
            batch_first = self.batch_first and query.dim() == 3
            if batch_first:
                query, key, value = (t.transpose(0, 1) for t in (query, key, value))
            output, weights = F.multi_head_attention_forward(
                query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias, None,
                None, False, self.dropout, effective_linear_weight(self.out_proj), self._base("out_proj").bias,
                training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
                attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
            return (output.transpose(0, 1) if batch_first else output), weights
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        context = scaled_dot_product_heads(self, self.q_proj(query), self.k_proj(key), self.v_proj(value),
                                           attn_mask, is_causal)
        out = self.out_proj(context)
        return (out if self.batch_first else out.transpose(0, 1)), None


def _out_proj_weight(layer: nn.Module, param: str) -> torch.Tensor:
    return effective_linear_weight(layer) if param == "weight" else getattr(layer, param)


@dataclass
class PEFTLoRAConfig(CLIPLoRAConfig):
    """CLIP-LoRA's matrices and loop by default (its preset applies), adapted by PEFT."""

    use_rslora: bool = field(default=True, metadata={
        "help": "scale the update by α/√r (rank-stabilised, as CLIP-LoRA's loralib) instead of PEFT's α/r"})


class PEFTLoRA(Method):
    """LoRA through PEFT on the separate-projection attention; subclasses pick DoRA or PiSSA."""

    name = "lora"
    display_name = "LoRA (PEFT)"
    summary = "PEFT's LoRA on q/k/v of every attention layer of both encoders (CLIP-LoRA's matrices and rank)."
    Config = PEFTLoRAConfig
    trains_text_encoder = True
    use_dora: bool = False
    init_lora_weights: bool | str = True

    @classmethod
    def preset(cls, setting=None):
        """CLIP-LoRA's protocol (the same matrices, rank and loop), named as its source."""
        from clipsvd.methods.presets import Setting, official_preset

        return official_preset("clip-lora", setting or Setting())

    def setup(self, loaded, class_prompts) -> None:
        require_peft(self.name)
        from peft import LoraConfig, inject_adapter_in_model

        cfg = self.config
        self.replaced: list[tuple[nn.Module, nn.MultiheadAttention, SeparateProjectionAttention]] = []
        targets = []
        for _tower, block, path in lora_attention_modules(loaded.model, self.name, cfg.encoder, cfg.position):
            attn = block.attn
            if not isinstance(attn, nn.MultiheadAttention):
                raise ConfigError(f"{self.name}: {path}.attn is a {type(attn).__name__}, not nn.MultiheadAttention")
            check_rank(self.name, cfg.r, attn.embed_dim, attn.embed_dim, f"{path}.attn")
            separate = SeparateProjectionAttention(attn)
            block.attn = separate
            self.replaced.append((block, attn, separate))
            targets += [f"{path}.attn.{PROJECTIONS[kind]}" for kind in cfg.params]
        config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, use_rslora=cfg.use_rslora,
                            use_dora=self.use_dora, init_lora_weights=self.init_lora_weights,
                            target_modules=targets, bias="none")
        inject_adapter_in_model(config, loaded.model)
        loaded.model.train(loaded.model.training)  # PEFT's new dropout layers take the model's mode
        for _block, _attn, separate in self.replaced:
            if "o" in cfg.params:
                separate.out_proj.effective_weight = functools.partial(_out_proj_weight, separate.out_proj)

    def merge(self) -> nn.Module:
        """W_eff into the original nn.MultiheadAttention of each block, which goes back in place of the adapter."""
        for block, attn, separate in self.replaced:
            with torch.no_grad():
                attn.in_proj_weight.copy_(separate.in_proj_weight)
                attn.out_proj.weight.copy_(effective_linear_weight(separate.out_proj))
            block.attn = attn
        self.replaced = []
        return self.model


@register_method
class PEFTLoRAMethod(PEFTLoRA):
    pass


@register_method
class DoRA(PEFTLoRA):
    name = "dora"
    display_name = "DoRA (PEFT)"
    summary = "Weight-decomposed LoRA (magnitude × direction) through PEFT on CLIP-LoRA's q/k/v matrices."
    use_dora = True


@register_method
class PiSSA(PEFTLoRA):
    name = "pissa"
    display_name = "PiSSA (PEFT)"
    summary = ("LoRA initialised from the principal singular vectors (base = residual) through PEFT on CLIP-LoRA's "
               "q/k/v matrices: the low-rank relative of CLIP-SVD.")
    init_lora_weights = "pissa"
