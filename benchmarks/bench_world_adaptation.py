"""Adaptation on the world's microscopy-like style, measured in one run (needs training: minutes on 2 cores).

- 16-shot shape classification on `world-shape-microscopy`: zero-shot vs CLIP-SVD, ProLIP, CLIPFit and a linear
  probe, each at the best setting of README's small search; goal: CLIP-SVD >= zero-shot + 15 points;
- base -> novel on `world-object-microscopy` (novel = colour x shape pairs never trained on); goal: CLIP-SVD's HM
  beats zero-shot's.

Seeds 1, 2, 3; runs land in a temporary run store (or --runs-dir).

    python benchmarks/bench_world_adaptation.py [--workers 2]
"""
from __future__ import annotations

import argparse
import tempfile

import pandas as pd

from clipsvd.data import DatasetSpec
from clipsvd.runs import RunStore
from clipsvd.training.sweep import SweepSpec, run_sweep

FEW_SHOT = {  # method -> hyperparameters (README: the best of epochs 50/100 x default lr / one larger lr)
    "zero-shot": {},
    "clip-svd": {"lr": 2e-3, "epochs": 100},
    "prolip": {"lr": 1e-3, "epochs": 100},
    "clipfit": {"lr": 1e-2, "epochs": 100},
    "linear-probe": {"epochs": 50},
}
BASE_TO_NOVEL = {"zero-shot": {}, "clip-svd": {"lr": 2e-3, "epochs": 25}}


def sweep(methods: dict, dataset: str, protocol: str, store: RunStore, workers: int) -> pd.DataFrame:
    spec = SweepSpec(methods=list(methods), datasets=[DatasetSpec("builtin", dataset)], shots=[16], seeds=[1, 2, 3],
                     protocol=protocol, hyperparameters={m: h for m, h in methods.items() if h})
    return run_sweep(spec, store, workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs-dir", default=None)
    args = parser.parse_args()
    store = RunStore(args.runs_dir or tempfile.mkdtemp(prefix="bench-world-"))
    few = sweep(FEW_SHOT, "world-shape-microscopy", "few-shot", store, args.workers)
    table = few.groupby("method")["accuracy"].agg(["mean", "std"]).round(2).sort_values("mean", ascending=False)
    print("16-shot world-shape-microscopy, accuracy % (seeds 1-3)\n", table)
    gain = table.loc["clip-svd", "mean"] - table.loc["zero-shot", "mean"]
    print(f"CLIP-SVD - zero-shot = {gain:.2f} points (goal >= 15)\n")
    b2n = sweep(BASE_TO_NOVEL, "world-object-microscopy", "base2novel", store, args.workers)
    print("base -> novel world-object-microscopy (seeds 1-3)\n",
          b2n.groupby("method")[["base", "novel", "hm"]].agg(["mean", "std"]).round(2))


if __name__ == "__main__":
    main()
