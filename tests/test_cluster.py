"""Sweeps on a multi-node Ray cluster without a GPU: two local nodes declaring one GPU each (ray.cluster_utils),
runs that get a GPU id and choose it, results that come home to the driver's store (the workers' own store path is a
different folder), a failure retried then recorded while the rest finishes, resume, Ctrl-C and cancel."""
import copy
import os
import time

import pytest

from clipsvd.cli import main
from clipsvd.data import DatasetSpec
from clipsvd.runs import RunStatus, RunStore
from clipsvd.training import ExperimentConfig
from clipsvd.training.sweep import BackgroundSweep, Launch, run_configs, run_grid, scheduling
from tests.conftest import TINY
from tests.test_app import app_at, assert_clean
from tests.test_reproduce import coop_tree
from tests.test_sweep import tiny_grid

ray = pytest.importorskip("ray")
TINY_ARGS = ["--arch", "clipsvd-tiny", "--weights", "random", "--dataset", "animal-shape", "--shots", "1",
             "--max-test-per-class", "2"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (no CPU, no GPU) + 2 nodes × (1 CPU, 1 GPU); yields the run-store path the workers would default to.

    The nodes inherit CLIPSVD_RUNS, a folder that must stay empty. Their workers' torch has no CUDA: a setup hook
    (this job's alone) makes each worker choose the GPU Ray assigned as if torch saw it, and train on the CPU."""
    from ray.cluster_utils import Cluster

    def pretend_cuda() -> None:  # runs in every worker process of this job, before its task
        import dataclasses

        from clipsvd.training.sweep import scheduling

        choose, run = scheduling.task_device, scheduling.run_experiment

        def on_cpu(config, store):
            store.metrics["placement"]["simulated_cuda"] = True
            return run(dataclasses.replace(config, device="cpu"), store)

        scheduling.task_device = lambda preference, gpu_ids, cuda_available: choose(preference, gpu_ids, True)
        scheduling.run_experiment = on_cpu

    worker_runs = tmp_path_factory.mktemp("worker-default-runs")
    start = time.perf_counter()
    with pytest.MonkeyPatch.context() as patch:  # only while the nodes start: they keep it, this process does not
        patch.setenv("CLIPSVD_RUNS", str(worker_runs))
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0,
                                                                "include_dashboard": False})
        for _ in range(2):
            cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": pretend_cuda})
    cluster.wait_for_nodes()
    print(f"cluster up in {time.perf_counter() - start:.1f} s")
    yield worker_runs
    ray.shutdown()
    cluster.shutdown()


def broken_config(tmp_path) -> ExperimentConfig:
    """A run whose data root exists on no node."""
    return ExperimentConfig("zero-shot", TINY, DatasetSpec("imagefolder", "ghost", str(tmp_path / "no-such-data")),
                            shots=1, max_test_per_class=2)


@pytest.fixture(scope="module")
def first_sweep(cluster, tmp_path_factory):
    """CLIP-SVD and zero-shot on the tiny model, plus one run whose data is missing, on the 2-GPU cluster."""
    tmp = tmp_path_factory.mktemp("first-sweep")
    store = RunStore(tmp / "driver-runs")
    configs = [*tiny_grid(seeds=[1], device="auto").configs(), broken_config(tmp)]
    seen = []
    rows = run_grid(configs, store, "sweep", Launch(retries=1, on_progress=lambda p: seen.append(copy.deepcopy(p))))
    return store, configs, rows, seen


