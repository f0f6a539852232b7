"""Running a grid on Ray: what each task asks for (`plan_placement`), the worker task (`_run_task`: the device Ray
gave, the run, its tensors sent home), the driver's scheduler (submit, retry, land results, cancel), and resuming a
grid from the run store (`run_grid`)."""
from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clipsvd.errors import ConfigError, DataError
from clipsvd.formatting import seconds_text
from clipsvd.models.spec import looks_like_path
from clipsvd.resources import require
from clipsvd.runs import Run, RunStatus, RunStore
from clipsvd.runs.cells import cell_key, cell_status, config_record
from clipsvd.runs.status import CellStatus
from clipsvd.training.experiment import ExperimentConfig, run_experiment
from clipsvd.training.preflight import check_store
from clipsvd.training.sweep.spec import SweepSpec

FORWARDED_ENV = ("HF_HUB_OFFLINE",)  # the driver's settings its tasks run with
RAY_PURPOSE = "running experiments on Ray (sweep, reproduce)"
ResultCallback = Callable[[int, int, dict[str, Any]], None]


@dataclass
class Launch:
    """Where a grid runs, what each run's Ray task asks for, what happens to its results and failures, and who
    hears about it: `on_result(finished, total, row)` after each run, `on_progress(GridProgress)` on every change
    (and each second); setting `cancel` stops the grid as Ctrl-C does."""

    address: str | None = None  # None: a local Ray (or the one the caller initialised); "auto", ray://HEAD:10001
    workers: int | None = None  # most runs at once; None: as many as the cluster fits
    gpus_per_run: float | None = None  # None: 1 when the cluster has GPUs (0 when every run asks for the CPU)
    cpus_per_run: float | None = None  # None: a node's CPUs shared among the runs it fits
    retries: int = 1  # further attempts of a run that raised or whose worker died
    shared_store: bool = False  # workers write into the driver's store path themselves (a shared folder)
    on_result: ResultCallback | None = None
    on_progress: Callable[[GridProgress], None] | None = None
    cancel: threading.Event | None = None

    def validate(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers: expected at least 1 parallel run, got {self.workers}")
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run: expected 0 or more (fractions share a GPU), got {self.gpus_per_run}")
        if self.cpus_per_run is not None and self.cpus_per_run <= 0:
            raise ConfigError(f"--cpus-per-run: expected a positive number, got {self.cpus_per_run}")
        if self.retries < 0:
            raise ConfigError(f"--retries: expected 0 or more, got {self.retries}")


@dataclass(frozen=True)
class Placement:
    """What every task of a sweep asks Ray for, and how many of them the cluster runs at once."""

    gpus: float
    cpus: float
    slots: int

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus))


def _fits(have: float, need: float) -> float:
    return math.inf if need == 0 else math.floor(have / need + 1e-9)


def plan_placement(nodes: list[dict[str, float]], launch: Launch,
                   devices: set[str] | frozenset[str] = frozenset({"auto"})) -> Placement:
    """Resources per run from the alive nodes' resources (Ray's "CPU"/"GPU" per node) and the runs' device
    choices; ConfigError when no node can take one run (Ray would wait for ever)."""
    launch.validate()
    workers = launch.workers
    total_gpus = sum(n.get("GPU", 0.0) for n in nodes)
    cpu_only = devices <= {"cpu"}
    gpus = launch.gpus_per_run if launch.gpus_per_run is not None else (1.0 if total_gpus and not cpu_only else 0.0)
    if gpus == 0 and any(d.startswith("cuda") for d in devices):
        raise ConfigError(f"device {sorted(devices)} needs a GPU per run: give --gpus-per-run (the cluster has "
                          f"{total_gpus:g} GPUs)")
    cpus = launch.cpus_per_run
    if cpus is None:
        if gpus:
            shares = [n.get("CPU", 0.0) / _fits(n.get("GPU", 0.0), gpus) for n in nodes if _fits(n.get("GPU", 0.0), gpus)]
            cpus = max(1.0, math.floor(min(shares))) if shares else 1.0
        else:
            total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
            cpus = max(1.0, math.floor(total_cpus / workers)) if workers else 1.0
            cpus = min(cpus, max([n.get("CPU", 0.0) for n in nodes] + [1.0]))
    slots = sum(min(_fits(n.get("CPU", 0.0), cpus), _fits(n.get("GPU", 0.0), gpus)) for n in nodes)
    if not slots:
        listing = "; ".join(f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes) or "no nodes"
        raise ConfigError(f"no node of the Ray cluster can take a run needing {cpus:g} CPUs and {gpus:g} GPUs "
                          f"(nodes: {listing}); lower --cpus-per-run / --gpus-per-run (an autoscaling cluster: keep "
                          "one node of that kind up)")
    return Placement(gpus, cpus, int(min(slots, workers or slots)))


