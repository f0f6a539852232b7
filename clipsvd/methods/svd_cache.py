"""On-disk cache of CLIP-SVD's decomposition: U, σ₀, Vᵀ of a pretrained model are the same for every run.

Keyed by a fingerprint of exactly the weights decomposed (names, shapes, dtypes, bytes), stored as
safetensors (no pickle) under $CLIPSVD_CACHE/svd or ~/.cache/clipsvd/svd, written atomically. An
unreadable or foreign file counts as a miss and is recomputed.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch

from clipsvd.resources import cache_dir


def cache_root() -> Path:
    return cache_dir("svd")


def fingerprint(weights: dict[str, tuple[torch.Tensor, list[str], set[str]]]) -> str:
    """Hash of every weight to decompose, with which row blocks of it are decomposed ("" for meta tensors: no cache)."""
    if any(tensor.is_meta for tensor, _, _ in weights.values()):
        return ""
    hasher = hashlib.blake2b(digest_size=20)
    for name in sorted(weights):
        tensor, kinds, selected = weights[name]
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|{kinds}|{sorted(selected)};".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()


def load(key: str) -> dict[str, torch.Tensor] | None:
    if not key:
        return None
    path = cache_root() / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        from safetensors.torch import load_file

        return load_file(str(path))
    except Exception:  # truncated or foreign: recompute
        return None


def save(key: str, tensors: dict[str, torch.Tensor]) -> None:
    """Write atomically; a read-only or full disk only costs the next run the decomposition."""
    from safetensors.torch import save_file

    if not key:
        return
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".safetensors")
        os.close(handle)
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
            os.replace(tmp, root / f"{key}.safetensors")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass
