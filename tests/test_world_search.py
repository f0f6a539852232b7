"""benchmarks/bench_world_search.py: the grid README's world search gives every method (no training here)."""
from __future__ import annotations

import sys

import pytest

sys.path.insert(0, "benchmarks")
from bench_world_search import LARGER_LR, grid  # noqa: E402

sys.path.remove("benchmarks")


@pytest.mark.parametrize("method, paper_lr", [("clip-svd", 5e-4), ("clip-lora", 2e-4), ("coop", 2e-3), ("pissa", 2e-4)])
def test_grid_is_epochs_50_100_by_paper_lr_and_larger_lr_by_three_seeds(method, paper_lr):
    configs = grid(method, [50, 100], None, [1, 2, 3])
    cells = {(c.hyperparameters["epochs"], c.hyperparameters["lr"], c.seed) for c in configs}
    assert len(configs) == len(cells) == 12
    # the paper's rate even where a world preset already moved the default (clip-svd's is 2e-3)
    assert {lr for _, lr, _ in cells} == {paper_lr, LARGER_LR[method]} and LARGER_LR[method] > paper_lr
    for config in configs:  # the given values win over any preset, so each cell trains what it says
        resolved = config.method_config()
        assert (resolved.epochs, resolved.lr) == (config.hyperparameters["epochs"], config.hyperparameters["lr"])
        assert config.setting().backbone == "world" and config.shots == 16