def test_each_run_gets_a_gpu_of_its_own_and_comes_home_without_a_shared_folder(cluster, first_sweep):
    store, _, rows, seen = first_sweep
    done = [run for run in store.list() if run.status == "completed"]
    assert sorted(run.config["method"] for run in done) == ["clip-svd", "zero-shot"]
    for run in done:
        placement = run.metrics["placement"]
        assert placement["cuda_visible_devices"] == "0" and placement["gpu_ids"] == ["0"]
        assert run.metrics["device"] == "cuda:0" and placement["simulated_cuda"]
        assert placement["torch_threads"] == 1 and placement["cpus"] == 1
    assert len({run.metrics["placement"]["node_id"] for run in done}) == 2  # one run per GPU node, side by side
    clip_svd = next(run for run in done if run.config["method"] == "clip-svd")
    assert clip_svd.adapter_tensors() and clip_svd.metrics["checkpoint_bytes"] > 0  # tensors came home as bytes
    assert not any(cluster.iterdir())  # the workers wrote nothing into their own store path
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]  # no half-written run left
    assert seen[-1].finished and (seen[-1].done, seen[-1].failed, seen[-1].total) == (2, 1, 3)
    assert max(p.running for p in seen) == 2
    assert rows["sweep"].nunique() == 1 and rows["sweep"].iloc[0].startswith("sweep-")


def test_a_failing_run_is_retried_then_recorded_while_the_others_finish(first_sweep):
    store, _, rows, _ = first_sweep
    failed = rows[rows["status"] == RunStatus.FAILED].iloc[0]
    assert failed["attempts"] == 2 and failed["dataset"] == "ghost"
    assert "failed after 2 attempts: DataError on node " in failed["error"]
    assert "no-such-data does not exist on this node" in failed["error"]
    [record] = [run for run in store.list() if run.status == RunStatus.FAILED]
    assert record.message == failed["error"] and record.metrics["attempts"] == 2
    assert (rows["status"] == "completed").sum() == 2


def test_a_second_sweep_skips_finished_runs_and_continues_the_sweep(first_sweep):
    store, configs, first_rows, _ = first_sweep
    before = {run.run_id for run in store.list() if run.status == "completed"}
    rows = run_grid(configs, store, "sweep", Launch(retries=0))
    assert rows["resumed"].sum() == 2 and set(rows.loc[rows["resumed"], "run_id"]) == before
    [again] = rows[~rows["resumed"]].itertuples()
    assert again.status == RunStatus.FAILED and again.attempts == 1  # only the failed cell ran again
    assert {run.run_id for run in store.list() if run.status == "completed"} == before
    assert set(rows["sweep"]) == set(first_rows["sweep"])


def test_cli_sweep_shares_a_gpu_between_runs_and_shows_one_bar(cluster, tmp_path, capsys):
    argv = ["--runs-dir", str(tmp_path), "sweep", "--method", "zero-shot", *TINY_ARGS, "--seed", "1", "--seed", "2",
            "--gpus-per-run", "0.5", "--cpus-per-run", "0.5"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "[2/2] zero-shot · animal-shape · 1-shot" in out and "zero-shot" in out.splitlines()[-1]
    assert "sweep: 100%" in err and "2/2" in err and "0 failed" in err
    runs = RunStore(tmp_path).list()
    assert all(run.metrics["placement"]["gpu_ids"] == ["0"] and run.metrics["device"] == "cuda:0" for run in runs)
    assert main(argv) == 0 and "2 of 2 runs were already in the store" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["sweep", "--method", "zero-shot", "--retries", "x"])


def test_ctrl_c_and_cancel_leave_only_whole_runs(cluster, tmp_path):
    store = RunStore(tmp_path / "runs")
    configs = tiny_grid(methods=["zero-shot"], seeds=[1, 2, 3], device="auto", hyperparameters={}).configs("s")

    def interrupt(done, total, row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_configs(configs, store, Launch(on_result=interrupt))
    assert [run.status for run in store.list()] == ["completed"]  # the first came home; the others were cancelled
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]

    sweep = BackgroundSweep(configs, RunStore(tmp_path / "bg"), "sweep")
    sweep.cancel()
    final = sweep.wait(60)
    assert sweep.done and sweep.error is None and final.finished and final.cancelled + final.done == 3
    assert set(sweep.rows["status"]) <= {"cancelled", "completed"}
    assert scheduling.task_device.__module__ == scheduling.__name__  # the pretence is the workers' alone


