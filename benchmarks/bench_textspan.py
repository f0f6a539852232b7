"""TextSpan cost on ViT-B/16: forward passes (decomposition) vs the TextSpan algorithm itself.

Goal: the TextSpan part (greedy choice for every head of the last 4 layers, 20 texts each, over
the general corpus) adds <= 30 s on CPU beyond the forward passes, for 1,000 images.

Random weights and random pixel tensors (no internet, no real CLIP weights on this machine): the
cost of both parts depends on shapes, not values. Also timed: a plain `encode_image` forward on a
subset, to show the decomposition's own overhead per image, and encoding the corpus once.

    python benchmarks/bench_textspan.py --images 1000
"""
from __future__ import annotations

import argparse
import time

import torch

from clipsvd.analysis.corpus import load_corpus  # importing clipsvd sets HF_HUB_OFFLINE before open_clip loads
from clipsvd.analysis.decomposition import resolve_layers
from clipsvd.analysis.textspan import collect_contributions, encode_texts, text_span
from clipsvd.models import ModelSpec, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--corpus", default="general")
    parser.add_argument("--texts-per-head", type=int, default=20)
    parser.add_argument("--plain-forward-images", type=int, default=64,
                        help="images for the plain encode_image reference (per-image time is reported)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    loaded = load_model(ModelSpec(args.arch), args.device)
    loaded.model.eval()
    size = loaded.image_size
    images = torch.randn(args.images, 3, size, size)
    batches = (images[i:i + args.batch] for i in range(0, args.images, args.batch))
    texts = load_corpus(args.corpus)
    layers = resolve_layers(len(loaded.model.visual.transformer.resblocks), None)
    print(f"{args.arch} ({loaded.label}), {args.images} images of {size}px, layers {list(layers)}, "
          f"{len(texts)} texts, {args.texts_per_head} per head, {torch.get_num_threads()} threads, {args.device}")

    start = time.perf_counter()
    heads, _, layers = collect_contributions(loaded, batches, layers, args.batch)
    sync(loaded.device)
    forward = time.perf_counter() - start

    n_plain = min(args.plain_forward_images, args.images)
    with torch.no_grad():
        loaded.encode_image(images[:2])  # warm-up
        start = time.perf_counter()
        for i in range(0, n_plain, args.batch):
            loaded.encode_image(images[i:min(i + args.batch, n_plain)])
        sync(loaded.device)
    plain = time.perf_counter() - start

    start = time.perf_counter()
    text_embeddings = encode_texts(loaded, texts, args.batch * 4)
    text_time = time.perf_counter() - start

    head_dim = loaded.model.visual.transformer.resblocks[0].attn.head_dim
    start = time.perf_counter()
    explained = []
    for li in range(heads.shape[1]):
        for h in range(heads.shape[2]):
            choice = text_span(heads[:, li, h], text_embeddings, args.texts_per_head, head_dim)
            explained.append(sum(choice.explained_variance))
    span = time.perf_counter() - start

    n_heads = heads.shape[1] * heads.shape[2]
    print(f"decomposition forward : {forward:8.2f} s  ({1000 * forward / args.images:.1f} ms/image)")
    print(f"plain encode_image    : {1000 * plain / n_plain:8.1f} ms/image on {n_plain} images "
          f"-> decomposition overhead x{(forward / args.images) / (plain / n_plain):.2f}")
    print(f"text embeddings       : {text_time:8.2f} s  ({len(texts)} texts, once per model)")
    print(f"TextSpan ({n_heads} heads)   : {span:8.2f} s  ({1000 * span / n_heads:.0f} ms/head; goal <= 30 s)")
    print(f"TextSpan / forward    : {span / forward:8.3f}")
    print(f"mean variance explained by {args.texts_per_head} texts per head: {sum(explained) / len(explained):.3f}")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
