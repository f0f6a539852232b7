"""CLIP-LoRA (Zanella & Ben Ayed, CVPRW 2024; MaxZanella/CLIP-LoRA@358f0d7): low-rank updates of q, k, v.

Each selected attention matrix W gets W + s·B·A with A (r × in) initialised like nn.Linear's weight
(Kaiming-uniform, a = √5), B (out × r) zero, so the attached model equals the pretrained one, and
s = α/√r (loralib/layers.py LoRALayer: the code's choice; the LoRA paper's α/r is commented out there).
Dropout acts on the LoRA branch's input only, and only while training (LinearLoRA.forward):
y = x·Wᵀ + b + s·(drop(x)·Aᵀ)·Bᵀ. The official code splits open_clip's fused in_proj into q_proj,
k_proj, v_proj (PlainMultiheadAttentionLoRA) and runs scaled-dot-product attention on them; here the
nn.MultiheadAttention stays in place, its in_proj is applied fused and the three low-rank terms are added to
its q, k, v blocks (the same function; tests/test_peer_methods.py), then the same scaled-dot-product
attention. `merge()` folds s·B·A into in_proj_weight/out_proj.weight and restores torch's own forward.

The official loop (lora.py run_lora) — AdamW lr 2e-4, weight decay 1e-2, betas (0.9, 0.999),
CosineAnnealingLR(T_max = 500·K, eta_min 1e-6) stepped per iteration, batch 32, fp16 autocast with a
GradScaler, text features recomputed every step from the dataset's first template — is the shared loop with
the preset in presets/clip-lora.json.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.choices import described
from clipsvd.errors import ConfigError
from clipsvd.methods.base import Method, MethodConfig
from clipsvd.methods.registry import register_method
from clipsvd.models.layout import encoder_blocks

LORA_ENCODERS = ("text", "vision", "both")  # the official --encoder choices
LORA_MATRICES = ("q", "k", "v", "o")  # the official --params choices: o is the attention's output projection
POSITIONS = ("all", "bottom", "mid", "up", "half-up", "half-bottom", "top", "top3")
TOWERS = {"vision": ("visual",), "text": ("text",), "both": ("visual", "text")}


def position_layers(position: str, depth: int) -> list[int]:
    """Blocks of a `depth`-block encoder for an official --position (loralib/utils.py INDEX_POSITIONS_*).

    The official tables are written for 12 blocks (bottom/mid/up: thirds, half-*: halves) and, for ViT-L/14,
    24 (half-up 12-23); the same fractions are applied to any depth, which reproduces both tables.
    """
    if position not in POSITIONS:
        raise ConfigError(f"position: expected one of {', '.join(POSITIONS)}, got '{position}'")
    third, half = depth // 3, depth // 2
    return {
        "all": list(range(depth)), "bottom": list(range(third)), "mid": list(range(third, 2 * third)),
        "up": list(range(2 * third, depth)), "half-up": list(range(half, depth)),
        "half-bottom": list(range(half)), "top": [depth - 1], "top3": list(range(max(depth - 3, 0), depth)),
    }[position]


class LowRankUpdate(nn.Module):
    """s·B·A for one (rows × cols) matrix, applied to an input as s·(drop(x)·Aᵀ)·Bᵀ (never forming B·A)."""

    def __init__(self, rows: int, cols: int, r: int, alpha: float, dropout: float,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(r, cols, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(rows, r, dtype=dtype, device=device))
        if self.lora_A.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # loralib LoRALayer.init_lora_param
        self.scaling = alpha / math.sqrt(r)  # loralib LoRALayer.__init__: lora_alpha / sqrt(r)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype)) * self.scaling

    def delta(self) -> torch.Tensor:
        """s·B·A, the change of the matrix (what merge() adds)."""
        return (self.lora_B @ self.lora_A) * self.scaling


def merged_attention_weights(attn: nn.MultiheadAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """(in_proj_weight, out_proj.weight) with the low-rank updates of `attn.lora` added: what the forward applies."""
    updates = attn.lora
    blocks = list(attn.in_proj_weight.chunk(3, dim=0))
    for index, kind in enumerate("qkv"):
        if kind in updates:
            blocks[index] = blocks[index] + updates[kind].delta().to(blocks[index].dtype)
    out = attn.out_proj.weight
    if "o" in updates:
        out = out + updates["o"].delta().to(out.dtype)
    return torch.cat(blocks, dim=0), out


def _effective_weight(attn: nn.MultiheadAttention, host: nn.Module, param: str) -> torch.Tensor:
    """What analyses read (clipsvd.analysis.current_weights.current_weight): W + s·B·A of the attention or its out_proj."""
    in_proj, out = merged_attention_weights(attn)
    if host is attn and param == "in_proj_weight":
        return in_proj
    return out if host is attn.out_proj and param == "weight" else getattr(host, param)


def scaled_dot_product_heads(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             attn_mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """Batch-first multi-head attention on projected q, k, v: the (B, L, D) context before the output projection."""
    batch, length, width = q.shape
    heads = attn.num_heads
    q, k, v = (t.reshape(batch, t.shape[1], heads, width // heads).transpose(1, 2) for t in (q, k, v))
    if attn_mask is not None and attn_mask.dtype == torch.bool:  # nn.MultiheadAttention: True = masked out
        attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
    context = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask.to(q.dtype) if attn_mask is not None else None,
        dropout_p=attn.dropout if attn.training else 0.0, is_causal=is_causal and attn_mask is None)
    return context.transpose(1, 2).reshape(batch, length, width)


def plain_self_attention_call(attn: nn.Module, query: torch.Tensor, key_padding_mask, need_weights: bool,
                              attn_mask) -> bool:
    """Whether a call is the kind open_clip makes (3-D input, no weights, no padding mask, 2-D mask), which the
    low-rank forwards run as scaled-dot-product attention; anything else goes through torch's own function."""
    return (query.dim() == 3 and not need_weights and key_padding_mask is None
            and (attn_mask is None or attn_mask.dim() == 2))


