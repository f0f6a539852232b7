"""Sweeps: a grid of experiments run on Ray, one task per run, each run's results sent home to the driver's store.

`run_grid` is what `sweep` and `reproduce` call: it skips the cells the run store already holds (the key of
`clipsvd.reproduce.grid.cell_key`), continues the sweep id of the finished ones, and runs the rest with
`run_configs`; `run_sweep` builds the grid from a `SweepSpec`.

Ray runs in-process by default (`ray.init()` starts a local instance on this machine's cores and GPUs); give an
address ("auto" or "ray://head:10001") to use a cluster. Each run is one Ray task calling `run_experiment`, so a
sweep run is the same as one started from the CLI or the dashboard, and it:

- asks Ray for `Launch.gpus_per_run` GPUs (default 1 when the cluster has GPUs; Ray hides the others through
  CUDA_VISIBLE_DEVICES, and a task that asks for none sees none) and `cpus_per_run` CPUs (torch's threads);
  `metrics["device"]` and `metrics["placement"]` record the device, node and GPU ids the run used;
- reads its data and checkpoint files on the node it lands on (a missing one is an error naming the node);
- returns config, metrics, history and adapter tensors (safetensors bytes) to the driver, which writes them into
  its own store atomically: no shared folder is needed (`shared_store=True` keeps workers writing into the
  driver's store path, which they must then see);
- is retried when it fails (`retries`: Ray's `max_retries` for crashed or killed workers, a resubmission for an
  exception), then recorded in the store as a run with status "failed" and its error, while the grid goes on.

Ctrl-C (or the dashboard's cancel) cancels the tasks in flight; only runs that came home whole are in the store.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import os
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import pandas as pd

from clipsvd.data import DatasetSpec
from clipsvd.errors import ClipsvdError, ConfigError, DataError
from clipsvd.models import ModelSpec
from clipsvd.reproduce.grid import DONE, cell_key, cell_status, config_record
from clipsvd.resources import require
from clipsvd.runs import Run, RunStatus, RunStore
from clipsvd.training.experiment import ExperimentConfig

# Test-only: with no CUDA in the worker's torch, choose devices as if there were and train on the CPU. The driver
# forwards it (with the variables of FORWARDED_ENV) to its tasks; never set it for real runs.
FAKE_CUDA_ENV = "CLIPSVD_TEST_FAKE_CUDA"
FORWARDED_ENV = ("HF_HUB_OFFLINE", FAKE_CUDA_ENV)
RAY_PURPOSE = "running experiments on Ray (sweep, reproduce)"
ResultCallback = Callable[[int, int, dict[str, Any]], None]


@dataclass
class SweepSpec:
    """The grid. `hyperparameters` maps a method name to its overrides (e.g. {"clip-svd": {"lr": 1e-3}})."""

    methods: list[str]
    datasets: list[DatasetSpec]
    shots: list[int | None] = field(default_factory=lambda: [16])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    model: ModelSpec = field(default_factory=ModelSpec.default)
    protocol: str = "few-shot"
    hyperparameters: dict[str, dict[str, Any]] = field(default_factory=dict)
    device: str = "auto"
    max_test_per_class: int | None = None
    num_workers: int | None = None  # ExperimentConfig.num_workers of every run

    def configs(self, sweep_id: str | None = None) -> list[ExperimentConfig]:
        if not (self.methods and self.datasets and self.shots and self.seeds):
            raise ConfigError("sweep: methods, datasets, shots and seeds each need at least one value")
        unknown = set(self.hyperparameters) - set(self.methods)
        if unknown:
            raise ConfigError(f"sweep hyperparameters name methods not in the sweep: {sorted(unknown)}")
        configs = [
            ExperimentConfig(method=method, model=self.model, dataset=dataset, shots=shots, seed=seed,
                             protocol=self.protocol, hyperparameters=dict(self.hyperparameters.get(method, {})),
                             device=self.device, max_test_per_class=self.max_test_per_class,
                             num_workers=self.num_workers, sweep=sweep_id)
            for dataset, shots, method, seed in itertools.product(self.datasets, self.shots, self.methods, self.seeds)
        ]
        for config in configs:
            config.validate()
            config.method_config()  # reject bad hyperparameters before anything starts
        return configs


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
    from clipsvd.models.spec import looks_like_path

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


def _run_task(config: dict[str, Any], store_root: str | None, cpus: float) -> dict[str, Any]:
    """One Ray task: choose the device Ray gave, train, evaluate; the run (and its tensors) or the error."""
    import ray
    import torch

    from clipsvd.training.experiment import run_experiment

    start = time.perf_counter()
    node = ray.util.get_node_ip_address()
    fake_cuda = os.environ.get(FAKE_CUDA_ENV) == "1" and not torch.cuda.is_available()
    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    placement = {"node": node, "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": gpu_ids,
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "cpus": cpus, "torch_threads": threads}
    try:
        experiment = ExperimentConfig.from_dict(config)
        _check_files_on_node(experiment)
        device = task_device(experiment.device, gpu_ids, torch.cuda.is_available() or fake_cuda)
        if fake_cuda:
            placement["simulated_cuda"] = True
        store = _WorkerStore(store_root, {"device": device, "placement": placement})
        run = run_experiment(dataclasses.replace(experiment, device="cpu" if fake_cuda else device), store)
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
        when = "" if self.finished else " · ETA " + ("—" if eta is None else _duration(eta))
        return f"{self.skipped + self.done + self.failed}/{self.total} cells · {self.counts()}{when}"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


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
    done_ids = [run_id for run_id, state in zip(status["run_id"], status["status"]) if state == DONE]
    done_runs = [store.load(run_id) for run_id in done_ids]
    earlier = Counter(r.config.get("sweep") for r in done_runs if str(r.config.get("sweep")).startswith(f"{prefix}-"))
    sweep_id = earlier.most_common(1)[0][0] if earlier else \
        f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
    todo = [dataclasses.replace(c, sweep=sweep_id) for c, state in zip(configs, status["status"]) if state != DONE]
    ran = run_configs(todo, store, launch, skipped=len(done_runs))
    resumed = pd.DataFrame([{**r.summary(), "key": key, "resumed": True} for r, key in
                            zip(done_runs, status.loc[status["status"] == DONE, "key"])])
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
    store.root.mkdir(parents=True, exist_ok=True)
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
        if launch.address:
            ray.init(address=launch.address, log_to_driver=False, configure_logging=False)
        else:
            ray.init(num_cpus=max(os.cpu_count() or 1, launch.workers or 0), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
    try:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        placement = plan_placement(nodes, launch, {c.device for c in configs})
        return _Scheduler(configs, store, placement, launch, progress).run()
    finally:
        if started_here:
            ray.shutdown()


def remote_task(placement: Placement, retries: int, env: dict[str, str]):
    """`_run_task` as a Ray remote function asking for the placement's resources.

    Resources go to ray.remote itself, not to .options(): only there does Ray turn on its one-task-per-worker
    default for GPU tasks (max_calls=1), which is set here explicitly. A reused worker that already initialised
    CUDA would ignore the next task's CUDA_VISIBLE_DEVICES and keep the previous run's cached memory. Ray's own
    retries cover a worker that died (crash, OOM kill); an exception comes home and is resubmitted."""
    import ray

    return ray.remote(num_cpus=placement.cpus, num_gpus=placement.gpus, max_calls=1 if placement.gpus else 0,
                      max_retries=retries, retry_exceptions=False, runtime_env={"env_vars": env})(_run_task)


class _Scheduler:
    """The driver's loop: submits every run (at most `workers` in flight; the rest wait in Ray's queue, where an
    autoscaler sees them), lands each result in the store, resubmits a run that raised, records one that failed for
    good."""

    def __init__(self, configs: list[ExperimentConfig], store: RunStore, placement: Placement, launch: Launch,
                 progress: GridProgress):
        import ray

        self.configs, self.store, self.placement, self.launch, self.progress = configs, store, placement, launch, progress
        self.keys = [cell_key(config_record(c)) for c in configs]
        env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.remote = remote_task(placement, launch.retries, env)
        self.queue = deque(range(len(configs)))
        self.attempts: Counter[int] = Counter()
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
            ref = self.remote.remote(self.configs[index].to_dict(), shared, self.placement.cpus)
            self.in_flight[ref] = index

    def _collect(self, ref) -> None:
        import ray

        index = self.in_flight.pop(ref)
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the worker died (Ray already retried it), or raised past the catch
            system = not isinstance(exc, ray.exceptions.RayTaskError)
            outcome = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}", "system": system}
        if "error" in outcome and not outcome.get("system") and self.attempts[index] <= self.launch.retries:
            self.queue.appendleft(index)  # raised: try again (possibly on another node)
            return
        row = self._land(index, outcome)
        self.rows.append(row)
        if self.launch.on_result:
            self.launch.on_result(len(self.rows), len(self.configs), row)

    def _land(self, index: int, outcome: dict[str, Any]) -> dict[str, Any]:
        """Save what came home into the driver's store (atomically); a failure becomes a "failed" run record."""
        from safetensors.torch import load

        config, attempts = self.configs[index], self.attempts[index] + (self.launch.retries if outcome.get("system")
                                                                        else 0)
        extra = {"key": self.keys[index], "attempts": attempts}
        if "error" in outcome:
            self.progress.failed += 1
            message = f"failed after {attempts} attempt{'s' * (attempts > 1)}: {outcome['error']}"
            metrics = {"attempts": attempts, "placement": outcome.get("placement"), "traceback": outcome.get("traceback")}
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


