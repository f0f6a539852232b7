"""How long a run will take on this machine, said before it starts (the Train page, `clipsvd train`).

A run's time is its optimiser steps × seconds per step, plus its test images × seconds per image. The rates come
from one of two honest places, and the estimate says which:

- **recorded**: the median over completed runs in the run store that share what a step's cost depends on (model,
  method, batch size, cached views, precision, device) — no cost to ask;
- **measured**: a few steps timed now on this machine through the real training loop
  (`measure_seconds_per_step`: one warm-up step, then `steps` timed) and a few test images
  evaluated through the real evaluation (a few seconds for the world CLIP).

Neither includes loading the model and data or CLIP-SVD's first decomposition of a new model (cached after it).
"""
from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from clipsvd.data import ClassificationDataset, DatasetSpec, load_dataset
from clipsvd.errors import ClipsvdError
from clipsvd.formatting import seconds_text
from clipsvd.methods import get_method
from clipsvd.runs import RunStore
from clipsvd.runs.aggregate import evaluated_images
from clipsvd.runs.status import RunStatus
from clipsvd.training.experiment import ExperimentConfig, planned_steps, prepare_data, run_experiment

# README "Performance": one CLIP-SVD step of ViT-B/16 at 224 px, batch 32, fp32 on an idle 2-core CPU
# (benchmarks/bench_clip_svd_step.py); the official few-shot protocol runs 200·K such steps.
FULL_SIZE_STEP_SECONDS = 22.3
FULL_SIZE_STEPS_PER_SHOT = 200


@dataclass(frozen=True)
class Rates:
    """Seconds per optimiser step and per test image, and where they came from."""

    seconds_per_step: float
    seconds_per_test_image: float | None
    basis: str  # a sentence: "recorded: …" or "measured: …"


@dataclass(frozen=True)
class RunEstimate:
    """One run's expected time on this machine."""

    steps: int
    test_images: int
    rates: Rates

    @property
    def train_seconds(self) -> float:
        return self.steps * self.rates.seconds_per_step

    @property
    def eval_seconds(self) -> float | None:
        per_image = self.rates.seconds_per_test_image
        return None if per_image is None else self.test_images * per_image

    @property
    def seconds(self) -> float:
        return self.train_seconds + (self.eval_seconds or 0.0)

    def sentence(self) -> str:
        """e.g. 'about 45 s: 400 steps × 0.10 s + 160 test images × 0.005 s (recorded: …)'."""
        parts = [f"{self.steps:,} steps × {self.rates.seconds_per_step:.3g} s"]
        if self.eval_seconds is not None:
            parts.append(f"{self.test_images:,} test images × {self.rates.seconds_per_test_image:.2g} s")
        else:
            parts.append(f"evaluation of {self.test_images:,} test images (not timed)")
        return f"about {seconds_text(self.seconds)}: {' + '.join(parts)} ({self.rates.basis})"


def timing_key(config: ExperimentConfig) -> dict[str, Any]:
    """What the cost of one step depends on: the same key means the same rate."""
    method_config = config.method_config()
    return {"model": config.model.to_dict(), "method": config.method, "batch_size": method_config.batch_size,
            "cached_views": method_config.cached_views, "precision": method_config.precision,
            "device": config.device}


def recorded_rates(config: ExperimentConfig, store: RunStore) -> Rates | None:
    """Median rates of completed runs in `store` with the same timing key; None when there are none."""
    key = timing_key(config)
    steps, images = [], []
    for run in store.list():
        if run.status != RunStatus.COMPLETED:
            continue
        try:
            recorded = ExperimentConfig.from_dict(run.config)
            recorded_key = timing_key(recorded)
        except ClipsvdError:  # a run of an older layout or of a method no longer offered has no comparable key
            continue
        if recorded_key != key:
            continue
        m = run.metrics
        if m.get("steps") and m.get("train_seconds"):
            steps.append(m["train_seconds"] / m["steps"])
        n_test = evaluated_images(m, with_targets=True)[0]  # eval_seconds covers the targets too
        if n_test and m.get("eval_seconds"):
            images.append(m["eval_seconds"] / n_test)
    trains = _trains(config)
    if (trains and not steps) or (not trains and not images):
        return None
    n = len(steps) if trains else len(images)
    return Rates(statistics.median(steps) if steps else 0.0, statistics.median(images) if images else None,
                 f"recorded: median of {n} completed run(s) of this model, method and batch size in the run store")


