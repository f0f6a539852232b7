"""A CLIP-SVD training step against the official implementation's form, a frozen backbone and full fine-tuning.

Same random-weight open_clip model, same batch (images, 10 class prompts), CPU fp32, both encoders
training. Variants, run step by step in turn (one step of each per round, after warm-up rounds) so they
share the machine's noise; times are medians over rounds, ratios medians of the per-round ratios:

  ours        CLIP-SVD as attached by clipsvd (each matrix on its cheaper form, text padding after the
              last end-of-text token dropped, the image tower's last block on the class token), AdamW on σ
  ours-lean   ours with lean_memory: x·Vᵀ of fused q/k/v and of the attention output recomputed in backward
              instead of kept (clipsvd.methods.clip_svd.FactoredProjection)
  ours-untrimmed  ours through open_clip's own encoders: all 77 text positions, every image token in the last
              block (what the per-matrix choice alone gives)
  recomposed  ours-untrimmed with every matrix forced onto W = U·diag(σ)·Vᵀ per forward (the former behaviour)
  official    a reimplementation of HealthX-Lab/CLIP-SVD's per-token form (svf_utils/svf_torch.py SVD_Linear:
              x → Linear(Vᵀ) → ·σ → Linear(U, bias); PlainHeadAttention.py: separate q/k/v/proj
              linears and F.scaled_dot_product_attention), every attention/MLP linear, AdamW over
              model.parameters() as train.py does; written from the code's behaviour, not copied
  frozen      forward+backward with every weight frozen except the visual ln_pre weight and the text
              positional embedding, so backward crosses every block computing input gradients only
  full        full fine-tuning: every weight trains, AdamW step included
  clip-lora   CLIP-LoRA as attached by clipsvd (rank-2 q/k/v updates in both towers, input dropout 0.25), AdamW
              on A and B, through open_clip's own encoders (no shortcuts: CLIP-LoRA installs none)
  coop        CoOp as attached by clipsvd (16 context vectors; the text tower runs on the edited embeddings up to
              the last end-of-text token, the image tower without gradients), SGD on the context
frozen and full take the same exact shortcuts as ours (text padding, last image block), so their ratios to ours
measure CLIP-SVD's own cost.

Before timing, logits and σ-gradients of ours and official are compared (same U, σ₀, V). Memory: the
peak of the bytes a step allocates above what it starts with (torch profiler), plus what a variant holds
between steps (parameters, buffers, gradients, optimizer state).

    python benchmarks/bench_clip_svd_step.py --arch ViT-B-32 --batch 16
    python benchmarks/bench_clip_svd_step.py --arch ViT-B-16 --batch 32 --warmup 2 --rounds 5
    python benchmarks/bench_clip_svd_step.py --device cuda --precision fp16 --arch ViT-B-16 --batch 32
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clipsvd.methods import create_method
from clipsvd.methods.clip_svd import ENCODER_SHORTCUTS, encoder_shortcuts
from clipsvd.models import ModelSpec, load_model, resolve_device

PROMPTS = [f"a photo of a class {i}." for i in range(10)]
Step = Callable[[], None]


# ----- the official per-token form (our own reimplementation) ---------------------------------------------

class PerTokenSVDLinear(nn.Module):
    """As the official SVD_Linear: fc_V (Vᵀ, no bias), times vector_S (1 × r), fc_U (U, with the bias)."""

    def __init__(self, u: torch.Tensor, sigma: torch.Tensor, vh: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        where = {"device": vh.device, "dtype": vh.dtype}  # on the factors' device: copying CUDA into CPU fails
        self.fc_V = nn.Linear(vh.shape[1], vh.shape[0], bias=False, **where)
        self.fc_U = nn.Linear(u.shape[1], u.shape[0], bias=bias is not None, **where)
        self.vector_S = nn.Parameter(sigma.detach().clone()[None])
        with torch.no_grad():
            self.fc_V.weight.copy_(vh)
            self.fc_U.weight.copy_(u)
            if bias is not None:
                self.fc_U.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_U(self.fc_V(x).mul(self.vector_S))

    @property
    def weight(self) -> torch.Tensor:
        """open_clip reads c_fc.weight.dtype for its cast dtype (the official runs OpenAI's own CLIP code)."""
        return self.fc_U.weight


class PlainAttention(nn.Module):
    """As the official PlainMultiHeadAttention: q/k/v/proj as separate linears around F.scaled_dot_product_attention.

    The official works on sequence-first tensors; open_clip's blocks are batch-first, so heads are split from
    (N, L, D) here, which is the same arithmetic with no extra copies.
    """

    def __init__(self, num_heads: int, q: nn.Module, k: nn.Module, v: nn.Module, proj: nn.Module):
        super().__init__()
        self.num_heads, self.q_proj, self.k_proj, self.v_proj, self.proj = num_heads, q, k, v, proj

    def forward(self, query, key, value, need_weights=False, attn_mask=None, **_):
        batch, length, width = query.shape
        split = (batch, length, self.num_heads, width // self.num_heads)
        q, k, v = (p(x).view(split).transpose(1, 2) for p, x in ((self.q_proj, query), (self.k_proj, key),
                                                                    (self.v_proj, value)))
        if attn_mask is not None:
            attn_mask = attn_mask[None, None]  # the official's _canonical_mask + unsqueeze to (1, 1, L, S)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask)
        return self.proj(context.transpose(1, 2).reshape(batch, length, width)), None


def official_model(base: nn.Module, method) -> nn.Module:
    """A copy of `base` rebuilt in the official form, with the same U, σ₀, V as `method`'s decomposition."""
    model = copy.deepcopy(base)
    svws = method.singular_value_weights()

    def factors(path: str, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        svw = svws[path]
        return svw.u(kind), getattr(svw, f"sigma0_{kind}"), svw.vh(kind)

    for prefix in ("visual.transformer.resblocks", "transformer.resblocks"):
        for i, block in enumerate(model.get_submodule(prefix)):
            path = f"{prefix}.{i}"
            attn, width = block.attn, block.attn.embed_dim
            biases = attn.in_proj_bias.detach().split(width)
            qkv = [PerTokenSVDLinear(*factors(f"{path}.attn.in_proj_weight_svd", kind), bias)
                   for kind, bias in zip("qkv", biases)]
            out = PerTokenSVDLinear(*factors(f"{path}.attn.out_proj.weight_svd", "out"), attn.out_proj.bias.detach())
            block.attn = PlainAttention(attn.num_heads, *qkv, out)
            block.mlp.c_fc = PerTokenSVDLinear(*factors(f"{path}.mlp.c_fc.weight_svd", "fc"), block.mlp.c_fc.bias)
            block.mlp.c_proj = PerTokenSVDLinear(*factors(f"{path}.mlp.c_proj.weight_svd", "proj"),
                                                 block.mlp.c_proj.bias)
    model.requires_grad_(False)
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith("vector_S"))
    return model.to(next(base.parameters()).device)


def official_sigmas(model: nn.Module) -> dict[str, nn.Parameter]:
    """vector_S by our σ name (path of our SingularValueWeight + kind)."""
    names = {"attn.q_proj": ("attn.in_proj_weight_svd", "q"), "attn.k_proj": ("attn.in_proj_weight_svd", "k"),
             "attn.v_proj": ("attn.in_proj_weight_svd", "v"), "attn.proj": ("attn.out_proj.weight_svd", "out"),
             "mlp.c_fc": ("mlp.c_fc.weight_svd", "fc"), "mlp.c_proj": ("mlp.c_proj.weight_svd", "proj")}
    result = {}
    for name, param in model.named_parameters():
        if name.endswith(".vector_S"):
            module = name[: -len(".vector_S")]
            for theirs, (ours, kind) in names.items():
                if module.endswith(theirs):
                    result[f"{module[: -len(theirs)]}{ours}.sigma.{kind}"] = param
    return result


# ----- steps --------------------------------------------------------------------------------------------

def logits_of(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, scale: float) -> torch.Tensor:
    text = F.normalize(model.encode_text(tokens), dim=-1)
    return scale * F.normalize(model.encode_image(images), dim=-1) @ text.t()


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def make_step(model: nn.Module, batch: tuple, optimizer: torch.optim.Optimizer | None, precision: str = "fp32") -> Step:
    """One training step; fp16/bf16 run the forward under autocast (no gradient scaler: its cost is a few
    element-wise passes over the σ, timed here without it)."""
    images, tokens, labels, scale = batch
    dtype = PRECISIONS[precision]

    def step() -> None:
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(logits_of(model, images, tokens, scale).float(), labels)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
    return step


def method_step(method, prompts: list[str], batch: tuple, optimizer: torch.optim.Optimizer,
                precision: str = "fp32") -> Step:
    """One training step through a method's own class_weights/logits (CoOp builds its text input itself)."""
    images, _, labels, _ = batch
    dtype = PRECISIONS[precision]

    def step() -> None:
        with torch.autocast(images.device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(method.logits(images, method.class_weights(prompts)).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def trim(model: nn.Module) -> nn.Module:
    """The exact encoder shortcuts CLIP-SVD installs (text padding dropped, last image block on the class token),
    on a baseline."""
    for name, shortcut in encoder_shortcuts(model).items():
        setattr(model, name, functools.partial(shortcut, model))
    return model


def untrim(method) -> None:
    """Back to open_clip's own encode_text and encode_image."""
    for name in ENCODER_SHORTCUTS:
        method.model.__dict__.pop(name, None)


def step_peak_bytes(step: Step, device: torch.device) -> int:
    """Peak of the bytes allocated during one step above those live when it starts (CPU allocator events, or
    CUDA's peak statistics)."""
    from torch.profiler import ProfilerActivity, profile

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def held_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Parameters, buffers, plain tensor attributes of modules, gradients and optimizer state, once each."""
    seen: dict[int, int] = {}

    def add(t: torch.Tensor) -> None:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()

    for module in model.modules():
        for value in list(module._parameters.values()) + list(module._buffers.values()) + list(vars(module).values()):
            if isinstance(value, torch.Tensor):
                add(value)
                if value.grad is not None:
                    add(value.grad)
    if optimizer is not None:
        for state in optimizer.state.values():
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.numel() > 1:
                    add(value)
    return sum(seen.values())


def alternate(steps: dict[str, Step], warmup: int, rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each variant, one step of each per round, the order rotating between rounds."""
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for r in range(warmup + rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            sync()
            start = time.perf_counter()
            steps[name]()
            sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-30))


# ----- main ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                        help="timed steps under autocast in this dtype (exactness is always checked in fp32)")
    parser.add_argument("--variants",
                        default="ours,ours-lean,ours-untrimmed,official,frozen,full,recomposed,clip-lora,coop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32

    base = load_model(ModelSpec(args.arch), device)
    pristine = copy.deepcopy(base.model)
    images = torch.randn(args.batch, 3, base.image_size, base.image_size, device=device)
    labels = torch.randint(0, len(PROMPTS), (args.batch,), device=device)
    batch = (images, base.tokenize(PROMPTS).to(device), labels, base.logit_scale)
    method = create_method("clip-svd").attach(base, PROMPTS)
    official = official_model(pristine, method)

    # Exactness: logits and every σ-gradient of ours (encoders trimmed) against the official form.
    ours_logits = logits_of(method.model, *batch[:2], batch[3])
    F.cross_entropy(ours_logits, labels).backward()
    theirs_logits = logits_of(official, *batch[:2], batch[3])
    F.cross_entropy(theirs_logits, labels).backward()
    ours_sigma = dict(method.model.named_parameters())
    pairs = [(ours_sigma[name].grad, param.grad[0]) for name, param in official_sigmas(official).items()]
    grad_error = max(relative_error(a, b) for a, b in pairs)
    print(f"[exactness] {len(pairs)} σ tensors; logits rel. error {relative_error(ours_logits, theirs_logits):.3e}, "
          f"largest σ-gradient rel. error {grad_error:.3e} (goal <= 1e-5)")
    # Both are float32: how far is each from the same computation in float64 (the official form, doubled)?
    exact = official_model(pristine, method).double()
    exact_logits = logits_of(exact, images.double(), batch[1], batch[3])
    F.cross_entropy(exact_logits, labels).backward()
    exact_sigma = official_sigmas(exact)
    for name, logits, grads in (("ours", ours_logits, {n: ours_sigma[n].grad for n in exact_sigma}),
                                ("official", theirs_logits, {n: p.grad[0] for n, p in official_sigmas(official).items()})):
        worst = max(relative_error(grads[n].double(), p.grad[0]) for n, p in exact_sigma.items())
        print(f"[exactness] {name} (float32) vs float64: logits {relative_error(logits.double(), exact_logits):.3e}, "
              f"largest σ-gradient rel. error {worst:.3e}")
    del exact
    method.model.zero_grad(set_to_none=True)
    official.zero_grad(set_to_none=True)

    wanted = args.variants.split(",")
    models: dict[str, tuple[nn.Module, torch.optim.Optimizer | None]] = {}
    if "ours" in wanted:
        models["ours"] = (method.model, torch.optim.AdamW(method.trainable_parameters(), lr=1e-6))
    if "ours-lean" in wanted:
        lean = copy.deepcopy(method)
        for svw in lean.singular_value_weights().values():
            svw.lean_memory = True
        models["ours-lean"] = (lean.model, torch.optim.AdamW(lean.trainable_parameters(), lr=1e-6))
    if "ours-untrimmed" in wanted:
        untrimmed = copy.deepcopy(method)
        untrim(untrimmed)
        models["ours-untrimmed"] = (untrimmed.model, torch.optim.AdamW(untrimmed.trainable_parameters(), lr=1e-6))
    if "recomposed" in wanted:
        forced = copy.deepcopy(method)
        untrim(forced)
        forced.set_path("recomposed")
        models["recomposed"] = (forced.model, torch.optim.AdamW(forced.trainable_parameters(), lr=1e-6))
    if "official" in wanted:
        models["official"] = (official, torch.optim.AdamW(official.parameters(), lr=1e-6, weight_decay=0.01))
    if "frozen" in wanted:
        frozen = trim(copy.deepcopy(pristine).requires_grad_(False))
        frozen.visual.ln_pre.weight.requires_grad_(True)
        frozen.positional_embedding.requires_grad_(True)
        models["frozen"] = (frozen, None)
    if "full" in wanted:
        full = trim(copy.deepcopy(pristine).requires_grad_(True))
        models["full"] = (full, torch.optim.AdamW(full.parameters(), lr=1e-6))
    steps = {name: make_step(model, batch, opt, args.precision) for name, (model, opt) in models.items()}
    if "clip-lora" in wanted:
        lora = create_method("clip-lora").attach(dataclasses.replace(base, model=copy.deepcopy(pristine)), PROMPTS)
        lora.model.train()
        models["clip-lora"] = (lora.model, torch.optim.AdamW(lora.trainable_parameters(), lr=1e-6))
        steps["clip-lora"] = make_step(lora.model, batch, models["clip-lora"][1], args.precision)
    if "coop" in wanted:
        names = [prompt.removeprefix("a photo of a ").removeprefix("a photo of ") for prompt in PROMPTS]
        coop = create_method("coop").attach(dataclasses.replace(base, model=copy.deepcopy(pristine)), names)
        models["coop"] = (coop.model, torch.optim.SGD(coop.trainable_parameters(), lr=1e-6, momentum=0.9))
        steps["coop"] = method_step(coop, names, batch, models["coop"][1], args.precision)

    times = alternate(steps, args.warmup, args.rounds, device)
    medians = {name: statistics.median(t) for name, t in times.items()}
    where = (f"{args.arch} batch {args.batch}, {len(PROMPTS)} prompts, {args.precision}, "
             + (torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"))
    print(f"[step] {where}; medians of {args.rounds} alternating rounds after {args.warmup} warm-up:")
    for name, value in medians.items():
        print(f"[step]   {name:14s} {value:7.3f} s   (all: {', '.join(f'{t:.2f}' for t in times[name])})")
    for name, other, goal in (("ours", "official", 0.8), ("ours", "frozen", 1.6), ("ours", "full", 1.0),
                              ("ours-lean", "official", 0.8), ("ours-lean", "frozen", 1.6),
                              ("ours-untrimmed", "official", None), ("recomposed", "official", None),
                              ("clip-lora", "frozen", None), ("clip-lora", "ours", None), ("coop", "frozen", None),
                              ("coop", "ours", None)):
        if name in times and other in times:
            ratio = statistics.median(a / b for a, b in zip(times[name], times[other]))
            print(f"[ratio] {name} / {other} = {ratio:.3f}" + (f" (goal <= {goal})" if goal else ""))

    peaks = {name: step_peak_bytes(steps[name], device) for name in steps}
    held = {name: held_bytes(model, opt) for name, (model, opt) in models.items()}
    for name in steps:
        print(f"[memory] {name:14s} step peak above its start {peaks[name] / 2**20:8.1f} MiB, held between steps "
              f"{held[name] / 2**20:8.1f} MiB, total {(peaks[name] + held[name]) / 2**20:8.1f} MiB")
    for name in ("ours", "ours-lean", "clip-lora", "coop"):
        if name in peaks and "frozen" in peaks:
            goal = " (goal <= 1.3)" if name.startswith("ours") else ""
            print(f"[memory] {name} / frozen: step peak {peaks[name] / peaks['frozen']:.3f}{goal}, "
                  f"total {(peaks[name] + held[name]) / (peaks['frozen'] + held['frozen']):.3f}")


if __name__ == "__main__":
    main()