def _lora_attention_forward(attn: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor,
                            value: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                            need_weights: bool = True, attn_mask: torch.Tensor | None = None,
                            average_attn_weights: bool = True,
                            is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Replaces nn.MultiheadAttention.forward: q, k, v (and the output) with their low-rank terms added."""
    updates = attn.lora
    if not plain_self_attention_call(attn, query, key_padding_mask, need_weights, attn_mask) \
            or attn.bias_k is not None or attn.add_zero_attn or not attn._qkv_same_embed_dim:
        in_proj, out = merged_attention_weights(attn)  # exact; the LoRA input dropout is not applied here
        if attn.batch_first and query.dim() == 3:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        output, weights = F.multi_head_attention_forward(
            query, key, value, attn.embed_dim, attn.num_heads, in_proj, attn.in_proj_bias, attn.bias_k, attn.bias_v,
            attn.add_zero_attn, attn.dropout, out, attn.out_proj.bias, training=attn.training,
            key_padding_mask=key_padding_mask, need_weights=need_weights, attn_mask=attn_mask,
            average_attn_weights=average_attn_weights, is_causal=is_causal)
        return (output.transpose(0, 1) if attn.batch_first and query.dim() == 3 else output), weights
    if not attn.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    if query is key and key is value:
        q, k, v = F.linear(query, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    else:
        weights = attn.in_proj_weight.chunk(3)
        biases = attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None else (None,) * 3
        q, k, v = (F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))
    q = q + updates["q"](query) if "q" in updates else q
    k = k + updates["k"](key) if "k" in updates else k
    v = v + updates["v"](value) if "v" in updates else v
    context = scaled_dot_product_heads(attn, q, k, v, attn_mask, is_causal)
    out = attn.out_proj(context)
    if "o" in updates:
        out = out + updates["o"](context)
    return (out if attn.batch_first else out.transpose(0, 1)), None


@dataclass
class CLIPLoRAConfig(MethodConfig):
    """The official defaults (run_utils.py get_arguments); the preset adds the loop's values."""

    iterations: int | None = None
    lr: float = 2e-4
    weight_decay: float = 1e-2
    position: str = field(default="all", metadata=described(
        "which blocks get LoRA (official --position): all, bottom / mid / up (thirds), half-bottom, half-up, top "
        "(last block), top3", POSITIONS))
    encoder: str = field(default="both", metadata=described(
        "which towers get LoRA (official --encoder): text, vision or both", LORA_ENCODERS))
    params: list[str] = field(default_factory=lambda: ["q", "k", "v"], metadata=described(
        "attention matrices with a LoRA (official --params): q, k, v (query/key/value projections), o (attention "
        "output projection)", LORA_MATRICES))
    r: int = field(default=2, metadata={"help": "rank of each low-rank update B·A"})
    alpha: float = field(default=1.0, metadata={
        "help": "LoRA α: the update is scaled by α/√r (the official loralib's scaling, not the LoRA paper's α/r)"})
    dropout: float = field(default=0.25, metadata={
        "help": "dropout on the LoRA branch's input while training (official --dropout_rate)"})

    def validate(self) -> None:
        super().validate()  # position, encoder and params against the lists on their fields
        if not self.params:
            raise ConfigError("params: name at least one attention matrix (q, k, v, o)")
        if self.r < 1:
            raise ConfigError(f"r: expected a rank >= 1, got {self.r}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha: expected > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout: expected a rate in [0, 1), got {self.dropout}")


def lora_attention_modules(model: nn.Module, method: str, encoder: str, position: str
                           ) -> list[tuple[str, nn.Module, str]]:
    """(tower, block, block path) of every block the selection names, refusing towers without open_clip attention."""
    chosen = []
    for tower in TOWERS[encoder]:
        blocks = encoder_blocks(model, tower)
        if blocks.family != "open_clip":
            raise ConfigError(f"{method}: the {tower} tower's blocks are {blocks.family} blocks; it adapts open_clip's "
                              "nn.MultiheadAttention only (choose --encoder to leave that tower out)")
        for layer in position_layers(position, len(blocks.blocks)):
            chosen.append((tower, blocks.blocks[layer], blocks.block_path(layer)))
    return chosen


def check_rank(method: str, r: int, rows: int, cols: int, where: str) -> None:
    if r > min(rows, cols):
        raise ConfigError(f"{method}: r = {r} is larger than the {rows} × {cols} matrix {where} allows "
                          f"(at most {min(rows, cols)})")


@register_method
class CLIPLoRA(Method):
    name = "clip-lora"
    display_name = "CLIP-LoRA"
    summary = "Rank-2 updates B·A of q/k/v in every attention layer of both encoders (MaxZanella/CLIP-LoRA)."
    Config = CLIPLoRAConfig
    trains_text_encoder = True

    def setup(self, loaded, class_prompts) -> None:
        cfg = self.config
        self.adapted: list[nn.MultiheadAttention] = []
        for _tower, block, path in lora_attention_modules(loaded.model, self.name, cfg.encoder, cfg.position):
            attn = block.attn
            if not isinstance(attn, nn.MultiheadAttention):
                raise ConfigError(f"{self.name}: {path}.attn is a {type(attn).__name__}, not nn.MultiheadAttention")
            width = attn.embed_dim
            check_rank(self.name, cfg.r, width, width, f"{path}.attn")
            weight = attn.in_proj_weight
            attn.register_module("lora", nn.ModuleDict({
                kind: LowRankUpdate(width, width, cfg.r, cfg.alpha, cfg.dropout, weight.dtype, weight.device)
                for kind in LORA_MATRICES if kind in cfg.params}))
            attn.forward = functools.partial(_lora_attention_forward, attn)
            attn.effective_weight = functools.partial(_effective_weight, attn, attn)
            if "o" in cfg.params:
                attn.out_proj.effective_weight = functools.partial(_effective_weight, attn, attn.out_proj)
            self.adapted.append(attn)
        loaded.model.train(loaded.model.training)  # the new dropout layers take the model's mode

    def lora_updates(self) -> dict[str, LowRankUpdate]:
        """Every low-rank update by module path (analyses, tests)."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, LowRankUpdate)}

    def merge(self) -> nn.Module:
        """W ← W + s·B·A in place, then drop the updates and the replaced forwards: a plain open_clip model."""
        for attn in self.adapted:
            with torch.no_grad():
                in_proj, out = merged_attention_weights(attn)
                attn.in_proj_weight.copy_(in_proj)
                attn.out_proj.weight.copy_(out)
            del attn.lora
            for module in (attn, attn.out_proj):
                for name in ("forward", "effective_weight"):
                    module.__dict__.pop(name, None)
        self.adapted = []
        return self.model