def task_device(preference: str, gpu_ids: list, cuda_available: bool) -> str:
    """The device a task trains on: the GPUs Ray assigned to it (torch numbers them from 0, as
    CUDA_VISIBLE_DEVICES holds only them), the CPU when it got none; never a GPU it was not given."""
    if preference == "cpu":
        return "cpu"
    if not gpu_ids:
        if preference not in ("auto", "", None):
            raise ConfigError(f"device {preference}: Ray gave this run no GPU; give --gpus-per-run")
        return "cpu"
    if not cuda_available:
        raise ConfigError(f"Ray gave this run GPU {', '.join(map(str, gpu_ids))} but torch sees no CUDA device "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}; a CPU-only torch?)")
    if preference in ("auto", "", None, "cuda"):
        return "cuda:0"
    index = int(preference.partition(":")[2] or 0) if preference.startswith("cuda") else -1
    if not 0 <= index < len(gpu_ids):
        raise ConfigError(f"device {preference}: this run was given {len(gpu_ids)} GPU(s), seen as cuda:0.."
                          f"cuda:{len(gpu_ids) - 1}")
    return preference


def _check_files_on_node(config: ExperimentConfig) -> None:
    """Data and checkpoints are read where the task runs: say which one this node lacks, not a loader's error."""
    paths = {"data root": config.dataset.root}
    if looks_like_path(config.model.weights):
        paths["weights file"] = config.model.weights
    if config.model.architecture.startswith("local-dir:"):
        paths["model folder"] = config.model.architecture.partition(":")[2]
    for what, path in paths.items():
        if path and not Path(path).expanduser().exists():
            raise DataError(f"{what} {path} does not exist on this node; every node needs it at the same path "
                            "(or a shared mount)")


class _WorkerStore(RunStore):
    """What `run_experiment` saves into on a worker: tags the run with where it ran, then writes the shared store,
    or keeps the adapter tensors as bytes to send home (`root=None`)."""

    def __init__(self, root: str | None, metrics: dict[str, Any]):
        super().__init__(root)
        self.shared, self.metrics, self.adapter = root is not None, metrics, b""

    def save(self, run: Run, adapter: dict) -> Run:
        from safetensors.torch import save

        run.metrics.update(self.metrics)
        if self.shared:
            return super().save(run, adapter)
        self.adapter = save({k: v.detach().cpu().contiguous() for k, v in adapter.items()})
        return run


def _run_task(config: dict[str, Any], store_root: str | None, cpus: float, attempt: int = 1,
              earlier: list[str] | None = None) -> dict[str, Any]:
    """One Ray task: choose the device Ray gave, train, evaluate; the run (and its tensors) or the error. `attempt`
    (1 for the first) and the `earlier` attempts' errors are recorded in the run's metrics, so a run that needed
    a retry says so."""
    import ray
    import torch

    start = time.perf_counter()
    node = ray.util.get_node_ip_address()
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    placement = {"node": node, "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": gpu_ids,
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "cpus": cpus, "torch_threads": threads}
    try:
        experiment = ExperimentConfig.from_dict(config)
        _check_files_on_node(experiment)
        device = task_device(experiment.device, gpu_ids, torch.cuda.is_available())
        store = _WorkerStore(store_root, {"device": device, "placement": placement, "attempts": attempt,
                                          "earlier_attempts": list(earlier or [])})
        run = run_experiment(dataclasses.replace(experiment, device=device), store)
    except Exception as exc:  # sent home: the driver retries or records it; the rest of the grid goes on
        return {"error": f"{type(exc).__name__} on node {node}: {exc}", "placement": placement,
                "traceback": traceback.format_exc(limit=6)}
    return {"run": run, "adapter": store.adapter, "wall_seconds": time.perf_counter() - start,
            "peak_rss_mib": _peak_rss_kib() / 1024}