def test_reproduce_page_runs_a_sweep_with_one_progress_bar(cluster, tmp_path):
    root = coop_tree(tmp_path / "DATA", "eurosat", "EuroSAT", "2750", ["Forest", "River", "Highway", "SeaLake"])
    at = app_at("pages/9_Reproduce.py", tmp_path / "runs", reproduce_data_root=str(root))
    at.multiselect(key="_w_rep_datasets").set_value(["EuroSAT"])
    at.multiselect(key="_w_rep_shots").set_value([1])
    at.multiselect(key="_w_rep_seeds").set_value([1])
    at.multiselect(key="_w_rep_methods").set_value(["zero-shot"])
    at.number_input(key="_w_rep_cap").set_value(2)
    at.run()
    assert at.button(key="rep-start").label == "Run the 1 missing cells"
    at.button(key="rep-start").click().run()
    assert_clean(at)
    [bar] = [p.proto.text for p in at.get("progress")]
    assert bar.startswith("Sweep on Ray: 0/1 cells · ") and "failed" in bar
    assert at.dataframe[0].value["status"].iloc[0] in ("⏳ running", "🕒 queued")
    for _ in range(120):
        if [m.value for m in at.metric][1] == "1":
            break
        time.sleep(0.5)
        at.run()
    assert_clean(at)
    [run] = RunStore(tmp_path / "runs").list()
    assert run.config["sweep"].startswith("reproduce-clip-svd-few-shot-natural-") and run.metrics["device"] == "cuda:0"


def test_a_worker_that_dies_is_retried_then_recorded(cluster, tmp_path, monkeypatch):
    crashes = tmp_path / "crashes"

    def crash(config, store_root, cpus, attempt, earlier):  # as an OOM kill would: the worker process ends mid-run
        with open(crashes, "a") as fh:
            fh.write(str(attempt))
        os._exit(1)

    monkeypatch.setattr(scheduling, "_run_task", crash)
    store = RunStore(tmp_path / "runs")
    config = tiny_grid(methods=["zero-shot"], seeds=[1], hyperparameters={}).configs("s")
    [row] = run_configs(config, store, Launch(retries=1)).to_dict("records")
    assert row["status"] == RunStatus.FAILED and row["attempts"] == 2 and "WorkerCrashedError" in row["error"]
    [run] = store.list()
    assert run.status == RunStatus.FAILED and run.metrics["attempts"] == 2 and crashes.read_text() == "12"
    assert ["WorkerCrashedError" in error for error in run.metrics["earlier_attempts"]] == [True]


def test_a_run_whose_first_worker_was_killed_records_the_attempt(cluster, tmp_path, monkeypatch):
    """The fault suite's killed Ray worker (tests/test_faults.py): SIGKILL on the first attempt, the retry completes,
    and the stored run says it took 2 attempts and why the first ended."""
    real = scheduling._run_task

    def killed_once(config, store_root, cpus, attempt, earlier):
        if attempt == 1:
            os.kill(os.getpid(), 9)
        return real(config, store_root, cpus, attempt, earlier)

    monkeypatch.setattr(scheduling, "_run_task", killed_once)
    store = RunStore(tmp_path / "runs")
    config = tiny_grid(methods=["zero-shot"], seeds=[1], hyperparameters={}).configs("s")
    [row] = run_configs(config, store, Launch(retries=1)).to_dict("records")
    [run] = store.list()
    assert row["status"] == RunStatus.COMPLETED and row["attempts"] == 2 and run.run_id == row["run_id"]
    assert run.status == RunStatus.COMPLETED and run.metrics["attempts"] == 2
    [first] = run.metrics["earlier_attempts"]
    print(f"killed worker: attempts {run.metrics['attempts']}, first ended with {first[:80]}")
    assert "WorkerCrashedError" in first or "died" in first


def test_shared_store_keeps_workers_writing_into_the_drivers_folder(cluster, tmp_path):
    store = RunStore(tmp_path / "shared")
    config = tiny_grid(methods=["zero-shot"], seeds=[1], hyperparameters={}, device="auto").configs("s")
    [row] = run_configs(config, store, Launch(shared_store=True)).to_dict("records")
    [run] = store.list()
    assert row["status"] == RunStatus.COMPLETED and run.run_id == row["run_id"] and run.metrics["device"] == "cuda:0"
