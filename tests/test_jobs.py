"""The dashboard's background job registry, tested without Streamlit on the tiny model."""
import dataclasses
import threading

import pytest

from clipsvd.data import DatasetSpec
from clipsvd.runs import RunStore
from clipsvd.training import ExperimentConfig, run_experiment
from clipsvd.runs import RunStatus
from clipsvd.training.jobs import JobRegistry

CANCELLED_JOB, COMPLETED, FAILED, QUEUED = (RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.FAILED,
                                            RunStatus.QUEUED)
from tests.conftest import TINY

ANIMALS = DatasetSpec("builtin", "animal-shape")


def tiny_config(method: str = "clip-svd", **changes) -> ExperimentConfig:
    base = ExperimentConfig(method=method, model=TINY, dataset=ANIMALS, shots=1, seed=1, device="cpu",
                            hyperparameters={"epochs": 1}, max_test_per_class=2)
    return dataclasses.replace(base, **changes)


def test_job_runs_configs_in_order_and_lands_runs_in_the_store(tmp_path):
    store = RunStore(tmp_path)
    registry = JobRegistry()
    job_id = registry.submit([tiny_config(seed=1), tiny_config("clipfit", seed=2)], store)
    state = registry.wait(job_id, timeout=120)
    assert state.status == COMPLETED, state.error
    assert state.index == state.total == 2 and state.fraction == 1.0
    assert len(state.run_ids) == 2 and state.run_statuses == ["completed", "completed"]
    assert {run.run_id for run in store.list()} == set(state.run_ids)
    assert [p["run"] for p in state.loss_points] == [0, 1]  # one step each (1 shot × 10 classes, batch 32)
    assert state.progress.phase == "done" and state.error is None
    assert any("clipfit" in m for m in state.messages)


def test_snapshots_are_copies(tmp_path):
    registry = JobRegistry()
    job_id = registry.submit([tiny_config()], RunStore(tmp_path))
    state = registry.wait(job_id, timeout=120)
    state.messages.append("edited by a page")
    state.run_ids.clear()
    fresh = registry.get(job_id)
    assert "edited by a page" not in fresh.messages and len(fresh.run_ids) == 1
    assert [s.job_id for s in registry.list()] == [job_id]


def test_cancel_stops_the_run_and_saves_it_as_cancelled(tmp_path):
    store = RunStore(tmp_path)
    started = threading.Event()
    registry = JobRegistry()

    def runner(config, store, on_progress, cancel):
        def progress(p):
            on_progress(p)
            if p.phase == "train":
                started.set()
                cancel.wait(30)  # hold the loop until the test cancels, so the cancel lands mid-training

        return run_experiment(config, store, on_progress=progress, cancel=cancel)

    registry._runner = runner
    config = tiny_config(shots=4, hyperparameters={"epochs": 3, "batch_size": 4})
    job_id = registry.submit([config, tiny_config(seed=2)], store)
    assert started.wait(60)
    assert registry.cancel(job_id)
    state = registry.wait(job_id, timeout=60)
    assert state.status == CANCELLED_JOB
    assert state.run_statuses == ["cancelled"]  # the second config never started
    assert store.load(state.run_ids[0]).status == "cancelled"
    assert not registry.cancel(job_id)  # already over


def test_second_job_waits_queued_for_the_first(tmp_path):
    release = threading.Event()
    registry = JobRegistry()

    def slow_runner(config, store, on_progress, cancel):
        release.wait(30)
        return run_experiment(config, store, on_progress=on_progress, cancel=cancel)

    registry._runner = slow_runner
    first = registry.submit([tiny_config()], RunStore(tmp_path))
    second = registry.submit([tiny_config(seed=2)], RunStore(tmp_path))
    assert registry.get(second).status == QUEUED
    assert registry.cancel(second)  # cancelling a queued job ends it without running anything
    release.set()
    assert registry.wait(first, 120).status == COMPLETED
    state = registry.wait(second, 60)
    assert state.status == CANCELLED_JOB and state.run_ids == []


def test_user_facing_error_fails_the_job_with_its_message(tmp_path):
    registry = JobRegistry()
    missing = DatasetSpec("imagefolder", "mine", root=str(tmp_path / "no-such-folder"))
    job_id = registry.submit([tiny_config(dataset=missing)], RunStore(tmp_path / "runs"))
    state = registry.wait(job_id, timeout=60)
    assert state.status == FAILED
    assert "no-such-folder" in state.error and state.error_detail is None


def test_unexpected_error_keeps_the_traceback(tmp_path):
    def broken(config, store, on_progress, cancel):
        raise RuntimeError("boom")

    registry = JobRegistry(runner=broken)
    state = registry.wait(registry.submit([tiny_config()], RunStore(tmp_path)), timeout=30)
    assert state.status == FAILED and state.error == "RuntimeError: boom" and "Traceback" in state.error_detail


def test_invalid_config_is_refused_at_submit(tmp_path):
    registry = JobRegistry()
    with pytest.raises(Exception, match="method"):
        registry.submit([tiny_config("no-such-method")], RunStore(tmp_path))
    with pytest.raises(ValueError):
        registry.submit([], RunStore(tmp_path))
    assert registry.list() == [] and registry.get("nope") is None



def test_cancel_during_clip_svd_decomposition_ends_the_job_as_cancelled_with_nothing_saved(tmp_path, monkeypatch):
    """The job's cancel Event reaches CLIP-SVD's attach: a cancel between two matrices of the first decomposition
    stops the job, saves no run, and says so (the run does not just vanish)."""
    monkeypatch.setenv("CLIPSVD_CACHE", str(tmp_path / "cache"))  # a cache miss: the decomposition runs
    store = RunStore(tmp_path / "runs")
    seen = []
    registry = JobRegistry()

    def runner(config, store, on_progress, cancel):
        def progress(p):
            on_progress(p)
            if p.phase == "load" and p.total_steps:
                seen.append(registry.get(job_id).attach_fraction)
                cancel.set()  # as the Cancel button does (registry.cancel), mid-decomposition

        return run_experiment(config, store, on_progress=progress, cancel=cancel)

    registry._runner = runner
    job_id = registry.submit([tiny_config(), tiny_config(seed=2)], store)
    state = registry.wait(job_id, timeout=120)
    assert seen and seen[0] == 0.0  # "decomposing matrix 1/N" was visible to the page
    assert state.status == CANCELLED_JOB and state.error is None
    assert state.run_ids == [] and state.run_statuses == ["cancelled"] and store.list() == []
    assert len(state.unsaved) == 1 and "nothing was trained or saved" in state.unsaved[0]
    assert "decomposing" in state.unsaved[0] and any("run not saved" in m for m in state.messages)
    assert state.attach_fraction is None  # done


def test_attach_fraction_follows_load_progress():
    from clipsvd.training.jobs import JobState
    from clipsvd.training.loop import Progress

    state = JobState("j", ["a"], status="running", progress=Progress("load", 3, 12, message="decomposing x (4/12)"))
    assert state.attach_fraction == 0.25
    state.progress = Progress("load", message="building")
    assert state.attach_fraction is None
