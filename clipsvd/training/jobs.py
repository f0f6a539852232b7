"""Background training jobs for the dashboard: a list of experiments run one after another in a thread.

Streamlit reruns a page script on every interaction, so training cannot live in the script: the page
submits configs to a process-wide `JobRegistry` and polls snapshots of the job's state. The worker
thread never touches Streamlit; everything it reports goes through a lock into plain data, and
`get()` hands out deep copies, so a page can never see (or mutate) a half-updated state.

Jobs share one run lock: on a small machine two trainings at once only slow each other down, so a
second job waits as "queued" until the first one ends.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import math
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from clipsvd.errors import ClipsvdError
from clipsvd.formatting import config_title
from clipsvd.runs import Run, RunStore
from clipsvd.runs.status import RunStatus
from clipsvd.training.experiment import ExperimentConfig, run_experiment
from clipsvd.training.loop import Progress
from clipsvd.training.preflight import check_store

MAX_LOSS_POINTS = 4000  # per job; older points are thinned (every other one dropped) beyond this

Runner = Callable[..., Run]


def describe_config(config: ExperimentConfig) -> str:
    """A one-line title for a config, as shown in the job list."""
    return f"{config_title(config.method, config.dataset.name, config.shots, config.seed)} · {config.protocol}"


@dataclass
class JobState:
    """Everything a page shows about a job. Snapshots of it are copies, safe to keep and read."""

    job_id: str
    titles: list[str]
    status: RunStatus = RunStatus.QUEUED
    index: int = 0  # the config being run (0-based); len(titles) once all are done
    progress: Progress | None = None
    loss_points: list[dict[str, Any]] = field(default_factory=list)  # {"run", "title", "step", "loss"}
    messages: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)  # saved runs only
    run_statuses: list[str] = field(default_factory=list)  # every config that ran, saved or not
    unsaved: list[str] = field(default_factory=list)  # why a run left nothing in the store (cancelled while attaching)
    error: str | None = None
    error_detail: str | None = None  # traceback of unexpected (non-clipsvd) errors
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    @property
    def total(self) -> int:
        return len(self.titles)

    @property
    def done(self) -> bool:
        return RunStatus(self.status).finished

    @property
    def current_title(self) -> str | None:
        return self.titles[self.index] if self.index < self.total else None

    @property
    def attach_fraction(self) -> float | None:
        """How far a method's set-up (CLIP-SVD's first decomposition) is, when it reports matrices; else None."""
        p = self.progress
        if self.done or p is None or p.phase != "load" or not p.total_steps:
            return None
        return p.step / p.total_steps

    @property
    def fraction(self) -> float:
        """Share of the whole job done: finished configs plus the current one's training fraction."""
        if self.status == RunStatus.COMPLETED:
            return 1.0
        within = self.progress.fraction if self.progress is not None and self.progress.phase == "train" else 0.0
        if self.progress is not None and self.progress.phase in ("evaluate", "done"):
            within = 1.0
        return min(1.0, (self.index + within) / max(1, self.total))


class _Job:
    """The registry's private record of a job: its state plus the live objects a snapshot must not carry."""

    def __init__(self, state: JobState, configs: list[ExperimentConfig], store: RunStore):
        self.state = state
        self.configs = configs
        self.store = store
        self.cancel = threading.Event()
        self.thread: threading.Thread | None = None


