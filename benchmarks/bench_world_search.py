"""The small search behind the `world` presets: epochs 50/100 x a method's default lr / one larger lr, 3 seeds.

README's *Adaptation on the microscopy-like style* gave every method the same grid on `world-shape-microscopy`
(16 shots, seeds 1, 2, 3, the whole test split) and made the best mean its `world` preset; this script runs that
grid for any method, one run after another in this process (no Ray: a shared machine's scheduler starves Ray's
low-priority workers), into a run store it resumes from (--runs-dir), so a search cut short continues where it
stopped. It prints every setting's mean ± sample std and marks the best, as the README's table lists them.

    python benchmarks/bench_world_search.py --method clip-lora --method coop --runs-dir runs-search
    python benchmarks/bench_world_search.py --method coop --epochs 100 --seed 1     # one cell of the grid
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time

import pandas as pd

from clipsvd.data import DatasetSpec, load_dataset
from clipsvd.runs import RunStore
from clipsvd.runs.cells import CellStatus, cell_status
from clipsvd.training.experiment import ExperimentConfig, run_experiment

DATASET = "world-shape-microscopy"
SEEDS = (1, 2, 3)
EPOCHS = (50, 100)
# The "one larger lr" each method got (README: CLIP-SVD 5e-4 -> 2e-3, CLIPFit 2e-3 -> 1e-2); the peers get 10x
# their paper's rate: CLIP-LoRA and PEFT's LoRA family 2e-4 -> 2e-3, CoOp 2e-3 -> 2e-2.
LARGER_LR = {"clip-svd": 2e-3, "prolip": 1e-3, "clipfit": 1e-2, "linear-probe": 1e-2, "clip-lora": 2e-3,
             "coop": 2e-2, "lora": 2e-3, "dora": 2e-3, "pissa": 2e-3}


def grid(method: str, epochs: list[int], lrs: list[float] | None, seeds: list[int]) -> list[ExperimentConfig]:
    """Every cell: the method's default lr (what its config resolves to on the world family, before any world
    preset of its own is read) and its larger one, times epochs, times seeds."""
    base = ExperimentConfig(method=method, dataset=DatasetSpec("builtin", DATASET), shots=16)
    default_lr = base.method_config().__class__().lr  # the dataclass default: the paper's rate
    rates = lrs or [default_lr, LARGER_LR[method]]
    return [ExperimentConfig(method=method, dataset=DatasetSpec("builtin", DATASET), shots=16, seed=seed,
                             hyperparameters={"epochs": e, "lr": lr})
            for e, lr, seed in itertools.product(epochs, rates, seeds)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append", required=True, choices=sorted(LARGER_LR))
    parser.add_argument("--runs-dir", required=True, help="run store; completed cells are not run again")
    parser.add_argument("--epochs", type=int, action="append", help="repeat; default 50 and 100")
    parser.add_argument("--lr", type=float, action="append", help="repeat; default the method's and its larger one")
    parser.add_argument("--seed", type=int, action="append", help="repeat; default 1 2 3")
    args = parser.parse_args()
    store = RunStore(args.runs_dir)
    data = load_dataset(DatasetSpec("builtin", DATASET))
    rows = []
    for method in args.method:
        configs = grid(method, args.epochs or list(EPOCHS), args.lr, args.seed or list(SEEDS))
        status = cell_status(configs, store)
        for config, (_, cell) in zip(configs, status.iterrows()):
            hp = config.hyperparameters
            if cell["status"] == CellStatus.DONE:
                run = store.load(cell["run_id"])
            else:
                start = time.perf_counter()
                run = run_experiment(config, store, dataset=data)
                print(f"{method} epochs {hp['epochs']} lr {hp['lr']:g} seed {config.seed}: "
                      f"{run.metrics.get('accuracy', float('nan')):.2f} % ({time.perf_counter() - start:.0f} s)",
                      flush=True)
            rows.append({"method": method, "epochs": hp["epochs"], "lr": hp["lr"], "seed": config.seed,
                         "status": run.status, "accuracy": run.metrics.get("accuracy"),
                         "steps": run.metrics.get("steps"), "train_s": run.metrics.get("train_seconds")})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    summary = (table.groupby(["method", "epochs", "lr"])["accuracy"].agg(["mean", "std", "count"]).round(2)
               .reset_index())
    best = summary.loc[summary.groupby("method")["mean"].idxmax()]
    summary["best"] = summary.index.isin(best.index)
    print(f"\n16-shot {DATASET}, test accuracy % (mean, sample std over the seeds run; best mean per method)")
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