def _peak_rss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@dataclass
class GridProgress:
    """Where a grid stands: the CLI's bar and the dashboard read it. `running` is the runs in flight that the
    cluster has room for (Ray does not report a task's start); `active` the cell keys in flight, oldest first."""

    total: int  # cells of the grid
    skipped: int = 0  # already in the store before this sweep started
    done: int = 0  # came home and saved (completed, or diverged/cancelled in training)
    failed: int = 0  # recorded as failed after their retries
    running: int = 0
    cancelled: int = 0  # cancelled before they finished; nothing saved
    active: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    finished: bool = False

    @property
    def to_run(self) -> int:
        return self.total - self.skipped

    @property
    def fraction(self) -> float:
        return (self.skipped + self.done + self.failed) / self.total if self.total else 1.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate runs finished so far (parallel runs included); None before the first."""
        finished = self.done + self.failed
        left = self.to_run - finished - self.cancelled
        if self.finished or left <= 0:
            return 0.0
        return (time.monotonic() - self.started) / finished * left if finished else None

    def counts(self) -> str:
        parts = [f"{self.running} running", f"{self.failed} failed"]
        if self.skipped:
            parts.append(f"{self.skipped} done before")
        if self.cancelled:
            parts.append(f"{self.cancelled} cancelled")
        return ", ".join(parts)

    def text(self) -> str:
        eta = self.eta_s
        when = "" if self.finished else " · ETA " + seconds_text(eta)
        return f"{self.skipped + self.done + self.failed}/{self.total} cells · {self.counts()}{when}"


def run_sweep(spec: SweepSpec, store: RunStore, launch: Launch | None = None, **fields: Any) -> pd.DataFrame:
    """Run the grid of `spec` on Ray, resuming: cells the store holds are not run again (see `run_grid`). `launch`,
    or its fields as keywords (workers=2, on_result=…)."""
    return run_grid(spec.configs(), store, "sweep", dataclasses.replace(launch or Launch(), **fields))


def run_grid(configs: list[ExperimentConfig], store: RunStore, prefix: str, launch: Launch | None = None
             ) -> pd.DataFrame:
    """Run the cells the store does not hold yet, tagged with the sweep id of the finished ones (a new
    `prefix-DATE-TIME-xxxx` when none): re-running the same grid continues it. One row per cell, those done before
    first (`resumed` True)."""
    status = cell_status(configs, store)
    done_ids = [run_id for run_id, state in zip(status["run_id"], status["status"]) if state == CellStatus.DONE]
    done_runs = [store.load(run_id) for run_id in done_ids]
    earlier = Counter(r.config.get("sweep") for r in done_runs if str(r.config.get("sweep")).startswith(f"{prefix}-"))
    sweep_id = earlier.most_common(1)[0][0] if earlier else \
        f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    todo = [dataclasses.replace(c, sweep=sweep_id) for c, state in zip(configs, status["status"])
            if state != CellStatus.DONE]
    ran = run_configs(todo, store, launch, skipped=len(done_runs))
    resumed = pd.DataFrame([{**r.summary(), "key": key, "resumed": True} for r, key in
                            zip(done_runs, status.loc[status["status"] == CellStatus.DONE, "key"])])
    return pd.concat([resumed, ran.assign(resumed=False)], ignore_index=True) if len(resumed) else \
        ran.assign(resumed=False)


def run_configs(configs: list[ExperimentConfig], store: RunStore, launch: Launch | None = None, *,
                skipped: int = 0) -> pd.DataFrame:
    """Run every config as a Ray task (a local Ray unless `launch.address` names a cluster, or Ray is already
    initialised by the caller), at most `launch.workers` at once. One row per config in the order they finished:
    the run's summary, or status "failed" with its error, or "cancelled" (nothing saved) when `launch.cancel` was
    set. Ctrl-C cancels the tasks in flight and raises KeyboardInterrupt. `skipped`: cells of the grid already
    done, for the progress counts."""
    launch = launch or Launch()
    launch.validate()
    check_store(store, configs)  # before Ray starts: a store that cannot take the runs fails now
    progress = GridProgress(len(configs) + skipped, skipped)
    if not configs:
        progress.finished = True
        if launch.on_progress:
            launch.on_progress(progress)
        return pd.DataFrame(columns=["run_id", "status", "method", "dataset", "shots", "seed", "key", "error"])
    require("ray", RAY_PURPOSE, ConfigError)
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        address = launch.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        else:  # "local": our own instance, even where another user's `ray start` left a cluster on this machine
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, launch.workers or 0), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
    try:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        placement = plan_placement(nodes, launch, {c.device for c in configs})
        return _Scheduler(configs, store, placement, launch, progress).run()
    finally:
        if started_here:
            ray.shutdown()


def remote_task(placement: Placement, env: dict[str, str]):
    """`_run_task` as a Ray remote function asking for the placement's resources.

    Resources go to ray.remote itself, not to .options(): only there does Ray turn on its one-task-per-worker
    default for GPU tasks (max_calls=1), which is set here explicitly. A reused worker that already initialised
    CUDA would ignore the next task's CUDA_VISIBLE_DEVICES and keep the previous run's cached memory. Ray does not
    retry (max_retries=0): the scheduler resubmits a task whose worker died (crash, OOM kill) or that raised, up to
    `Launch.retries` times, telling it its attempt number, so the run it produces records its attempts."""
    import ray

    return ray.remote(num_cpus=placement.cpus, num_gpus=placement.gpus, max_calls=1 if placement.gpus else 0,
                      max_retries=0, retry_exceptions=False, runtime_env={"env_vars": env})(_run_task)


class _Scheduler:
    """The driver's loop: submits every run (at most `workers` in flight; the rest wait in Ray's queue, where an
    autoscaler sees them), lands each result in the store, resubmits a run that raised, records one that failed for
    good."""

    def __init__(self, configs: list[ExperimentConfig], store: RunStore, placement: Placement, launch: Launch,
                 progress: GridProgress):
        self.configs, self.store, self.placement, self.launch, self.progress = configs, store, placement, launch, progress
        self.keys = [cell_key(config_record(c)) for c in configs]
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.remote = remote_task(placement, env)
        self.queue = deque(range(len(configs)))
        self.attempts: Counter[int] = Counter()
        self.errors: dict[int, list[str]] = {}  # per config: the errors of its earlier attempts
        self.in_flight: dict[Any, int] = {}
        self.rows: list[dict[str, Any]] = []

    def run(self) -> pd.DataFrame:
        import ray

        self.progress.started = time.monotonic()  # the ETA's clock: from the first submission, not Ray's start-up
        try:
            self._submit()
            while self.in_flight:
                if self.launch.cancel is not None and self.launch.cancel.is_set():
                    self._cancel_in_flight()
                    break
                ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=1.0)
                if ready:
                    self._collect(ready[0])
                    self._submit()
                self._notify()
        except KeyboardInterrupt:
            self._cancel_in_flight()
            raise
        finally:
            self.progress.finished = True
            self._notify()
        return pd.DataFrame(self.rows)

    def _submit(self) -> None:
        shared = str(self.store.root) if self.launch.shared_store else None
        while self.queue and len(self.in_flight) < (self.launch.workers or len(self.configs)):
            index = self.queue.popleft()
            self.attempts[index] += 1
            ref = self.remote.remote(self.configs[index].to_dict(), shared, self.placement.cpus, self.attempts[index],
                                     self.errors.get(index, []))
            self.in_flight[ref] = index

    def _collect(self, ref) -> None:
        import ray

        index = self.in_flight.pop(ref)
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died (Ray already retried it), or raised past the catch
            system = not isinstance(exc, ray.exceptions.RayTaskError)
            outcome = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}", "system": system}
        if "error" in outcome and self.attempts[index] <= self.launch.retries:
            self.errors.setdefault(index, []).append(outcome["error"])
            self.queue.appendleft(index)  # raised, or its worker died: try again (possibly on another node)
            return
        row = self._land(index, outcome)
        self.rows.append(row)
        if self.launch.on_result:
            self.launch.on_result(len(self.rows), len(self.configs), row)

    def _land(self, index: int, outcome: dict[str, Any]) -> dict[str, Any]:
        """Save what came home into the driver's store (atomically); a failure becomes a "failed" run record."""
        from safetensors.torch import load

        config, attempts = self.configs[index], self.attempts[index]
        extra = {"key": self.keys[index], "attempts": attempts}
        if "error" in outcome:
            self.progress.failed += 1
            message = f"failed after {attempts} attempt{'s' * (attempts > 1)}: {outcome['error']}"
            metrics = {"attempts": attempts, "earlier_attempts": self.errors.get(index, []),
                       "placement": outcome.get("placement"), "traceback": outcome.get("traceback")}
            run = Run(self.store.new_run_id(config.method, config.dataset.name), config_record(config), metrics,
                      status=RunStatus.FAILED, message=message)
            self.store.save(run, {})
            return {**run.summary(), **extra, "error": message}
        run = outcome["run"]
        if run.path is None:  # sent home, not written by the worker
            self.store.save(run, load(outcome["adapter"]) if outcome["adapter"] else {})
        self.progress.done += 1
        return {**run.summary(), **extra, "device": run.metrics.get("device"),
                "node": (run.metrics.get("placement") or {}).get("node"), "wall_seconds": outcome["wall_seconds"],
                "peak_rss_mib": outcome["peak_rss_mib"]}

    def _cancel_in_flight(self) -> None:
        import ray

        for ref in self.in_flight:
            ray.cancel(ref, force=True)
        cancelled = [*self.in_flight.values(), *self.queue]
        self.rows += [{**Run("", config_record(self.configs[i]), {}, status=RunStatus.CANCELLED).summary(),
                       "key": self.keys[i]} for i in cancelled]
        self.progress.cancelled = len(cancelled)
        self.in_flight.clear()
        self.queue.clear()

    def _notify(self) -> None:
        order = sorted(self.in_flight.values())
        self.progress.active = [self.keys[i] for i in order]
        self.progress.running = min(len(order), self.placement.slots)
        if self.launch.on_progress:
            self.launch.on_progress(self.progress)
