"""On-disk run store: one folder per run, written atomically.

A run folder holds run.json (id, status, timings), config.json (everything needed to rebuild it),
metrics.json, history.jsonl (one line per epoch) and adapter.safetensors (only the tensors the
method trained). It is assembled in a hidden temporary folder, fsynced, and renamed into place, so a killed
process or a power loss never leaves a half-written run behind; a delete renames the run to a hidden trash
name before removing it, so a failing delete leaves the run whole. Hidden leftovers of killed processes
(`.tmp-*`, `.trash-*`) older than a day are removed when a store is opened. A run whose files cannot be read
is listed as `damaged` with the file and the reason, never hiding the others.
"""
from __future__ import annotations

import errno
import io
import json
import os
import time
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
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clipsvd.errors import CheckpointError, DataError, StoreError
from clipsvd.formatting import test_images_text
from clipsvd.runs.aggregate import evaluated_images
from clipsvd.runs.status import RunStatus

RUNS_ENV = "CLIPSVD_RUNS"
ADAPTER_FILE = "adapter.safetensors"
RUN_FILES = ("run.json", "config.json", "metrics.json", "history.jsonl", ADAPTER_FILE)
TMP_PREFIX, TRASH_PREFIX = ".tmp-", ".trash-"  # hidden: never listed as runs
STALE_SECONDS = 24 * 3600  # leftovers older than this belong to no live process: removed when a store opens
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")  # no separators, no leading dot: one folder of the store
MB = 1024 * 1024


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


def check_run_id(run_id: str) -> str:
    """`run_id` if it names one folder of a store; StoreError naming it otherwise (`../other/run`, `/abs`, `.x`)."""
    text = str(run_id)
    if not RUN_ID.fullmatch(text) or ".." in text:
        raise StoreError(f"run id {text!r} is not a run of this store: a run id is one folder name (letters, digits, "
                         "'.', '_', '-'; no '/', '\\', '..' or leading '.'); see `clipsvd runs list`")
    return text


def os_reason(exc: OSError) -> str:
    """A short human reason for an OS error on the store (the words the issue's users saw as raw tracebacks)."""
    reasons = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted (immutable or protected)",
               errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
               errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "a part of the path is a file, not a folder",
               errno.EEXIST: "a file of that name exists"}
    return reasons.get(exc.errno, exc.strerror or str(exc))


