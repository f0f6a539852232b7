"""Are the explanations true? Ground truth from the generated world, per head (issue 21).

For the shipped world CLIP (clean objects) and a CLIP-SVD run on world-shape-microscopy (lr 2e-3, 100 epochs,
16 shots; pretrained and fine-tuned, microscopy objects), per image head (4 layers × 4):
- its TextSpan factor (head_topics: the tag of most of its first 5 texts, world corpus, 512 varied scenes);
- pointing game and mass in mask of its patch map along its first TextSpan text, against chance (object area);
- mean-ablation effect (points of accuracy lost) on shape and colour zero-shot accuracy;
- whether its TextSpan factor predicts which factor its ablation hurts more.
Then the costs of issue 21 item 5: one head-set ablation on 1,000 images vs a plain evaluation pass (world CLIP,
and ViT-B/16 shapes on fewer images, random weights — a cost measurement only), and the memory of the spatial
terms of 64 ViT-B/16-shaped images (random-init ViT-B/16). Prints numbers only.

    python benchmarks/bench_explanation_validity.py [--n-per-pair 4] [--skip-run] [--skip-cost]
        [--cost-only] [--skip-spatial] [--rounds 3] [--vit-images 100]
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np
import pandas as pd
import torch

import clipsvd.data  # noqa: F401  (the data package first: it registers the world's datasets)
from clipsvd.analysis.ablation import Ablation, collect_terms
from clipsvd.analysis.corpus import corpus_tags
from clipsvd.analysis.head_topics import head_topics
from clipsvd.analysis.spatial import patch_maps, score_maps
from clipsvd.analysis.textspan import explain_heads
from clipsvd.data import DatasetSpec
from clipsvd.models import ModelSpec, load_model
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, run_experiment
from clipsvd.worldclip.evaluation import PROBE_SEED, probe_scenes
from clipsvd.world.factors import COLOURS, SHAPES
from clipsvd.world.render import render
from clipsvd.world.scenes import single_objects
from clipsvd.world.prompts import COLOUR_TEMPLATE, SHAPE_TEMPLATE

FACTORS = ("shape", "colour")


def objects_with_masks(n_per_pair: int, style: str, seed: int = PROBE_SEED + 1):
    rng = np.random.default_rng(seed)
    pairs = np.array([(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS))] * n_per_pair)
    images, masks = render(single_objects(rng, pairs[:, 0], pairs[:, 1]), style, 64, seed=seed, return_masks=True)
    return images, masks.numpy(), {"shape": pairs[:, 0], "colour": pairs[:, 1]}


def _inputs(model, images: torch.Tensor) -> torch.Tensor:
    loaded = model.loaded if hasattr(model, "loaded") else model
    mean = torch.tensor(loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    return (images - mean) / std


def per_head_table(model, text_model, style: str, n_per_pair: int) -> pd.DataFrame:
    """One row per head: TextSpan factor, pointing game and mass vs chance, ablation drops per factor."""
    tags = corpus_tags("world")
    probes = torch.from_numpy(probe_scenes(512, style)).permute(0, 3, 1, 2).float() / 255
    result = explain_heads(model, [_inputs(model, probes)], list(tags), texts_per_head=5)
    topics = head_topics(result, tags, top_k=5).set_index(["layer", "head"])
    images, masks, labels = objects_with_masks(n_per_pair, style)
    x = _inputs(model, images)
    terms = collect_terms(model, [x])
    with torch.no_grad():
        weights = {"shape": text_model.encode_text([SHAPE_TEMPLATE.format(s.name) for s in SHAPES]).float(),
                   "colour": text_model.encode_text([COLOUR_TEMPLATE.format(c.name) for c in COLOURS]).float()}

    def accuracy(embedding: torch.Tensor, factor: str) -> float:
        logits = torch.nn.functional.normalize(embedding, dim=-1) @ weights[factor].t()
        return 100 * float((logits.argmax(1).numpy() == labels[factor]).mean())

    intact = {f: accuracy(terms.embedding, f) for f in FACTORS}
    rows = []
    for layer, head in sorted(result.heads):
        first = result.heads[(layer, head)].texts[0]
        direction = result.text_embeddings[result.corpus.index(first)]
        maps = patch_maps(model, x, layer, head, direction, batch_size=128).maps[:, 0]
        score = score_maps(maps, masks)
        ablated = terms.ablated(Ablation(((layer, head),)))
        drops = {f: intact[f] - accuracy(ablated, f) for f in FACTORS}
        topic = topics.loc[(layer, head), "topic"]
        hurt = max(FACTORS, key=lambda f: drops[f])
        rows.append({"head": f"L{layer}.H{head}", "textspan_factor": topic,
                     "share": topics.loc[(layer, head), "share"], "first_text": first,
                     "pointing": score.pointing, "mass_in_mask": score.mass_in_mask, "chance": score.chance,
                     "shape_drop": drops["shape"], "colour_drop": drops["colour"],
                     "predicts": (topic == hurt) if topic in FACTORS and abs(drops["shape"] - drops["colour"]) > 0
                     else None})
    table = pd.DataFrame(rows)
    table.attrs["intact"] = intact
    return table


def summary(name: str, table: pd.DataFrame) -> None:
    intact = table.attrs["intact"]
    print(f"\n== {name}: intact accuracy shape {intact['shape']:.1f} %, colour {intact['colour']:.1f} %, "
          f"{len(table)} heads")
    with pd.option_context("display.width", 220, "display.max_colwidth", 34, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))
    scored = table.dropna(subset=["predicts"])
    print(f"pointing game above chance: {int((table.pointing > table.chance).sum())}/{len(table)} heads "
          f"(mean {table.pointing.mean():.3f} vs chance {table.chance.mean():.3f}); mass in mask "
          f"{table.mass_in_mask.mean():.3f}")
    print(f"TextSpan factor predicts the factor ablation hurts more: {int(scored.predicts.sum())}/{len(scored)} "
          "heads with a shape or colour topic")


def trained_run(store: RunStore):
    config = ExperimentConfig(method="clip-svd", model=ModelSpec.default(),
                              dataset=DatasetSpec("builtin", "world-shape-microscopy"), shots=16, seed=1,
                              hyperparameters={"lr": 2e-3, "epochs": 100}, device="cpu")
    start = time.perf_counter()
    run = run_experiment(config, store)
    print(f"\nCLIP-SVD on world-shape-microscopy (16 shots, lr 2e-3, 100 epochs): {run.status}, accuracy "
          f"{run.metrics.get('accuracy', float('nan')):.1f} %, trained in {time.perf_counter() - start:.0f} s")
    return run


def count_flops(fn) -> int:
    """FLOPs of fn by torch's FlopCounterMode (CPU attention, missing from its table, counted as attention)."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    cpu_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    with FlopCounterMode(display=False, custom_mapping={
            cpu_attention: lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)}) as counter:
        fn()
    return counter.get_total_flops()


