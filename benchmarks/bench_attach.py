"""CLIP-SVD attach time: first attach (decomposition, cached to disk) vs a second attach (read from the cache).

ViT-B/16 with random weights on the CPU by default; the cache lives in a temporary folder.
Run: .venv/bin/python benchmarks/bench_attach.py [--arch ViT-B-16]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="ViT-B-16")
    args = parser.parse_args()
    os.environ["CLIPSVD_CACHE"] = tempfile.mkdtemp(prefix="bench-attach-")
    import torch

    from clipsvd.methods import create_method
    from clipsvd.models import ModelSpec, load_model

    spec = ModelSpec(args.arch)
    prompts = ["a photo of a cat.", "a photo of a dog."]
    print(f"{args.arch}, random weights, CPU, torch threads {torch.get_num_threads()}", flush=True)
    for name in ("first attach (decompose + write cache)", "cached attach"):
        loaded = load_model(spec, "cpu")
        start = time.perf_counter()
        steps = []
        method = create_method("clip-svd").attach(loaded, prompts, progress=lambda d, t, m: steps.append(d))
        seconds = time.perf_counter() - start
        print(f"{name}: {seconds:.1f} s, {len(steps)} progress reports, "
              f"{method.parameter_report()['trainable']:,} σ", flush=True)


if __name__ == "__main__":
    main()