def _fsync(path: Path) -> None:
    """Flush a written file or a folder's entries to the disk (a rename is durable only once its folder is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunStore:
    """A folder of runs. Safe for concurrent writers: every run gets a unique id and an atomic rename."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).resolve() if root is not None else default_runs_root()
        self.remove_stale()

    def remove_stale(self, older_than: float = STALE_SECONDS) -> list[str]:
        """Remove `.tmp-*` and `.trash-*` folders last changed more than `older_than` seconds ago (a killed save or
        delete; a live one is younger). Best effort: a store that cannot be written still lists. Names removed."""
        removed = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:  # no store yet, or not readable: nothing of ours to clean
            return removed
        now = time.time()
        for entry in entries:
            if not entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime < older_than:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(entry.name)
            except OSError:
                continue  # a read-only store keeps its leftovers; they are hidden and retried on the next open
        return removed

    def check_writable(self, needed_bytes: int = 0, basis: str = "") -> None:
        """StoreError naming the folder and the reason unless a run of `needed_bytes` can be saved here now: the
        folder exists or can be made, a probe file can be written, fsynced and removed, and the free space
        covers the run. Called before a run starts, so a store that cannot take it fails before the work."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise StoreError(f"run store {root}: the path is a file, not a folder; choose a folder (--runs-dir)")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"run store {root}: cannot create the folder: {os_reason(exc)}") from None
        probe = root / f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:8]}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"clipsvd write probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                if probe.exists():
                    probe.unlink()
        except OSError as exc:
            raise StoreError(f"run store {root} is not writable: {os_reason(exc)}") from None
        free = shutil.disk_usage(root).free
        if free < needed_bytes:
            raise StoreError(f"run store {root}: no space left: {free / MB:.1f} MB free, {needed_bytes / MB:.1f} MB "
                             f"needed{f' ({basis})' if basis else ''}; free some space or choose another folder "
                             "(--runs-dir)")

    def new_run_id(self, method: str, dataset: str) -> str:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{_slug(method)}-{_slug(dataset)}-{uuid.uuid4().hex[:6]}"

    def save(self, run: Run, adapter: dict[str, torch.Tensor]) -> Run:
        """Write the run into a hidden folder, fsync its files and the folder, rename it into place and fsync the
        store: after a crash the run is either whole or absent. StoreError naming the reason if the disk refuses."""
        final = self.root / check_run_id(run.run_id)
        tmp = self.root / f"{TMP_PREFIX}{run.run_id}-{uuid.uuid4().hex[:6]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if final.exists():
                raise DataError(f"run {final} already exists")
            tmp.mkdir()
        except OSError as exc:
            raise StoreError(f"run store {self.root}: cannot save run {run.run_id}: {os_reason(exc)}") from None
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()}, str(tmp / ADAPTER_FILE))
            _fsync(tmp / ADAPTER_FILE)
            run.metrics["checkpoint_bytes"] = (tmp / ADAPTER_FILE).stat().st_size
            header = {"run_id": run.run_id, "status": run.status, "message": run.message, "created": run.created}
            _write_json(tmp / "run.json", header)
            _write_json(tmp / "config.json", run.config)
            _write_json(tmp / "metrics.json", run.metrics)
            _write_text(tmp / "history.jsonl", "".join(json.dumps(row) + "\n" for row in run.history))
            _fsync(tmp)
            os.rename(tmp, final)
            _fsync(self.root)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                raise StoreError(f"run store {self.root}: cannot save run {run.run_id}: {os_reason(exc)}") from exc
            if isinstance(exc, SafetensorError):
                raise StoreError(f"run store {self.root}: cannot save run {run.run_id}: {exc}") from exc
            raise
        run.path = final
        return run

    def update(self, run: Run) -> Run:
        """Rewrite a saved run's config.json and metrics.json (an imported run evaluated on demand), each file
        replaced atomically; its tensors and history stay as they are."""
        folder = self.root / run.run_id
        if not (folder / "run.json").is_file():
            raise DataError(f"no run '{run.run_id}' in {self.root}")
        for name, data in (("config.json", run.config), ("metrics.json", run.metrics)):
            tmp = folder / f".{name}.{uuid.uuid4().hex[:6]}"
            _write_json(tmp, data)
            os.replace(tmp, folder / name)
        run.path = folder
        return run

    def load(self, run_id: str) -> Run:
        folder = self.root / check_run_id(run_id)
        if not (folder / "run.json").is_file():
            raise DataError(f"no run '{run_id}' in {self.root}")
        header = _read_json(folder / "run.json")
        try:
            status = RunStatus(header.get("status", RunStatus.COMPLETED))
        except ValueError:
            raise DataError(f"{folder / 'run.json'}: unknown status {header.get('status')!r}") from None
        if header.get("run_id") != run_id:
            raise DataError(f"{folder / 'run.json'}: its run_id {header.get('run_id')!r} is not its folder's name")
        return Run(
            run_id=run_id,
            config=_read_json(folder / "config.json"),
            metrics=_read_json(folder / "metrics.json"),
            status=status,
            message=header.get("message", ""),
            created=header.get("created", ""),
            history=_read_jsonl(folder / "history.jsonl"),
            path=folder,
        )

    def list(self) -> list[Run]:
        """Every run, newest first: complete ones, and damaged ones (status `damaged`, the file and the reason in
        `message`) so one bad file never hides the others. Hidden folders (saves and deletes under way) are
        skipped."""
        try:
            folders = [p for p in self.root.iterdir() if not p.name.startswith(".") and RUN_ID.fullmatch(p.name)
                       and p.is_dir() and (p / "run.json").is_file()]
        except OSError:  # no store yet (FileNotFoundError), or a path that is a file
            return []
        runs = []
        for folder in folders:
            try:
                runs.append(self.load(folder.name))
            except DataError as exc:
                runs.append(self._damaged(folder, exc))
        return sorted(runs, key=lambda r: (r.created, r.run_id), reverse=True)

    def _damaged(self, folder: Path, exc: DataError) -> Run:
        """A stand-in for a run whose files cannot be read: what can be read of it, and why it is damaged."""
        def readable(name: str) -> dict[str, Any]:
            try:
                return _read_json(folder / name)
            except DataError:
                return {}

        created = datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
        message = str(exc).replace(str(folder) + os.sep, "")  # "metrics.json: not valid JSON (…)"
        return Run(folder.name, readable("config.json"), readable("metrics.json"), status=RunStatus.DAMAGED,
                   message=message, created=readable("run.json").get("created") or created, path=folder)

    def table(self) -> pd.DataFrame:
        rows = [run.summary() for run in self.list()]
        return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))

    def delete(self, run_id: str) -> None:
        """Remove a run of this store (damaged ones too): renamed to a hidden trash name first, in one atomic step,
        then removed. If the rename fails the run is untouched; if the removal fails it is no longer listed and its
        leftovers go when the store is next opened a day later."""
        folder = self.root / check_run_id(run_id)
        if folder.is_symlink() or not (folder / "run.json").is_file():
            raise DataError(f"no run '{run_id}' in {self.root}")
        trash = self.root / f"{TRASH_PREFIX}{run_id}-{uuid.uuid4().hex[:6]}"
        try:
            os.rename(folder, trash)
        except OSError as exc:
            raise StoreError(f"cannot delete run {run_id} from {self.root}: {os_reason(exc)}; the run is unchanged"
                             ) from None
        shutil.rmtree(trash, ignore_errors=True)

    def bundle(self, run_id: str) -> bytes:
        """A zip of the run folder (config, metrics, history, adapter tensors) for sharing."""
        folder = self.load(run_id).path
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in RUN_FILES:
                if (folder / name).is_file():
                    archive.write(folder / name, f"{run_id}/{name}")
        return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, default=str))


def _read_json(path: Path) -> Any:
    """The JSON object in `path`; DataError naming the file and the reason (missing, empty, not JSON, not UTF-8,
    not an object): what a power loss or a disk error leaves."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({os_reason(exc)})") from None
    if not data.strip():
        raise DataError(f"{path}: empty ({len(data)} bytes; an interrupted write)")
    try:
        value = json.loads(data)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _read_jsonl(path: Path) -> list[Any]:
    """One JSON value per non-empty line; DataError naming the file (and line) if missing or malformed."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({os_reason(exc)})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON ({exc})") from exc
    return rows