class JobRegistry:
    """Thread-safe registry of training jobs; one per process (the dashboard keeps it in st.cache_resource)."""

    def __init__(self, runner: Runner = run_experiment):
        self._runner = runner
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()  # guards every JobState
        self._run_lock = threading.Lock()  # one training at a time

    # ----- public API ----------------------------------------------------------------------------
    def submit(self, configs: list[ExperimentConfig], store: RunStore) -> str:
        """Validate the configs, then run them one after another in a daemon thread; returns the job id."""
        if not configs:
            raise ValueError("submit: give at least one experiment config")
        for config in configs:
            config.validate()  # a bad config fails here, in the page, not later in the thread
        check_store(store, configs)  # so does a store that cannot take the runs (StoreError names it and why)
        job_id = uuid.uuid4().hex[:10]
        job = _Job(JobState(job_id, [describe_config(c) for c in configs]), list(configs), store)
        # The thread exists before the job is published: wait() from another session never finds a listed job
        # without its thread (it returned at once, as if the job had ended).
        job.thread = threading.Thread(target=self._work, args=(job,), name=f"clipsvd-job-{job_id}", daemon=True)
        with self._lock:
            self._jobs[job_id] = job
        try:
            job.thread.start()
        except RuntimeError as exc:  # no thread could be started: the job is not left listed as queued forever
            with self._lock:
                del self._jobs[job_id]
            raise ClipsvdError(f"could not start a training thread ({exc})") from exc
        return job_id

    def cancel(self, job_id: str) -> bool:
        """Ask a job to stop after the current training step, or between two matrices of CLIP-SVD's first
        decomposition (a run cancelled there is not saved); False if it is unknown or already over."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state.done:
                return False
            job.cancel.set()
            job.state.messages.append("cancel requested")
            return True

    def get(self, job_id: str) -> JobState | None:
        """A deep copy of the job's state, or None for an unknown id (e.g. after a server restart)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return copy.deepcopy(job.state) if job is not None else None

    def list(self) -> list[JobState]:
        """Copies of every job's state, newest first."""
        with self._lock:
            states = [copy.deepcopy(job.state) for job in self._jobs.values()]
        return sorted(states, key=lambda s: s.submitted, reverse=True)

    def active(self) -> list[JobState]:
        """Unfinished jobs, running first then queued by age, without loss points and log: cheap to poll from
        every page's sidebar."""
        with self._lock:
            states = [copy.deepcopy(dataclasses.replace(job.state, loss_points=[], messages=[]))
                      for job in self._jobs.values() if not job.state.done]
        return sorted(states, key=lambda s: (s.status != RunStatus.RUNNING, s.submitted))

    def wait(self, job_id: str, timeout: float | None = None) -> JobState | None:
        """Block until the job's thread ends (or the timeout passes); for scripts and tests."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        return self.get(job_id)

    # ----- worker --------------------------------------------------------------------------------
    def _update(self, job: _Job, change: Callable[[JobState], None]) -> None:
        with self._lock:
            change(job.state)

    def _work(self, job: _Job) -> None:
        with self._run_lock:
            if job.cancel.is_set():
                self._update(job, lambda s: _finish(s, RunStatus.CANCELLED, "cancelled before it started"))
                return
            self._update(job, _start)
            try:
                for index, config in enumerate(job.configs):
                    if job.cancel.is_set():
                        break
                    self._update(job, lambda s, i=index: _begin_config(s, i))
                    run = self._runner(config, job.store, on_progress=self._progress_callback(job, index),
                                       cancel=job.cancel)
                    self._update(job, lambda s, r=run: _record_run(s, r))
            except ClipsvdError as exc:  # user-facing: the message says what to fix
                self._update(job, lambda s, e=exc: _fail(s, str(e), None))
                return
            except torch.OutOfMemoryError:
                detail = traceback.format_exc()
                self._update(job, lambda s, d=detail: _fail(s, OUT_OF_MEMORY, d))
                return
            except Exception as exc:  # a bug: keep the traceback for the details expander
                detail = traceback.format_exc()
                self._update(job, lambda s, e=exc, d=detail: _fail(s, f"{type(e).__name__}: {e}", d))
                return
            finally:
                release_device_memory()
            self._update(job, _finish_all)

    def _progress_callback(self, job: _Job, index: int) -> Callable[[Progress], None]:
        title = job.state.titles[index]

        def on_progress(progress: Progress) -> None:
            snapshot = dataclasses.replace(progress)

            def change(state: JobState) -> None:
                state.progress = snapshot
                if snapshot.message and (not state.messages or state.messages[-1] != snapshot.message):
                    if snapshot.phase != "evaluate":  # one line per evaluation batch would flood the log
                        state.messages.append(snapshot.message)
                if snapshot.phase == "train" and snapshot.loss is not None and math.isfinite(snapshot.loss):
                    state.loss_points.append({"run": index, "title": title, "step": snapshot.step,
                                              "loss": snapshot.loss})
                    if len(state.loss_points) > MAX_LOSS_POINTS:
                        state.loss_points = state.loss_points[::2]

            self._update(job, change)

        return on_progress


OUT_OF_MEMORY = ("the device ran out of memory. Lower the batch size, turn on lean_memory (CLIP-SVD), or use "
                 "precision fp16/bf16; the memory this job held was given back")


def release_device_memory() -> None:
    """After a job (finished or failed, out-of-memory included): drop its tensors and hand torch's cached CUDA
    blocks back, so the next job or an analysis in this server process finds the GPU's memory free."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _start(state: JobState) -> None:
    state.status, state.started = RunStatus.RUNNING, time.time()


def _begin_config(state: JobState, index: int) -> None:
    state.index, state.progress = index, None
    state.messages.append(f"[{index + 1}/{state.total}] {state.titles[index]}")


def _record_run(state: JobState, run: Run) -> None:
    state.run_statuses.append(run.status)
    if run.path is None:  # not saved: cancelled before training began (during the method's attach)
        title = state.titles[state.index] if state.index < state.total else "run"
        state.unsaved.append(f"{title}: {run.message or run.status}; nothing was trained or saved")
        state.messages.append(f"run not saved: {run.status}" + (f" ({run.message})" if run.message else ""))
        return
    state.run_ids.append(run.run_id)
    line = f"run {run.run_id}: {run.status}"
    if run.message:
        line += f" ({run.message})"
    state.messages.append(line)


def _finish_all(state: JobState) -> None:
    """Cancelled only if a run was cut short or never started: a cancel that came too late changes nothing."""
    cut = len(state.run_ids) < state.total or RunStatus.CANCELLED in state.run_statuses
    status = RunStatus.CANCELLED if cut else RunStatus.COMPLETED
    _finish(state, status, f"job {status}")


def _fail(state: JobState, error: str, detail: str | None) -> None:
    state.error, state.error_detail = error, detail
    _finish(state, RunStatus.FAILED, f"failed: {error}")


def _finish(state: JobState, status: RunStatus, message: str) -> None:
    state.status, state.finished = status, time.time()
    if status == RunStatus.COMPLETED:
        state.index = state.total
    state.messages.append(message)


__all__ = ["JobRegistry", "JobState", "describe_config"]
