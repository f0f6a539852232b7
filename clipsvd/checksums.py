"""sha256 of files that ship with packages, checked before they are trusted (unpickled or loaded)."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_of_unchanged(path: str | Path) -> str:
    """sha256_of, computed once per file version (its resolved path, size and modification time): a page that
    rebuilds a run on every rerun does not re-read a 600 MB checkpoint each time."""
    path = Path(path).resolve()
    stat = os.stat(path)
    return _sha256_of_version(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of_version(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of(path)
