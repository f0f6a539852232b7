import pandas as pd
import pytest

from clipsvd.data import DatasetSpec
from clipsvd.errors import ConfigError
from clipsvd.runs import RunStore, aggregate
from clipsvd.training.sweep import SweepSpec, run_sweep
from tests.conftest import TINY

ANIMALS = DatasetSpec("builtin", "animal-shape")


def tiny_grid(**changes) -> SweepSpec:
    values = dict(methods=["zero-shot", "clip-svd"], datasets=[ANIMALS], shots=[1], seeds=[1, 2], model=TINY,
                  hyperparameters={"clip-svd": {"epochs": 1}}, device="cpu", max_test_per_class=2)
    return SweepSpec(**{**values, **changes})


def test_grid_expands_and_rejects_bad_hyperparameters():
    configs = tiny_grid(shots=[1, 2]).configs("sweep-x")
    assert len(configs) == 2 * 2 * 2 and {c.sweep for c in configs} == {"sweep-x"}
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        tiny_grid(hyperparameters={"clip-svd": {"learning_rate": 1}}).configs("s")
    with pytest.raises(ConfigError, match="not in the sweep"):
        tiny_grid(hyperparameters={"prolip": {"lr": 1}}).configs("s")


def test_sweep_on_local_ray_lands_every_run_in_the_store(tmp_path):
    store = RunStore(tmp_path)
    seen = []
    table = run_sweep(tiny_grid(), store, workers=2, on_result=lambda done, total, row: seen.append((done, total)))
    assert len(table) == 4 and (table["status"] == "completed").all()
    assert seen[-1] == (4, 4)
    stored = store.table()
    assert len(stored) == 4 and stored["sweep"].nunique() == 1
    assert (table["peak_rss_mib"] > 0).all()
    summary = aggregate(stored)
    assert list(summary["method"]) == ["clip-svd", "zero-shot"] and list(summary["n"]) == [2, 2]
    # Zero-shot is deterministic, and every seed is scored on the same test images.
    assert summary.loc[summary["method"] == "zero-shot", "accuracy_std"].item() == 0


def test_aggregate_mean_and_std_over_seeds():
    table = pd.DataFrame({"status": ["completed"] * 3 + ["cancelled"], "dataset": ["d"] * 4,
                          "protocol": ["few-shot"] * 4, "shots": [4] * 4, "method": ["m"] * 4,
                          "accuracy": [70.0, 80.0, 90.0, 10.0], "train_seconds": [1.0, 1.0, 1.0, 1.0]})
    row = aggregate(table).iloc[0]
    assert row["n"] == 3 and row["accuracy_mean"] == 80.0 and row["accuracy_std"] == pytest.approx(10.0)


def test_shots_table_is_methods_by_shots():
    from clipsvd.runs import shots_table

    table = pd.DataFrame({"status": ["completed"] * 5, "method": ["a", "a", "a", "b", "b"], "shots": [1, 1, 4, 1, 4],
                          "accuracy": [50.0, 60.0, 70.0, 40.0, 80.0], "train_seconds": [1.0] * 5,
                          "dataset": ["d"] * 5, "protocol": ["few-shot"] * 5})
    out = shots_table(table).set_index("method")
    assert list(out.columns) == ["1-shot", "4-shot"]
    assert out.loc["a", "1-shot"] == "55.00 ± 7.07 (2)" and out.loc["b", "4-shot"] == "80.00 (1)"
