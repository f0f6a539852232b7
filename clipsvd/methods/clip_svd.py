"""CLIP-SVD (arXiv 2509.03740): train only the singular values of every attention and MLP matrix.

Each selected matrix is decomposed once, W = U·diag(σ)·Vᵀ (thin SVD), with U and V frozen and
σ trainable, initialised to σ₀ so the attached model equals the pretrained one. The factors of a
given set of weights are cached on disk (clipsvd.methods.svd_cache), so only the first attach of
a model pays for the SVDs; it reports progress and honours cancel between matrices. The weight is
recomposed once per forward pass of its module (not factored per token: one matmul per matrix
instead of two per token). `merge()` writes the trained W back as a plain parameter.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from clipsvd.errors import ConfigError
from clipsvd.methods import svd_cache
from clipsvd.methods.base import AttachCancelled, Method, MethodConfig
from clipsvd.methods.registry import register_method
from clipsvd.models.layout import ENCODERS, MATRIX_KINDS, encoder_blocks


class SingularValueWeight(nn.Module):
    """A (possibly fused) weight whose row blocks are U_b·diag(σ_b)·V_bᵀ with only σ_b trainable.

    Fused weights (q/k/v in one in_proj) are split in `row_blocks` equal row blocks; blocks whose
    kind is not selected stay as frozen copies.
    """

    def __init__(self, weight: torch.Tensor, block_kinds: list[str], decompose: set[str],
                 factors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        self.block_kinds = list(block_kinds)
        self.sigma = nn.ParameterDict()
        self._cache: tuple[tuple, torch.Tensor] | None = None
        for kind, block in zip(block_kinds, weight.detach().chunk(len(block_kinds), dim=0)):
            if kind in decompose:
                if factors is not None and kind in factors:  # from the on-disk cache
                    u, s, vh = (t.to(weight.device) for t in factors[kind])
                else:
                    u, s, vh = torch.linalg.svd(block.double(), full_matrices=False)
                dtype = weight.dtype
                self.register_buffer(f"U_{kind}", u.to(dtype).contiguous())
                self.register_buffer(f"Vh_{kind}", vh.to(dtype).contiguous())
                self.register_buffer(f"sigma0_{kind}", s.to(dtype).clone())
                self.sigma[kind] = nn.Parameter(s.to(dtype).clone())
            else:
                self.register_buffer(f"frozen_{kind}", block.clone())

    def forward(self) -> torch.Tensor:
        if not torch.is_grad_enabled():  # evaluation: recompose once per change of σ, not once per batch
            # .to(device/dtype) keeps _version, so the key also names where σ lives and in which precision.
            versions = tuple((sigma._version, sigma.device, sigma.dtype) for sigma in self.sigma.values())
            if self._cache is None or self._cache[0] != versions:
                self._cache = (versions, self._recompose())
            return self._cache[1]
        self._cache = None
        return self._recompose()

    def _recompose(self) -> torch.Tensor:
        parts = []
        for kind in self.block_kinds:
            if kind in self.sigma:
                u, vh = getattr(self, f"U_{kind}"), getattr(self, f"Vh_{kind}")
                parts.append((u * self.sigma[kind]) @ vh)
            else:
                parts.append(getattr(self, f"frozen_{kind}"))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)

    def decomposed_sizes(self) -> int:
        """Values stored for U, V and σ of the decomposed blocks (the paper's parameter denominator)."""
        return sum(
            getattr(self, f"U_{k}").numel() + getattr(self, f"Vh_{k}").numel() + self.sigma[k].numel()
            for k in self.sigma
        )

    def original_sizes(self) -> int:
        return sum(getattr(self, f"U_{k}").shape[0] * getattr(self, f"Vh_{k}").shape[1] for k in self.sigma)


def _same_weight(a, b) -> bool:
    return (a.module, a.param) == (b.module, b.param)


def _recompose(block: nn.Module, _inputs) -> None:
    """Forward pre-hook on a transformer block: recompose every decomposed weight inside it.

    The hook sits on the block, not on the module owning the weight, because some owners are never
    called themselves (nn.MultiheadAttention reads out_proj.weight without calling out_proj).
    """
    for host, param_name in block._svd_targets:
        setattr(host, param_name, getattr(host, f"{param_name}_svd")())


@dataclass
class CLIPSVDConfig(MethodConfig):
    lr: float = 5e-4
    epochs: int = 10
    weight_decay: float = 0.01
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS))
    layers: list[int] | None = None  # None: every block
    matrix_kinds: list[str] = field(default_factory=lambda: list(MATRIX_KINDS))
    # Explicit targets override the three selectors above, e.g. "visual.transformer.resblocks.11.attn.v".
    module_paths: list[str] | None = None

    def validate(self) -> None:
        super().validate()
        for encoder in self.encoders:
            if encoder not in ENCODERS:
                raise ConfigError(f"encoders: '{encoder}' is not one of {ENCODERS}")
        for kind in self.matrix_kinds:
            if kind not in MATRIX_KINDS:
                raise ConfigError(f"matrix_kinds: '{kind}' is not one of {MATRIX_KINDS}")


