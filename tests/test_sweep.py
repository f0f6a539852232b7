import time

import pandas as pd
import pytest

from clipsvd.data import DatasetSpec
from clipsvd.errors import ConfigError
from clipsvd.runs import RunStore, aggregate
from clipsvd.training.sweep import GridProgress, Launch, Placement, SweepSpec, plan_placement, run_sweep, task_device
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
    assert (table["peak_rss_mib"] > 0).all() and set(table["device"]) == {"cpu"}  # no GPU asked for, none used
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


# ----------------------------------------------------------------------------- placement and device, without Ray

GPU_NODE, CPU_NODE = {"CPU": 16.0, "GPU": 4.0}, {"CPU": 8.0}


def test_runs_take_a_gpu_when_the_cluster_has_them_and_share_the_cpus():
    assert plan_placement([GPU_NODE, GPU_NODE], Launch()) == Placement(gpus=1.0, cpus=4.0, slots=8)
    assert plan_placement([GPU_NODE], Launch(gpus_per_run=0.5)) == Placement(0.5, 2.0, 8)  # two per GPU
    assert plan_placement([GPU_NODE], Launch(), devices={"cpu"}) == Placement(0.0, 1.0, 16)
    assert plan_placement([CPU_NODE], Launch(workers=2)) == Placement(0.0, 4.0, 2)
    assert plan_placement([CPU_NODE], Launch(cpus_per_run=3)).threads == 3
    with pytest.raises(ConfigError, match="no node of the Ray cluster can take a run needing 1 CPUs and 1 GPUs"):
        plan_placement([CPU_NODE], Launch(gpus_per_run=1))
    with pytest.raises(ConfigError, match="needs a GPU per run: give --gpus-per-run"):
        plan_placement([CPU_NODE], Launch(), devices={"cuda"})
    for bad, flag in ((Launch(gpus_per_run=-1), "--gpus-per-run"), (Launch(cpus_per_run=0), "--cpus-per-run"),
                      (Launch(retries=-1), "--retries"), (Launch(workers=0), "--workers")):
        with pytest.raises(ConfigError, match=flag):
            plan_placement([CPU_NODE], bad)


def test_a_task_trains_on_the_gpus_ray_gave_it_and_never_on_others():
    assert task_device("auto", ["3"], cuda_available=True) == "cuda:0"  # CUDA_VISIBLE_DEVICES=3: torch's cuda:0
    assert task_device("auto", [], cuda_available=True) == "cpu"
    assert task_device("cpu", ["0"], cuda_available=True) == "cpu"
    assert task_device("cuda:1", ["2", "5"], cuda_available=True) == "cuda:1"
    with pytest.raises(ConfigError, match="given 1 GPU"):
        task_device("cuda:1", ["2"], cuda_available=True)
    with pytest.raises(ConfigError, match="Ray gave this run no GPU"):
        task_device("cuda", [], cuda_available=True)
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        task_device("auto", ["0"], cuda_available=False)


def test_grid_progress_counts_and_eta():
    progress = GridProgress(total=10, skipped=4, done=2, failed=1, running=2, started=time.monotonic() - 30)
    assert progress.to_run == 6 and progress.fraction == pytest.approx(0.7)
    assert progress.eta_s == pytest.approx(30, abs=1)  # 3 runs in 30 s, 3 left
    assert progress.text().startswith("7/10 cells · 2 running, 1 failed, 4 done before · ETA 30 s")
    assert GridProgress(total=3).eta_s is None
