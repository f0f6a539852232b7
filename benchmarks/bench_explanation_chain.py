"""The mission's chain, measured: do the heads CLIP-SVD changed most also change most in words?

The shipped world CLIP (clipsvd-world) adapted with CLIP-SVD to world-shape-microscopy (16 shots, README's
best setting: lr 2e-3, 100 epochs) for each seed; TextSpan with the world corpus on every image head
(4 layers × 4), before and after, on a seeded subset of the test images; per head the weight change
(each measure of `head_changes`) and the explanation shift (text and span shift of the first 5 texts);
Spearman's ρ across heads with its permutation p-value, per seed; and the top changed head's texts before
and after (README's worked example). Prints numbers only; runs land in a temporary store (or --runs-dir,
where finished runs of the same setting are reused).

    python benchmarks/bench_explanation_chain.py [--seed 1 --seed 2 --seed 3] [--images-per-class 25]
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import pandas as pd
import torch

from clipsvd.analysis import head_changes, load_corpus
from clipsvd.analysis.explanation_shift import SHIFT_COLUMNS, explanation_shifts, marked_texts, shift_correlation
from clipsvd.analysis.heads import RANKING_MEASURES
from clipsvd.analysis.run_pair import analysis_images, load_run_pair, run_textspan
from clipsvd.data import DatasetSpec
from clipsvd.models import ModelSpec
from clipsvd.runs import Run, RunStore
from clipsvd.training import ExperimentConfig, run_experiment

DATASET = "world-shape-microscopy"
HYPERPARAMETERS = {"lr": 2e-3, "epochs": 100}  # README: CLIP-SVD's best setting on this task


def trained_run(store: RunStore, seed: int) -> tuple[Run, float]:
    """A finished CLIP-SVD run of the setting for this seed (reused from the store when there), and its
    training time."""
    config = ExperimentConfig(method="clip-svd", model=ModelSpec.default(), dataset=DatasetSpec("builtin", DATASET),
                              shots=16, seed=seed, hyperparameters=HYPERPARAMETERS, device="cpu")
    for run in store.list():
        if run.status == "completed" and dataclasses.replace(ExperimentConfig.from_dict(run.config),
                                                             device="cpu") == config:
            return run, float(run.metrics.get("train_seconds") or 0.0)
    start = time.perf_counter()
    run = run_experiment(config, store)
    if run.status != "completed":
        raise SystemExit(f"seed {seed}: training {run.status}: {run.message}")
    return run, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="repeat (default 1 2 3)")
    parser.add_argument("--images-per-class", type=int, default=25, help="test images per class for TextSpan")
    parser.add_argument("--texts-per-head", type=int, default=20)
    parser.add_argument("--k", type=int, default=5, help="texts per head compared before vs after")
    parser.add_argument("--runs-dir", default=None)
    args = parser.parse_args()
    seeds = args.seed or [1, 2, 3]
    store = RunStore(args.runs_dir or tempfile.mkdtemp(prefix="bench-chain-"))
    corpus = load_corpus("world")
    print(f"CLIP-SVD {HYPERPARAMETERS} on {DATASET}, 16 shots, seeds {seeds}; TextSpan: world corpus "
          f"({len(corpus)} texts), {args.images_per_class} test images per class, all image heads, "
          f"{args.texts_per_head} texts per head, shift over the first {args.k}; {torch.get_num_threads()} threads")
    rows, layers, example = [], [], None
    for seed in seeds:
        run, train_seconds = trained_run(store, seed)
        start = time.perf_counter()
        pair = load_run_pair(run, "cpu")
        images = analysis_images(run, args.images_per_class)
        before, after = run_textspan(pair, images, corpus, list(range(4)), args.texts_per_head)
        textspan_seconds = time.perf_counter() - start
        for measure in RANKING_MEASURES:
            table = explanation_shifts(before, after, head_changes(pair.before, pair.method, "visual", measure),
                                       args.k)
            for shift in SHIFT_COLUMNS:
                c = shift_correlation(table, measure, shift)
                rows.append({"seed": seed, "measure": measure, "shift": shift, "rho": c.rho, "p": c.p_value,
                             "heads": c.n})
            if measure == "ov_change":
                layers.append(table.assign(seed=seed))
                example = example or (seed, table, before, after)
        print(f"seed {seed}: accuracy {run.metrics['accuracy']:.2f}%, training {train_seconds:.0f} s, "
              f"TextSpan before+after {textspan_seconds:.1f} s ({len(images.test)} images)", flush=True)

    results = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print("\nSpearman ρ of weight change vs explanation shift across the 16 image heads, per seed:")
        print(results.pivot_table(index=["measure", "shift"], columns="seed", values=["rho", "p"]).to_string())
        summary = results.groupby(["measure", "shift"])["rho"].agg(["mean", "std", "min", "max"])
        print("\nρ over seeds (mean, std, min, max):")
        print(summary.to_string())
        print("\nper layer, mean over its heads and the seeds (weight change vs explanation shift by depth):")
        print(pd.concat(layers).groupby("layer")[["ov_change", "text_shift", "span_shift"]].mean().to_string())
        seed, table, before, after = example
        print(f"\nseed {seed}, all heads by ov_change (weight change) with their shifts:")
        print(table[["rank", "layer", "head", "ov_change", "text_shift", "span_shift", "explained_before",
                     "explained_after"]].to_string(index=False))
        top = table.iloc[0]
        layer, head = int(top["layer"]), int(top["head"])
        print(f"\nworked example (seed {seed}): the most-changed head L{layer}·H{head}, ov_change {top['ov_change']:.3f}, "
              f"text shift {top['text_shift']:.2f}, span shift {top['span_shift']:.3f}, first {args.k} texts explain "
              f"{100 * top['explained_before']:.1f}% before, {100 * top['explained_after']:.1f}% after")
        print(marked_texts(before.head(layer, head), after.head(layer, head), args.k).to_string(index=False))


if __name__ == "__main__":
    main()
