"""Sweep scaling on this machine: the same tiny grid on local Ray with 1, 2, … workers.

Prints wall time, runs per minute, mean time per run (inside the worker), peak memory of a worker
process, and the speed-up over one worker, all measured in this one invocation.

    python benchmarks/bench_sweep.py --workers 1 2 --epochs 50
"""
from __future__ import annotations

import argparse
import tempfile
import time

from clipsvd.data import DatasetSpec
from clipsvd.models import TINY_MODEL_NAME, ModelSpec
from clipsvd.runs import RunStore
from clipsvd.training.sweep import SweepSpec, run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--arch", default=TINY_MODEL_NAME)
    args = parser.parse_args()
    spec = SweepSpec(methods=["clip-svd", "clipfit"], datasets=[DatasetSpec("builtin", "animal-shape")], shots=[4],
                     seeds=list(range(1, args.seeds + 1)), model=ModelSpec(args.arch), device="cpu",
                     hyperparameters={m: {"epochs": args.epochs} for m in ("clip-svd", "clipfit")},
                     max_test_per_class=100)
    first_wall = None
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            table = run_sweep(spec, RunStore(root), workers=workers)
            wall = time.perf_counter() - start
        first_wall = first_wall or wall
        runs = len(table)
        print(f"[sweep] {runs} runs ({args.arch}, {args.epochs} epochs) with {workers} worker(s): wall {wall:.1f}s, "
              f"{runs / wall * 60:.1f} runs/min, per run {table['wall_seconds'].mean():.1f}s in-worker "
              f"(train {table['train_seconds'].mean():.1f}s), peak worker RSS {table['peak_rss_mib'].max():.0f} MiB, "
              f"speed-up vs first {first_wall / wall:.2f}×, all completed: {(table['status'] == 'completed').all()}")


if __name__ == "__main__":
    main()