def result_line(done: int, total: int, row: dict[str, Any]) -> str:
    """One progress line per finished run: what it was, and its score or error."""
    score = row.get("accuracy") if row.get("accuracy") is not None else row.get("hm")
    detail = row.get("error") or (f"{score:.2f}" if score is not None and not pd.isna(score) else row.get("status"))
    return (f"  [{done}/{total}] {row['method']} · {row['dataset']} · {row['shots']}-shot · seed {row['seed']}: "
            f"{row['status']} {detail}")


class ProgressBar:
    """The command line's one bar over a grid (tqdm on stderr): runs finished of those to run, how many are
    running and failed, ETA; each finished run's line is printed above it on stdout."""

    def __init__(self, label: str = "sweep"):
        self.label, self._bar, self._shown = label, None, 0

    def __call__(self, progress: GridProgress) -> None:
        from tqdm import tqdm

        if self._bar is None:
            if not progress.to_run:
                return
            self._bar = tqdm(total=progress.to_run, desc=self.label, unit="run", dynamic_ncols=True, file=sys.stderr)
        finished = progress.done + progress.failed
        self._bar.update(finished - self._shown)
        self._shown = finished
        self._bar.set_postfix_str(progress.counts())

    def line(self, done: int, total: int, row: dict[str, Any]) -> None:
        from tqdm import tqdm

        tqdm.write(result_line(done, total, row), file=sys.stdout)
        sys.stdout.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BackgroundSweep:
    """A grid run on Ray (`run_grid`) from a daemon thread, for the dashboard: the page polls `snapshot()` (a copy)
    and `waiting()`, and may `cancel()`; the thread never touches Streamlit."""

    def __init__(self, configs: list[ExperimentConfig], store: RunStore, prefix: str, launch: Launch | None = None):
        self.keys = [cell_key(config_record(c)) for c in configs]
        self.error: str | None = None
        self.rows: pd.DataFrame | None = None
        self._progress = GridProgress(len(configs))
        self._finished: set[str] = set()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        launch = dataclasses.replace(launch or Launch(), on_result=self._on_result, on_progress=self._on_progress,
                                     cancel=self._cancel)
        self._thread = threading.Thread(target=self._work, args=(configs, store, prefix, launch), name="clipsvd-sweep",
                                        daemon=True)
        self._thread.start()

    def _work(self, configs: list[ExperimentConfig], store: RunStore, prefix: str, launch: Launch) -> None:
        try:
            self.rows = run_grid(configs, store, prefix, launch)
        except ClipsvdError as exc:
            self.error = str(exc)
        except Exception as exc:  # a bug: say what it was on the page rather than die silently
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._progress.finished = True

    def _on_progress(self, progress: GridProgress) -> None:
        with self._lock:
            self._progress = copy.deepcopy(progress)

    def _on_result(self, done: int, total: int, row: dict[str, Any]) -> None:
        with self._lock:
            self._finished.add(row["key"])

    def snapshot(self) -> GridProgress:
        with self._lock:
            return copy.deepcopy(self._progress)

    def waiting(self) -> tuple[set[str], set[str]]:
        """Keys of the cells still to finish: (running, queued); running as `GridProgress.running` estimates it."""
        with self._lock:
            if self._progress.finished:
                return set(), set()
            running = set(self._progress.active[: self._progress.running])
            return running, set(self.keys) - running - self._finished

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> GridProgress:
        """Block until the sweep ends (or the timeout passes); for scripts and tests."""
        self._thread.join(timeout)
        return self.snapshot()


__all__ = ["FAKE_CUDA_ENV", "BackgroundSweep", "GridProgress", "Launch", "Placement", "ProgressBar", "SweepSpec",
           "plan_placement", "result_line", "run_configs", "run_grid", "run_sweep", "task_device"]