def cost(model, n: int, size: int, label: str, batch: int = 50, rounds: int = 3) -> None:
    """Plain evaluation vs decomposition + one head-set ablation, timed in alternating rounds (a shared CPU's
    load drifts: a plain pass timed first and the ablation minutes later measure the load, not the code); the
    ratio is the median of the per-round ratios. The FLOP ratio on one image is the load-free check."""
    torch.manual_seed(0)
    images = torch.randn(n, 3, size, size)
    batches = [images[i:i + batch] for i in range(0, n, batch)]
    loaded = model

    def plain() -> None:
        with torch.no_grad():
            for b in batches:
                loaded.encode_image(b)

    heads = Ablation(((len(loaded.model.visual.transformer.resblocks) - 1, 0),
                      (len(loaded.model.visual.transformer.resblocks) - 2, 1)))
    weights = torch.nn.functional.normalize(torch.randn(10, loaded.model.visual.output_dim), dim=-1)

    def ablation(chosen=batches) -> None:
        terms = collect_terms(loaded, chosen, batch_size=batch)
        (torch.nn.functional.normalize(terms.ablated(heads), dim=-1) @ weights.t()).argmax(1)

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # open_clip's fused attention is invisible to the counter
    try:
        with torch.no_grad():
            plain_flops = count_flops(lambda: loaded.encode_image(images[:1]))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    ablation_flops = count_flops(lambda: ablation([images[:1]]))
    times: dict[str, list[float]] = {"plain": [], "ablation": []}
    for _ in range(rounds):
        for name, fn in (("plain", plain), ("ablation", ablation)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ratio = float(np.median([a / p for a, p in zip(times["ablation"], times["plain"])]))
    print(f"{label}: {n} images (batch {batch}, {torch.get_num_threads()} threads), plain evaluation pass "
          f"{np.median(times['plain']):.2f} s, decomposition + one head-set ablation "
          f"{np.median(times['ablation']):.2f} s (medians of {rounds} alternating rounds): ratio {ratio:.2f}× "
          f"(per round {', '.join(f'{a / p:.2f}' for a, p in zip(times['ablation'], times['plain']))}; "
          f"target ≤ 2×); FLOPs an image {ablation_flops / 1e9:.3f} G vs {plain_flops / 1e9:.3f} G: "
          f"{ablation_flops / plain_flops:.3f}×")


def spatial_memory() -> None:
    from clipsvd.analysis.decomposition import direct_contributions

    loaded = load_model(ModelSpec("ViT-B-16"), "cpu")
    loaded.model.eval()
    torch.manual_seed(0)
    images = torch.randn(64, 3, 224, 224)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    start = time.perf_counter()
    parts = direct_contributions(loaded, images, None, spatial=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    size = parts.heads.numel() * 4 / 2 ** 30
    print(f"spatial terms, 64 images, random-init ViT-B/16 (cost only), last 4 layers: result "
          f"{tuple(parts.heads.shape)} = {size:.2f} GiB, peak resident memory grew by {peak - before:.2f} GiB "
          f"(process peak {peak:.2f} GiB), {seconds:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-per-pair", type=int, default=4, help="objects per shape × colour pair (64 pairs)")
    parser.add_argument("--skip-run", action="store_true", help="no CLIP-SVD run")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--cost-only", action="store_true", help="only the costs: no per-head tables")
    parser.add_argument("--skip-spatial", action="store_true", help="no spatial-memory cost (minutes on 2 cores)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/ablation rounds per cost ratio")
    parser.add_argument("--vit-images", type=int, default=100, help="ViT-B/16 images for the ablation cost")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if not args.skip_cost and not args.skip_spatial:  # first: the memory peak of a fresh process
        spatial_memory()
    world = load_model(ModelSpec.default(), "cpu")
    world.model.eval()
    if not args.cost_only:
        summary("world CLIP (shipped), clean objects", per_head_table(world, world, "clean", args.n_per_pair))
    if not args.skip_run and not args.cost_only:
        with tempfile.TemporaryDirectory() as folder:
            from clipsvd.analysis.run_pair import load_run_pair

            pair = load_run_pair(trained_run(RunStore(folder)), "cpu")
            summary("pretrained world CLIP, microscopy objects",
                    per_head_table(pair.before, pair.before, "microscopy", args.n_per_pair))
            summary("CLIP-SVD fine-tuned, microscopy objects",
                    per_head_table(pair.method, pair.method.loaded, "microscopy", args.n_per_pair))
    if not args.skip_cost:
        print()
        cost(world, 1000, 64, "world CLIP", rounds=args.rounds)
        vit = load_model(ModelSpec("ViT-B-16"), "cpu")
        vit.model.eval()
        cost(vit, args.vit_images, 224, "ViT-B/16 (random init, cost only)", batch=25, rounds=args.rounds)


if __name__ == "__main__":
    main()