def measure_seconds_per_step(config: ExperimentConfig, dataset: ClassificationDataset | None = None,
                             steps: int = 3) -> float:
    """Seconds per optimiser step of `config` on this machine: the model loaded, the method attached, one warm-up
    step and `steps` more timed through `run_experiment` (cancelled before its evaluation). For methods that train
    on cached views a step includes caching one view's features, as in the real run. 0 for methods that do not
    train."""
    method_config = config.method_config()
    if not get_method(config.method).trains:
        return 0.0
    budget = "cached_views" if method_config.cached_views else "iterations"
    quick = dataclasses.replace(config, hyperparameters={**config.hyperparameters, budget: steps + 2})
    stamps: dict[str, list[float]] = {"train": [], "views": []}
    cancel = threading.Event()

    def on_progress(progress) -> None:
        if progress.phase == "train":
            stamps["train"].append(time.perf_counter())
            if progress.step == steps + 1:
                cancel.set()  # stop before the evaluation; the timed steps are done
        elif progress.phase == "load" and budget == "cached_views" and progress.total_steps == steps + 2:
            stamps["views"].append(time.perf_counter())

    run_experiment(quick, None, on_progress=on_progress, cancel=cancel, dataset=dataset)
    per_step = 0.0
    for times in stamps.values():
        if len(times) >= 2:
            timed = times[: steps + 1]  # from the end of the warm-up step to the end of the last timed one
            per_step += (timed[-1] - timed[0]) / (len(timed) - 1)
    return per_step


def measured_rates(config: ExperimentConfig, dataset: ClassificationDataset | None = None, steps: int = 3,
                   test_images_per_class: int = 2) -> Rates:
    """Rates timed now: `steps` optimiser steps after a warm-up, and a small test subset evaluated."""
    dataset = dataset or load_dataset(config.dataset)
    per_step = measure_seconds_per_step(config, dataset, steps=steps) if _trains(config) else 0.0
    # the source's test split alone: a rate per image needs no targets (a transfer protocol would read each one)
    quick = dataclasses.replace(config, method="zero-shot", hyperparameters={}, protocol="few-shot", targets=[],
                                max_test_per_class=test_images_per_class)
    metrics = run_experiment(quick, None, dataset=dataset).metrics
    n_test = evaluated_images(metrics)[0]
    per_image = metrics["eval_seconds"] / n_test if n_test else None
    return Rates(per_step, per_image, f"measured now on this machine: {steps} steps after a warm-up step, "
                                      f"{n_test} test images")


def estimate_run(config: ExperimentConfig, rates: Rates, dataset: ClassificationDataset | None = None,
                 load: Callable[[DatasetSpec], ClassificationDataset] = load_dataset) -> RunEstimate:
    """Steps from the resolved config (preset and overrides) and the prepared data; test images after the cap,
    the transfer protocols' targets included (a run evaluates each of them; `load` reads them, the dashboard's
    cached loader on the Train page). A method that cannot score new classes skips novel and the targets."""
    dataset = dataset or load_dataset(config.dataset)
    steps = planned_steps(config, dataset) if _trains(config) else 0
    data = prepare_data(config, dataset, load_targets=True, load=load)
    scores_new = _supports_novel(config)
    test_images = sum(len(d.test) for name, d in data.test_sets.items()
                      if scores_new or (name != "novel" and name not in data.target_templates))
    return RunEstimate(steps, test_images, rates)


def full_size_note(shots: int | None) -> str:
    """What the same adaptation costs at full size on this kind of CPU, from README's measured step time."""
    k = shots or 16
    steps = FULL_SIZE_STEPS_PER_SHOT * k
    return (f"At full size — CLIP-SVD on ViT-B/16 at 224 px, batch 32, the official few-shot protocol's 200·K = "
            f"{steps:,} steps for K={k} — a 2-core CPU needs about {FULL_SIZE_STEP_SECONDS} s a step (README, "
            f"Performance), so about {steps * FULL_SIZE_STEP_SECONDS / 3600:.0f} h a run, before evaluation; "
            "such runs want a GPU.")


def _trains(config: ExperimentConfig) -> bool:
    return get_method(config.method).trains


def _supports_novel(config: ExperimentConfig) -> bool:
    return get_method(config.method).supports_novel_classes
