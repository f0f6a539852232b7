"""What a running grid shows: the command line's tqdm bar and one line per finished run, and the dashboard's
background sweep (a daemon thread the page polls)."""
from __future__ import annotations

import copy
import dataclasses
import sys
import threading
from typing import Any, Self

import pandas as pd

from clipsvd.errors import ClipsvdError
from clipsvd.formatting import config_title
from clipsvd.runs import RunStore
from clipsvd.runs.cells import cell_key, config_record
from clipsvd.training.experiment import ExperimentConfig
from clipsvd.training.sweep.scheduling import GridProgress, Launch, run_grid


def result_line(done: int, total: int, row: dict[str, Any]) -> str:
    """One progress line per finished run: what it was, and its score or error."""
    score = row.get("accuracy") if row.get("accuracy") is not None else row.get("hm")
    detail = row.get("error") or (f"{score:.2f}" if score is not None and not pd.isna(score) else row.get("status"))
    shots = None if pd.isna(row["shots"]) else int(row["shots"])
    return (f"  [{done}/{total}] {config_title(row['method'], row['dataset'], shots, row['seed'])}: "
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
