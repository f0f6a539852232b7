"""Reading CoOp-style split files: {"train": [[relpath, label, classname], ...], "val": ..., "test": ...}.

Shared by the CoOp and BiomedCoOp loaders. Every entry is type-checked and every referenced image
is stat-ed at load time, so a broken download fails here with the file name, not mid-training.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

from clipsvd.data.splits import FileImageSplit, listed
from clipsvd.errors import DataError

Entry = tuple[str, int, str]


def read_split_json(path: Path) -> dict[str, list[Entry]]:
    """The entries of each split in the file ('val' may be absent or empty)."""
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"split file {path} is not valid JSON: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DataError(
            f"split file {path}: expected an object with 'train', 'val', 'test' lists, got {type(data).__name__}"
        )
    missing = [s for s in ("train", "test") if s not in data]
    if missing:
        raise DataError(f"split file {path} has no {' or '.join(repr(m) for m in missing)} list")
    out = {}
    for split in ("train", "val", "test"):
        entries = data.get(split) or []
        if not isinstance(entries, list):
            raise DataError(f"split file {path}: '{split}' must be a list, got {type(entries).__name__}")
        out[split] = [_check_entry(path, split, i, e) for i, e in enumerate(entries)]
    if not out["train"] or not out["test"]:
        raise DataError(f"split file {path}: 'train' and 'test' must not be empty")
    return out


def _check_entry(path: Path, split: str, i: int, entry: object) -> Entry:
    where = f"split file {path}, '{split}' entry {i}"
    if not isinstance(entry, list) or len(entry) != 3:
        raise DataError(f"{where}: expected [relative image path (str), label (int), class name (str)], got {entry!r}")
    rel, label, classname = entry
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{where}: image path must be a non-empty string, got {rel!r}")
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise DataError(f"{where}: label must be a non-negative int, got {label!r}")
    if not isinstance(classname, str) or not classname:
        raise DataError(f"{where}: class name must be a non-empty string, got {classname!r}")
    return rel, label, classname


def classnames_from_entries(source: str, splits: dict[str, list[Entry]]) -> list[str]:
    """Class names ordered by label; every label 0..n-1 must appear with one single name."""
    names: dict[int, str] = {}
    for split, entries in splits.items():
        for i, (_, label, classname) in enumerate(entries):
            if names.setdefault(label, classname) != classname:
                raise DataError(
                    f"{source}: label {label} is called {names[label]!r} and {classname!r} ('{split}' entry {i})"
                )
    gaps = [label for label in range(max(names) + 1) if label not in names]
    if gaps:
        raise DataError(f"{source}: labels must run 0..{max(names)} but {gaps[:10]} never occur")
    return [names[label] for label in range(len(names))]


def build_split(entries: Sequence[Entry], resolve: Callable[[str], Path]) -> FileImageSplit:
    return FileImageSplit([resolve(rel) for rel, _, _ in entries], [label for _, label, _ in entries])


def check_files_exist(source: str, split: FileImageSplit | None) -> None:
    """DataError listing the first missing images of a split."""
    if split is None:
        return
    missing = [p for p in split.paths if not p.is_file()]
    if missing:
        raise DataError(f"{source} names {len(missing)} image(s) that do not exist:\n  {listed(missing)}")
