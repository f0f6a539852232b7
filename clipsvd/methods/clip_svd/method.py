"""The CLIP-SVD method: which matrices to decompose (config), attaching to a model, merging back.

The factors of a given set of weights are cached on disk (clipsvd.methods.svd_cache), so only the first attach of
a model pays for the SVDs; it reports progress and honours cancel between matrices. `merge()` writes the trained W
back as a plain parameter.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from clipsvd.choices import described
from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.methods import svd_cache
from clipsvd.methods.base import AttachCancelled, Method, MethodConfig
from clipsvd.methods.clip_svd.forwards import attention_forward, linear_forward, recompose_before_block
from clipsvd.methods.clip_svd.shortcuts import encoder_shortcuts
from clipsvd.methods.clip_svd.weight import PATHS, Path, SingularValueWeight
from clipsvd.methods.registry import register_method
from clipsvd.models.layout import ENCODERS, MATRIX_KINDS, encoder_blocks


def _same_weight(a, b) -> bool:
    return (a.module, a.param) == (b.module, b.param)


@dataclass
class CLIPSVDConfig(MethodConfig):
    lr: float = 5e-4
    epochs: int = 10
    weight_decay: float = 0.01
    encoders: list[str] = field(default_factory=lambda: list(ENCODERS), metadata=described(
        "which towers train: visual (image encoder), text (text encoder)", ENCODERS))
    layers: list[int] | None = field(default=None, metadata=described(
        "transformer blocks that train, counted from 0; empty: every block"))
    matrix_kinds: list[str] = field(default_factory=lambda: list(MATRIX_KINDS), metadata=described(
        "matrices whose σ train: q, k, v (attention query/key/value projections), out (attention output "
        "projection), fc (MLP expansion), proj (MLP contraction)", MATRIX_KINDS))
    module_paths: list[str] | None = field(default=None, metadata=described(
        "explicit weights to decompose, overriding the three selectors above, e.g. "
        "visual.transformer.resblocks.11.attn.v; empty: use the selectors"))
    lean_memory: bool = field(default=False, metadata=described(
        "keep less for backward: recompute x·Vᵀ of fused q/k/v and of the attention output in backward "
        "instead of storing it; same results, 18% less step memory for 7-17% more step time (ViT-B/32, "
        "batch 16, CPU; no effect where attention takes the recomposed form, e.g. ViT-B/16 batch 32: "
        "benchmarks/bench_clip_svd_step.py)"))


@register_method
class CLIPSVD(Method):
    name = "clip-svd"
    display_name = "CLIP-SVD"
    summary = "Singular values of q/k/v/out/MLP matrices in both encoders; U and V frozen."
    Config = CLIPSVDConfig
    trains_text_encoder = True

    def setup(self, loaded, class_prompts) -> None:
        # Modules whose method CLIP-SVD replaced (its name) or hooked (a block's pre-hook), for merge().
        self.hooked_blocks: list[tuple[nn.Module, str | torch.utils.hooks.RemovableHandle]] = []
        self.decomposed: list[tuple[nn.Module, str]] = []  # (owner, parameter name) of every decomposed weight
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
            host = loaded.model.get_submodule(module_path)
            try:
                svw = SingularValueWeight(getattr(host, param), kinds, selected, factors)
            except torch.linalg.LinAlgError as exc:  # NaN/Inf or a matrix LAPACK cannot decompose
                raise CheckpointError(f"CLIP-SVD cannot decompose {name} ({', '.join(sorted(selected))}) of "
                                      f"{loaded.label}: {str(exc).strip().splitlines()[0]}; the model's weights are "
                                      "not usable for CLIP-SVD") from None
            for kind in svw.sigma:
                if not key:
                    continue
                computed.update({f"{name}.{kind}.U": svw.u(kind).cpu(),
                                 f"{name}.{kind}.S": getattr(svw, f"sigma0_{kind}").cpu(),
                                 f"{name}.{kind}.V": svw.vh(kind).cpu().clone()})  # no shared storage
            host.register_module(f"{param}_svd", svw)
            del host._parameters[param]
            with torch.no_grad():
                svw()  # the evaluation cache, so the plain attribute below is the real W until training starts
            setattr(host, param, svw.current_weight())
            self.decomposed.append((host, param))
            self._route(loaded.model, loaded.model.get_submodule(block_path), module_path, host, param)
        for svw in self.singular_value_weights().values():
            svw.lean_memory = self.config.lean_memory
        if not self.hooked_blocks:
            raise ConfigError("clip-svd: the selection of encoders/layers/matrix kinds matches no matrix")
        for name, shortcut in encoder_shortcuts(loaded.model).items():
            self._replace(loaded.model, name, shortcut)
        if cached is None:
            svd_cache.save(key, computed)

    def _route(self, model: nn.Module, block: nn.Module, module_path: str, host: nn.Module, param: str) -> None:
        """Make the owner's forward apply the decomposed weight (module docstring); a block pre-hook otherwise."""
        if isinstance(host, nn.MultiheadAttention):
            self._replace(host, "forward", attention_forward)
        elif isinstance(host, nn.Linear):
            self._replace(host, "forward", linear_forward)
            parent = model.get_submodule(module_path.rpartition(".")[0])
            if isinstance(parent, nn.MultiheadAttention):  # it reads out_proj.weight without calling out_proj
                self._replace(parent, "forward", attention_forward)
        else:
            if not hasattr(block, "_svd_targets"):
                block._svd_targets = []
                self.hooked_blocks.append((block, block.register_forward_pre_hook(recompose_before_block)))
            block._svd_targets.append((host, param))

    def _replace(self, module: nn.Module, name: str, function) -> None:
        """An instance attribute shadows the class's method; a partial (not a bound method) survives deepcopy."""
        if name not in module.__dict__:
            setattr(module, name, functools.partial(function, module))
            self.hooked_blocks.append((module, name))

    def set_path(self, path: Path) -> None:
        """Force every decomposed weight onto one form ("auto": the cheaper per call), for tests and benchmarks."""
        if path not in PATHS:
            raise ConfigError(f"clip-svd path: expected one of {PATHS}, got {path!r}")
        for svw in self.singular_value_weights().values():
            svw.path = path

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

    def singular_value_weights(self) -> dict[str, nn.Module]:
        """Decomposed weights by module path, for analysis (σ vs σ₀)."""
        return {n: m for n, m in self.model.named_modules() if isinstance(m, SingularValueWeight)}

    def parameter_report(self) -> dict[str, float]:
        report = super().parameter_report()
        svws = self.singular_value_weights().values()
        paper_total = report["total"] + sum(s.decomposed_sizes() - s.original_sizes() for s in svws)
        report.update(paper_total=paper_total, paper_fraction=report["trainable"] / paper_total)
        return report

    def merge(self) -> nn.Module:
        """Write W = U·diag(σ)·Vᵀ back as plain frozen parameters and drop U, V, the hooks and replaced forwards."""
        for module, handle in self.hooked_blocks:
            if isinstance(handle, str):
                del module.__dict__[handle]
            else:
                handle.remove()
                del module._svd_targets
        for host, param in self.decomposed:
            with torch.no_grad():
                weight = getattr(host, f"{param}_svd")().detach().clone()
            delattr(host, f"{param}_svd")
            delattr(host, param)
            host.register_parameter(param, nn.Parameter(weight, requires_grad=False))
        self.hooked_blocks, self.decomposed = [], []
        return self.model
