"""The generated world and its CLIP, measured in one run:

1. generation speed: images/s per style at 64 px on one core (goal >= 2,000 for pretraining's clean style);
2. zero-shot accuracy of the shipped world CLIP per task and style (goal: clean colour >= 90 %, shape >= 70 %;
   the shifted styles clearly lower);
3. TextSpan with the world corpus: per head of the last layers, the share of its top-5 texts describing one
   factor (goal: two heads >= 80 %);
4. mean ablation (TextSpan's intervention check): ablating the most colour-specific head should cost colour
   accuracy at least twice what it costs shape accuracy, and the other way round for a shape head.

Adaptation numbers (16-shot on the microscopy-like style, base -> novel on the object task) need training:
README gives the `python -m clipsvd sweep` commands that produce them.

    python benchmarks/bench_world.py
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

from clipsvd.models import ModelSpec, load_model
from clipsvd.world.render import STYLES, render
from clipsvd.world.scenes import sample_scenes
from clipsvd.worldclip.evaluation import ablation_table, factor_heads, zero_shot_by_style


def generation_speed(seconds: float = 3.0) -> pd.DataFrame:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    for style in STYLES:
        for single in (1.0, 0.5):
            rng, n, start = np.random.default_rng(0), 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                render(sample_scenes(rng, 256, single), style, 64, seed=n)
                n += 256
            rows.append({"style": style, "scenes": "single objects" if single == 1.0 else "half multi-object",
                         "images_per_s": round(n / (time.perf_counter() - start))})
    torch.set_num_threads(threads)  # the model measurements below use every core again
    return pd.DataFrame(rows)


def ablation_summary(topics: pd.DataFrame, ablation: pd.DataFrame) -> pd.DataFrame:
    """For the most colour-specific and the most shape-specific head (by TextSpan topic): both drops."""
    drops = ablation.pivot_table(index=["layer", "head"], columns="task", values="drop")
    rows = []
    for factor in ("colour", "shape"):
        candidates = topics[topics.topic == factor]
        if candidates.empty:
            rows.append({"head_for": factor, "layer": None, "head": None})
            continue
        top = candidates.iloc[0]
        key = (int(top["layer"]), int(top["head"]))
        rows.append({"head_for": factor, "layer": key[0], "head": key[1], "share": top["share"],
                     "colour_drop": drops.loc[key, "colour"], "shape_drop": drops.loc[key, "shape"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    pd.set_option("display.width", 160)
    pd.set_option("display.max_colwidth", 90)
    print("1. generation speed (one core, 64 px)\n", generation_speed().to_string(index=False), "\n")
    threads = torch.get_num_threads()
    loaded = load_model(ModelSpec.default(), args.device)
    print(f"model: {loaded.label} ({threads} threads)")
    print("2. zero-shot accuracy (%)\n", zero_shot_by_style(loaded).pivot(index="task", columns="style",
                                                                       values="accuracy").round(1), "\n")
    topics, _ = factor_heads(loaded)
    print("3. TextSpan factor share of the top-5 texts per head\n",
          topics[["layer", "head", "topic", "share", "texts"]].to_string(index=False), "\n")
    ablation = ablation_table(loaded)
    print("4. mean ablation (accuracy drop, fraction)\n", ablation_summary(topics, ablation).to_string(index=False))


if __name__ == "__main__":
    main()
