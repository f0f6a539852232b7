"""Sweeps: a grid of experiments run on Ray, one task per run, each run's results sent home to the driver's store.

`run_grid` is what `sweep` and `reproduce` call: it skips the cells the run store already holds (the key of
`clipsvd.runs.cells.cell_key`), continues the sweep id of the finished ones, and runs the rest with
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
- is retried when it fails (`retries`: the scheduler resubmits a run whose worker crashed or was killed, or that
  raised, telling it its attempt; the run records `attempts` and `earlier_attempts`), then recorded in the store as
  a run with status "failed" and its error, while the grid goes on.

Ctrl-C (or the dashboard's cancel) cancels the tasks in flight; only runs that came home whole are in the store.

The package: `spec` (the grid, expanded into configs), `scheduling` (placement, the worker task, the driver's
scheduler, resume) and `progress` (the CLI's bar, the dashboard's background sweep).
"""
from clipsvd.training.sweep.progress import BackgroundSweep, ProgressBar, result_line
from clipsvd.training.sweep.scheduling import (
    GridProgress,
    Launch,
    Placement,
    plan_placement,
    remote_task,
    run_configs,
    run_grid,
    run_sweep,
    task_device,
)
from clipsvd.training.sweep.spec import SweepSpec

__all__ = ["BackgroundSweep", "GridProgress", "Launch", "Placement", "ProgressBar", "SweepSpec", "plan_placement",
           "remote_task", "result_line", "run_configs", "run_grid", "run_sweep", "task_device"]
