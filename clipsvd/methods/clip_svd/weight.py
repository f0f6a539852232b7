"""The decomposed weight: U·diag(σ)·Vᵀ per row block with only σ trainable, applied along the cheaper form.

Without gradients (evaluation) W is recomposed once per change of σ and reused; in training each call takes the
factored or the recomposed form (clip_svd.factored), or one forced by `path` for tests and benchmarks.
"""
from __future__ import annotations

import contextlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.methods.clip_svd.factored import FactoredProjection, training_costs

Path = Literal["auto", "factored", "recomposed"]
PATHS: tuple[str, ...] = ("auto", "factored", "recomposed")


class SingularValueWeight(nn.Module):
    """A (possibly fused) weight whose row blocks are U_b·diag(σ_b)·V_bᵀ with only σ_b trainable.

    Fused weights (q/k/v in one in_proj) are split in `row_blocks` equal row blocks; blocks whose
    kind is not selected stay as frozen copies. Calling the module gives the recomposed weight;
    `project`/`linear` apply it to inputs along the cheaper path (see the module docstring).
    """

    def __init__(self, weight: torch.Tensor, block_kinds: list[str], decompose: set[str],
                 factors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        self.block_kinds = list(block_kinds)
        self.sigma = nn.ParameterDict()
        self.path: Path = "auto"  # "factored"/"recomposed" force one form (tests, benchmarks)
        self.lean_memory = False  # CLIPSVDConfig.lean_memory (see `recomputes`)
        self._cache: tuple[tuple, torch.Tensor] | None = None
        # q, k, v of a fused in_proj all decomposed: their Vᵀ live in one buffer, so x·[V_q V_k V_v] is one
        # matmul (~10% faster than three) without a per-call concatenation that backward would keep alive.
        fused = len(block_kinds) > 1 and set(block_kinds) <= set(decompose)
        fused_vh = []
        for kind, block in zip(block_kinds, weight.detach().chunk(len(block_kinds), dim=0)):
            if kind in decompose:
                if factors is not None and kind in factors:  # from the on-disk cache
                    u, s, vh = (t.to(weight.device) for t in factors[kind])
                else:
                    u, s, vh = torch.linalg.svd(block.double(), full_matrices=False)
                dtype = weight.dtype
                self.register_buffer(f"U_{kind}", u.to(dtype).contiguous())
                if fused:
                    fused_vh.append(vh.to(dtype))
                else:
                    self.register_buffer(f"Vh_{kind}", vh.to(dtype).contiguous())
                self.register_buffer(f"sigma0_{kind}", s.to(dtype).clone())
                self.sigma[kind] = nn.Parameter(s.to(dtype).clone())
            else:
                self.register_buffer(f"frozen_{kind}", block.clone())
        if fused:
            self.register_buffer("Vh", torch.cat(fused_vh).contiguous())

    def u(self, kind: str) -> torch.Tensor:
        return getattr(self, f"U_{kind}")

    def vh(self, kind: str) -> torch.Tensor:
        """Vᵀ of one decomposed block (a row slice of the shared buffer for fused q/k/v)."""
        if "Vh" not in self._buffers:
            return getattr(self, f"Vh_{kind}")
        return self.Vh.chunk(len(self.block_kinds))[self.block_kinds.index(kind)]

    def forward(self) -> torch.Tensor:
        """The recomposed weight (differentiable in σ when gradients are on)."""
        if not self._needs_sigma_grad():  # evaluation: recompose once per change of σ, not once per batch
            # .to(device/dtype) and deepcopy keep or restart _version, so the key also names σ's storage,
            # device and precision.
            versions = tuple((sigma._version, sigma.data_ptr(), sigma.device, sigma.dtype)
                             for sigma in self.sigma.values())
            if self._cache is None or self._cache[0] != versions:
                # in σ's precision whatever autocast is on: a later float32 forward and merge() read this W
                # (a device without autocast, e.g. meta for counting parameters, has none to turn off)
                device_type = versions[0][2].type
                with (torch.autocast(device_type, enabled=False) if torch.amp.is_autocast_available(device_type)
                      else contextlib.nullcontext()):
                    self._cache = (versions, self._recompose())
            return self._cache[1]
        self._cache = None
        return self._recompose()

    def _needs_sigma_grad(self) -> bool:
        return torch.is_grad_enabled() and any(sigma.requires_grad for sigma in self.sigma.values())

    def _recompose(self) -> torch.Tensor:
        parts = []
        for kind in self.block_kinds:
            if kind in self.sigma:
                parts.append((self.u(kind) * self.sigma[kind]) @ self.vh(kind))
            else:
                parts.append(getattr(self, f"frozen_{kind}"))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def current_weight(self) -> torch.Tensor:
        """What the owner's plain attribute should hold: the cached W in evaluation, else an empty tensor of
        W's dtype and device (training never keeps a W copy alive; read the live W by calling the module)."""
        if self._cache is not None:
            return self._cache[1]
        sigma = next(iter(self.sigma.values()))
        return sigma.detach().new_empty(0)

    def uses_factored(self, x: torch.Tensor) -> bool:
        """Whether a training call on x takes the factored form: forced by `path`, else the fewer multiply-adds."""
        if self.path != "auto":
            return self.path == "factored"
        factored = recomposed = 0
        for kind in self.sigma:
            (rows, rank), cols = self.u(kind).shape, self.vh(kind).shape[1]
            f, r = training_costs(rows, cols, rank, x.numel() // cols, x.requires_grad)
            factored, recomposed = factored + f, recomposed + r
        return factored < recomposed

    def project(self, x: torch.Tensor, bias: torch.Tensor | None = None, heads: bool = False) -> list[torch.Tensor]:
        """x·W_bᵀ + b_b for each row block b (q, k, v of a fused in_proj come out separately).

        `heads`: x is attention's (B, H, L, d_h) output, whose heads are merged here (FactoredProjection)."""
        biases = bias.chunk(len(self.block_kinds)) if bias is not None else [None] * len(self.block_kinds)
        if not (self._needs_sigma_grad() and self.uses_factored(x)):
            merged = x.transpose(1, 2).flatten(2) if heads else x
            return list(F.linear(merged, self(), bias).chunk(len(self.block_kinds), dim=-1))
        self._cache = None
        kinds = self.block_kinds
        if "Vh" in self._buffers:  # every block decomposed, their Vᵀ stacked
            sigma = torch.cat([self.sigma[k] for k in kinds])
            return list(FactoredProjection.apply(x, self.Vh, sigma, bias, self.recomputes(self.Vh, heads), heads,
                                                 *(self.u(k) for k in kinds)))
        if heads and len(kinds) > 1:  # (not a layout any family has: out_proj is one block)
            x, heads = x.transpose(1, 2).flatten(2), False
        return [FactoredProjection.apply(x, self.vh(kind), self.sigma[kind], b, self.recomputes(self.vh(kind), heads),
                                         heads, self.u(kind))[0]
                if kind in self.sigma else F.linear(x, getattr(self, f"frozen_{kind}"), b)
                for kind, b in zip(kinds, biases)]

    def recomputes(self, vh: torch.Tensor, heads: bool) -> bool:
        """With lean_memory, whether backward recomputes h = x·Vᵀ instead of keeping it: where x is smaller than
        h (fused q/k/v: n < 3n) or kept by attention anyway (`heads`)."""
        return self.lean_memory and (heads or vh.shape[1] < vh.shape[0])

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """F.linear(x, W, bias) for the whole (fused) weight."""
        outputs = self.project(x, bias)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)

    def decomposed_sizes(self) -> int:
        """Values stored for U, V and σ of the decomposed blocks (the paper's parameter denominator)."""
        return sum(
            self.u(k).numel() + self.vh(k).numel() + self.sigma[k].numel()
            for k in self.sigma
        )

    def original_sizes(self) -> int:
        return sum(self.u(k).shape[0] * self.vh(k).shape[1] for k in self.sigma)
