"""Concurrent runs and killed processes: the run store stays consistent."""
import os
import signal
import subprocess
import sys
import threading
import time

from clipsvd.data import DatasetSpec
from clipsvd.runs import RunStore
from clipsvd.runs import RunStatus
from clipsvd.training import ExperimentConfig, run_experiment
from tests.conftest import TINY


def config(method: str, seed: int) -> ExperimentConfig:
    return ExperimentConfig(method=method, model=TINY, dataset=DatasetSpec("builtin", "animal-shape"), shots=2,
                            seed=seed, device="cpu", hyperparameters={"epochs": 2, "batch_size": 4},
                            max_test_per_class=2)


def test_two_trainings_at_once_do_not_mix(tmp_path):
    store = RunStore(tmp_path)
    results, errors = {}, []

    def work(method, seed):
        try:
            results[method] = run_experiment(config(method, seed), store)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=a) for a in (("clip-svd", 1), ("clipfit", 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {r.status for r in results.values()} == {RunStatus.COMPLETED}
    stored = {r.run_id: r for r in store.list()}
    assert len(stored) == 2
    for method, run in results.items():
        again = stored[run.run_id]
        assert again.config["method"] == method
        assert again.metrics == run.metrics
        names = set(again.adapter_tensors())
        assert all(("sigma" in n) == (method == "clip-svd") for n in names)


def test_a_killed_training_process_leaves_no_half_written_run(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "clipsvd", "--runs-dir", str(tmp_path), "train", "--method", "clip-svd",
               "--arch", "clipsvd-tiny", "--shots", "4", "--epochs", "500", "--batch-size", "4", "--log-every", "1",
               "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    deadline = time.time() + 120
    try:
        for line in process.stdout:
            if "step 3/" in line or time.time() > deadline:
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert RunStore(tmp_path).list() == []
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".tmp")] if tmp_path.exists() else True
