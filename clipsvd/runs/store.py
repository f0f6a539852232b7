"""On-disk run store: one folder per run, written atomically.

A run folder holds run.json (id, status, timings), config.json (everything needed to rebuild it),
metrics.json, history.jsonl (one line per epoch) and adapter.safetensors (only the tensors the
method trained). It is assembled in a hidden temporary folder and renamed into place, so a killed
process never leaves a half-written run behind.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from clipsvd.errors import CheckpointError, DataError
from clipsvd.formatting import test_images_text
from clipsvd.runs.aggregate import evaluated_images
from clipsvd.runs.status import RunStatus

RUNS_ENV = "CLIPSVD_RUNS"
ADAPTER_FILE = "adapter.safetensors"
RUN_FILES = ("run.json", "config.json", "metrics.json", "history.jsonl", ADAPTER_FILE)


def default_runs_root() -> Path:
    """$CLIPSVD_RUNS, or ./runs beside where the tool was started."""
    return Path(os.environ.get(RUNS_ENV, "runs")).resolve()


@dataclass
class Run:
    run_id: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    status: RunStatus = RunStatus.COMPLETED
    message: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    history: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        if self.path is None:
            raise CheckpointError(f"run {self.run_id} has not been saved")
        file = self.path / ADAPTER_FILE
        try:
            return load_file(str(file))
        except FileNotFoundError:
            raise CheckpointError(f"{file}: missing adapter tensors") from None
        except Exception as exc:  # truncated or not safetensors
            raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from exc

    @property
    def adapter_bytes(self) -> int:
        return (self.path / ADAPTER_FILE).stat().st_size if self.path else 0

    def summary(self) -> dict[str, Any]:
        """One flat row for tables: what ran, on what, and how it scored."""
        cfg, m = self.config, self.metrics
        tested = evaluated_images(m, cfg)  # (n, N): scores on a capped subset say so
        return {
            "run_id": self.run_id,
            "created": self.created,
            "status": self.status,
            "method": cfg.get("method"),
            "dataset": (cfg.get("dataset") or {}).get("name"),
            "model": (cfg.get("model") or {}).get("architecture"),
            "protocol": cfg.get("protocol"),
            "shots": cfg.get("shots"),
            "seed": cfg.get("seed"),
            "accuracy": m.get("accuracy"),
            "base": m.get("base"),
            "novel": m.get("novel"),
            "hm": m.get("hm"),
            "target_average": m.get("target_average"),  # cross-dataset / domain-generalization: mean over targets
            "trainable": m.get("trainable"),
            "trainable_fraction": m.get("trainable_fraction"),
            "train_seconds": m.get("train_seconds"),
            "checkpoint_bytes": m.get("checkpoint_bytes"),
            "sweep": cfg.get("sweep"),
            **dict(zip(("n_test", "n_test_split"), tested)),
            "test_images": test_images_text(*tested),
        }


SUMMARY_COLUMNS = tuple(Run("", {}, {}).summary())  # the columns of RunStore.table()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()[:40] or "run"


class RunStore:
    """A folder of runs. Safe for concurrent writers: every run gets a unique id and an atomic rename."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).resolve() if root is not None else default_runs_root()

    def new_run_id(self, method: str, dataset: str) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{_slug(method)}-{_slug(dataset)}-{uuid.uuid4().hex[:6]}"

    def save(self, run: Run, adapter: dict[str, torch.Tensor]) -> Run:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / run.run_id
        if final.exists():
            raise DataError(f"run {final} already exists")
        tmp = self.root / f".tmp-{run.run_id}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, str(tmp / ADAPTER_FILE))
            run.metrics["checkpoint_bytes"] = (tmp / ADAPTER_FILE).stat().st_size
            header = {"run_id": run.run_id, "status": run.status, "message": run.message, "created": run.created}
            _write_json(tmp / "run.json", header)
            _write_json(tmp / "config.json", run.config)
            _write_json(tmp / "metrics.json", run.metrics)
            with open(tmp / "history.jsonl", "w") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in run.history)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        run.path = final
        return run

    def load(self, run_id: str) -> Run:
        folder = self.root / run_id
        if not (folder / "run.json").is_file():
            raise DataError(f"no run '{run_id}' in {self.root}")
        header = _read_json(folder / "run.json")
        return Run(
            run_id=header["run_id"],
            config=_read_json(folder / "config.json"),
            metrics=_read_json(folder / "metrics.json"),
            status=RunStatus(header.get("status", RunStatus.COMPLETED)),
            message=header.get("message", ""),
            created=header.get("created", ""),
            history=_read_jsonl(folder / "history.jsonl"),
            path=folder,
        )

    def list(self) -> list[Run]:
        """Every complete run, newest first; temporary folders of runs being written are skipped."""
        if not self.root.is_dir():
            return []
        runs = [self.load(p.name) for p in self.root.iterdir() if p.is_dir() and (p / "run.json").is_file()
                and not p.name.startswith(".")]
        return sorted(runs, key=lambda r: (r.created, r.run_id), reverse=True)

    def table(self) -> pd.DataFrame:
        rows = [run.summary() for run in self.list()]
        return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))

    def delete(self, run_id: str) -> None:
        folder = self.root / run_id
        if not (folder / "run.json").is_file():
            raise DataError(f"no run '{run_id}' in {self.root}")
        shutil.rmtree(folder)

    def bundle(self, run_id: str) -> bytes:
        """A zip of the run folder (config, metrics, history, adapter tensors) for sharing."""
        folder = self.load(run_id).path
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in RUN_FILES:
                if (folder / name).is_file():
                    archive.write(folder / name, f"{run_id}/{name}")
        return buffer.getvalue()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def _read_jsonl(path: Path) -> list[Any]:
    """One JSON value per non-empty line; DataError naming the file (and line) if missing or malformed."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON ({exc})") from exc
    return rows
