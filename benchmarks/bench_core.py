"""Core benchmarks for CLIP-SVD, measured in one run on one batch (numbers are printed, not asserted).

1. CLIP-SVD train step vs the frozen backbone's forward+backward (goal: ratio <= 1.15).
   Baseline: the same batch and loss with every weight frozen except two tiny tensors at the very
   bottom of each encoder (visual ln_pre weight, text positional embedding), so backward still
   traverses every block but computes input gradients only. Training anything *inside* every matrix
   also needs a weight-gradient-like term per matrix, so the same step with gradients for all
   weights (full fine-tuning's backward, no optimizer) is printed as a second reference.
2. Recomposed (W = U·diag(σ)·Vᵀ once per forward) vs factored (x·V·diag(σ)·Uᵀ per token) forward+backward
   on the real matrix shapes of the architecture.
3. Adapter checkpoint size per method (safetensors bytes) vs the full model.
4. First-use waits (--waits): UMAP of 500 points in new processes sharing one fresh numba cache folder
   (the first compiles, later ones load the kernels; goal <= 3 s), and a corpus's text embeddings
   computed vs read back from the TextSpan cache (model fingerprint + corpus).
A CLIP-SVD training step against the official implementation is benchmarks/bench_clip_svd_step.py.

    python benchmarks/bench_core.py --arch ViT-B-16 --batch 8
    python benchmarks/bench_core.py --waits --arch ViT-B-16
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from clipsvd.methods import available_methods, create_method
from clipsvd.models import ModelSpec, load_model, save_checkpoint

PROMPTS = [f"a photo of a class {i}." for i in range(10)]


def sync() -> None:
    """Wait for every GPU, not only the current one: a model on cuda:1 would otherwise be timed while queued."""
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            torch.cuda.synchronize(index)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    sync()  # so the first timing does not include the warm-up's queued GPU work
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_fn(loaded, method, images, labels, optimizer=None):
    def step():
        weights = method.class_weights(PROMPTS) if method else loaded.encode_text(PROMPTS)
        logits = loaded.logit_scale * loaded.encode_image(images) @ weights.t()
        loss = F.cross_entropy(logits, labels)
        if optimizer:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optimizer:
            optimizer.step()
    return step


def bench_train_step(arch: str, batch: int, repeats: int, device: str) -> None:
    base = load_model(ModelSpec(arch), device)
    images = torch.randn(batch, 3, base.image_size, base.image_size)
    labels = torch.randint(0, len(PROMPTS), (batch,))
    base.model.requires_grad_(False)
    base.model.visual.ln_pre.weight.requires_grad_(True)
    text_pos = getattr(base.model, "positional_embedding", None)
    if text_pos is not None:
        text_pos.requires_grad_(True)
    images, labels = images.to(base.device), labels.to(base.device)
    t_base = timed(step_fn(base, None, images, labels), repeats)
    base.model.requires_grad_(True)
    t_full = timed(step_fn(base, None, images, labels), repeats)
    del base

    loaded = load_model(ModelSpec(arch), device)
    method = create_method("clip-svd").attach(loaded, PROMPTS)
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-4)
    t_svd = timed(step_fn(loaded, method, images, labels, optimizer), repeats)
    print(f"[train step] {arch} batch {batch} on {loaded.device}: frozen-backbone fwd+bwd {t_base:.3f}s, "
          f"all-weight-gradient fwd+bwd {t_full:.3f}s, CLIP-SVD step (incl. AdamW) {t_svd:.3f}s")
    print(f"[train step] CLIP-SVD / frozen-backbone = {t_svd / t_base:.3f} (goal <= 1.15); "
          f"CLIP-SVD / all-weight-gradient = {t_svd / t_full:.3f}")


def bench_recomposed_vs_factored(arch: str, batch: int, repeats: int, device: str) -> None:
    loaded = load_model(ModelSpec(arch), device)
    block = loaded.model.visual.transformer.resblocks[0]
    tokens = batch * (loaded.model.visual.grid_size[0] * loaded.model.visual.grid_size[1] + 1)
    total_recomposed = total_factored = 0.0
    for name, weight in (("attn.q (in_proj rows)", block.attn.in_proj_weight[: block.attn.embed_dim]),
                         ("mlp.c_fc", block.mlp.c_fc.weight), ("mlp.c_proj", block.mlp.c_proj.weight)):
        u, s, vh = torch.linalg.svd(weight.detach(), full_matrices=False)
        sigma = s.clone().requires_grad_(True)
        x = torch.randn(tokens, weight.shape[1], device=weight.device)

        def recomposed():
            (x @ ((u * sigma) @ vh).t()).sum().backward()

        def factored():
            (((x @ vh.t()) * sigma) @ u.t()).sum().backward()

        t_r, t_f = timed(recomposed, repeats), timed(factored, repeats)
        total_recomposed += t_r
        total_factored += t_f
        print(f"[svf forward+backward] {name} {tuple(weight.shape)} × {tokens} tokens: recomposed {t_r * 1e3:.1f} ms, "
              f"factored {t_f * 1e3:.1f} ms, factored/recomposed {t_f / t_r:.2f}")
    print(f"[svf forward+backward] total: factored/recomposed {total_factored / total_recomposed:.2f}")


def bench_checkpoint_sizes(arch: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        full = save_checkpoint(load_model(ModelSpec(arch), "cpu").model, Path(tmp) / "full.safetensors")
        full_bytes = full.stat().st_size
        print(f"[checkpoint] full model {arch}: {full_bytes / 1e6:.1f} MB")
        for name in available_methods():
            method = create_method(name).attach(load_model(ModelSpec(arch), "cpu"), PROMPTS)
            path = Path(tmp) / f"{name}.safetensors"
            save_file({k: v.contiguous() for k, v in method.adapter_state().items()}, str(path))
            report = method.parameter_report()
            print(f"[checkpoint] {name:13s} {path.stat().st_size / 1e3:10.1f} kB  ({path.stat().st_size / full_bytes:.5f} "
                  f"of full)  trainable {report['trainable']:,} = {report['fraction']:.4%}"
                  + (f", paper denominator {report['paper_fraction']:.4%}" if "paper_fraction" in report else ""))


UMAP_CHILD = """
import time, numpy as np
start = time.perf_counter()
from clipsvd.analysis.embeddings import import_umap, umap_2d
imported = time.perf_counter()
import_umap()
umap_imported = time.perf_counter()
umap_2d(np.random.default_rng(0).normal(size=(500, 512)).astype(np.float32))
print(imported - start, umap_imported - imported, time.perf_counter() - umap_imported)
"""


def bench_first_use_waits(arch: str, processes: int = 3) -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "CLIPSVD_CACHE": cache}
        env.pop("NUMBA_CACHE_DIR", None)
        for i in range(processes):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", UMAP_CHILD], env=env, capture_output=True, text=True, check=True)
            imported, umap_import, fit = map(float, out.stdout.split()[-3:])
            print(f"[waits] UMAP of 500 points, new process {i + 1} ({'first: compiles' if i == 0 else 'cached'}): "
                  f"{umap_import + fit:.2f} s = import of umap and its numba kernels {umap_import:.2f} s + fit "
                  f"{fit:.2f} s (goal <= 3 s after the first; the dashboard imports umap at server start, "
                  f"clipsvd.app.caches.warm_start); clipsvd import before it {imported:.2f} s, whole process "
                  f"{time.perf_counter() - start:.2f} s")

        from clipsvd.analysis.corpus import load_corpus
        from clipsvd.analysis.textspan import encode_texts
        from clipsvd.analysis.textspan_cache import TextSpanCache, model_fingerprint

        loaded = load_model(ModelSpec(arch), "cpu")
        corpus = load_corpus("general")
        text_cache = TextSpanCache(Path(cache) / "textspan")
        start = time.perf_counter()
        embeddings = encode_texts(loaded, corpus)
        encoded = time.perf_counter() - start
        text_cache.save_text_embeddings(model_fingerprint(loaded.model), corpus, embeddings)
        start = time.perf_counter()
        again = text_cache.load_text_embeddings(model_fingerprint(loaded.model), corpus)
        read = time.perf_counter() - start
        assert again is not None and torch.equal(again, embeddings)
        print(f"[waits] text embeddings of the general corpus ({len(corpus)} texts) on {arch}: computed {encoded:.2f} s, "
              f"read back {read:.2f} s (model fingerprint + file)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--waits", action="store_true", help="only the first-use waits (UMAP, text embeddings)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.waits:
        bench_first_use_waits(args.arch)
        return
    bench_train_step(args.arch, args.batch, args.repeats, args.device)
    bench_recomposed_vs_factored(args.arch, args.batch, args.repeats, args.device)
    bench_checkpoint_sizes(args.arch)


if __name__ == "__main__":
    main()