@register_method
class CLIPSVD(Method):
    name = "clip-svd"
    display_name = "CLIP-SVD"
    summary = "Singular values of q/k/v/out/MLP matrices in both encoders; U and V frozen."
    Config = CLIPSVDConfig
    trains_text_encoder = True

    def setup(self, loaded, class_prompts) -> None:
        self.hooked_blocks: list[tuple[nn.Module, torch.utils.hooks.RemovableHandle]] = []
        targets = self._targets(loaded.model)
        weights = {f"{m}.{p}": (getattr(loaded.model.get_submodule(m), p), kinds, selected)
                   for _, m, p, kinds, selected in targets}
        key = svd_cache.fingerprint(weights)
        cached = svd_cache.load(key)
        computed: dict[str, torch.Tensor] = {}
        for index, (block_path, module_path, param, kinds, selected) in enumerate(targets):
            if self.attach_cancel is not None and self.attach_cancel.is_set():
                raise AttachCancelled(f"clip-svd: cancelled while decomposing ({index}/{len(targets)} weights)")
            if cached is None:
                self.attach_progress(index, len(targets), f"decomposing {module_path}.{param} "
                                                          f"({index + 1}/{len(targets)}; cached for later runs)")
            name = f"{module_path}.{param}"
            factors = None
            if cached is not None and all(f"{name}.{k}.{t}" in cached for k in selected for t in "USV"):
                factors = {k: tuple(cached[f"{name}.{k}.{t}"] for t in "USV") for k in selected}
            block = loaded.model.get_submodule(block_path)
            host = loaded.model.get_submodule(module_path)
            svw = SingularValueWeight(getattr(host, param), kinds, selected, factors)
            for kind in svw.sigma:
                if not key:
                    continue
                computed.update({f"{name}.{kind}.U": getattr(svw, f"U_{kind}").cpu(),
                                 f"{name}.{kind}.S": getattr(svw, f"sigma0_{kind}").cpu(),
                                 f"{name}.{kind}.V": getattr(svw, f"Vh_{kind}").cpu()})
            host.register_module(f"{param}_svd", svw)
            del host._parameters[param]
            setattr(host, param, getattr(host, f"{param}_svd")().detach())
            if not hasattr(block, "_svd_targets"):
                block._svd_targets = []
                self.hooked_blocks.append((block, block.register_forward_pre_hook(_recompose)))
            block._svd_targets.append((host, param))
        if not self.hooked_blocks:
            raise ConfigError("clip-svd: the selection of encoders/layers/matrix kinds matches no matrix")
        if cached is None:
            svd_cache.save(key, computed)

    def _targets(self, model: nn.Module) -> list[tuple[str, str, str, list[str], set[str]]]:
        """(block path, module path, parameter, kinds of its row blocks, selected kinds) per weight to decompose."""
        cfg = self.config
        wanted: dict[tuple[str, str, str], tuple[list[str], set[str]]] = {}
        explicit = set(cfg.module_paths or [])
        use_explicit = bool(explicit)
        for encoder in ENCODERS:
            blocks = encoder_blocks(model, encoder)
            for layer in range(len(blocks.blocks)):
                for kind in MATRIX_KINDS:
                    name = f"{blocks.block_path(layer)}.{blocks.location(kind).module.split('.')[0]}.{kind}"
                    if use_explicit:
                        chosen = name in explicit
                        explicit.discard(name)
                    else:
                        chosen = (
                            encoder in cfg.encoders
                            and (cfg.layers is None or layer in cfg.layers)
                            and kind in cfg.matrix_kinds
                        )
                    if not chosen:
                        continue
                    loc = blocks.location(kind)
                    key = (blocks.block_path(layer), f"{blocks.block_path(layer)}.{loc.module}", loc.param)
                    if key not in wanted:
                        fused = [k for k in MATRIX_KINDS if _same_weight(blocks.location(k), loc)]
                        wanted[key] = (fused if loc.row_blocks > 1 else [kind], set())
                    wanted[key][1].add(kind)
        if explicit:
            raise ConfigError(
                f"clip-svd module_paths: {sorted(explicit)} name no matrix; expected names like "
                f"'visual.transformer.resblocks.0.attn.q' (kinds {MATRIX_KINDS})"
            )
        return [(*key, kinds, selected) for key, (kinds, selected) in wanted.items()]

    def singular_value_weights(self) -> dict[str, SingularValueWeight]:
        """Decomposed weights by module path, for analysis (σ vs σ₀)."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, SingularValueWeight)}

    def parameter_report(self) -> dict[str, float]:
        report = super().parameter_report()
        svws = self.singular_value_weights().values()
        paper_total = report["total"] + sum(s.decomposed_sizes() - s.original_sizes() for s in svws)
        report.update(paper_total=paper_total, paper_fraction=report["trainable"] / paper_total)
        return report

    def merge(self) -> nn.Module:
        """Write W = U·diag(σ)·Vᵀ back as plain frozen parameters and drop U, V and the hooks."""
        for block, handle in self.hooked_blocks:
            handle.remove()
            for host, param in block._svd_targets:
                with torch.no_grad():
                    weight = getattr(host, f"{param}_svd")().detach().clone()
                delattr(host, f"{param}_svd")
                delattr(host, param)
                host.register_parameter(param, nn.Parameter(weight, requires_grad=False))
            del block._svd_targets
        self.hooked_blocks = []
        return self.model
