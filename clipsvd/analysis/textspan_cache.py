"""TextSpan's disk cache: the image tower's per-head contributions and the corpus's text embeddings.

One home, `shared_textspan_cache()`: the user cache ($CLIPSVD_CACHE/textspan or ~/.cache/clipsvd/textspan), used by the
library's default, the CLI (through it) and the dashboard. Nothing in it depends on a run store: contributions are
keyed by the weights' fingerprint (a hash of every tensor), the images (a key the caller builds from the dataset spec
with its data root, the split, the subset and the image size), the layers and the ln_post split; text embeddings by
the fingerprint and the corpus's texts. The same pretrained model meets the same corpus in every run store, so a
cache per store (the dashboard's former `<runs root>/.textspan-cache`) only recomputed what another store had.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file

from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT, LnPostSplit, resolve_ln_post_split
from clipsvd.resources import cache_dir


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of every tensor in the model's state dict: equal weights, equal fingerprint."""
    hasher = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        hasher.update(f"{name}|{tensor.dtype}|{tensor.numel()};".encode())
        hasher.update(tensor.view(torch.uint8).numpy())
    return hasher.hexdigest()


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class TextSpanCache:
    """Safetensors files under `root`, so the dashboard reuses forward passes and text embeddings.

    Contributions are keyed by (model fingerprint, images key, layers, ln_post split); text
    embeddings by (model fingerprint, corpus). Files are written atomically; an unreadable file counts as
    a miss, and a folder that cannot be written only costs the next run the recomputation.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, kind: str, key: str) -> Path:
        return self.root / f"{kind}-{key}.safetensors"

    def _write(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".safetensors")
        except OSError:  # read-only or full disk: recompute next time
            return
        os.close(handle)
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
            os.replace(tmp, path)
        except OSError:
            pass
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _read(self, path: Path, meta: dict[str, str]) -> dict[str, torch.Tensor] | None:
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                if handle.metadata() != meta:
                    return None
            return load_file(str(path))
        except Exception:  # truncated or foreign file: recompute and overwrite
            return None

    @staticmethod
    def _contribution_meta(fingerprint: str, images_key: str, layers: Sequence[int],
                           ln_post_split: str | LnPostSplit) -> dict[str, str]:
        """The split changes every head's terms, so it is part of the key: no reuse across conventions."""
        return {"model": fingerprint, "images": images_key, "layers": json.dumps(list(layers)),
                "ln_post_split": resolve_ln_post_split(ln_post_split).value}

    def load_contributions(self, fingerprint: str, images_key: str, layers: Sequence[int],
                           ln_post_split: str | LnPostSplit = DEFAULT_LN_POST_SPLIT):
        meta = self._contribution_meta(fingerprint, images_key, layers, ln_post_split)
        tensors = self._read(self._path("contributions", _digest(meta)), meta)
        return None if tensors is None else (tensors["heads"], tensors["embeddings"])

    def save_contributions(self, fingerprint: str, images_key: str, layers: Sequence[int],
                           heads: torch.Tensor, embeddings: torch.Tensor,
                           ln_post_split: str | LnPostSplit = DEFAULT_LN_POST_SPLIT) -> None:
        meta = self._contribution_meta(fingerprint, images_key, layers, ln_post_split)
        self._write(self._path("contributions", _digest(meta)), {"heads": heads, "embeddings": embeddings}, meta)

    @staticmethod
    def _text_meta(fingerprint: str, texts: Sequence[str]) -> dict[str, str]:
        return {"model": fingerprint, "texts": _digest(list(texts)), "count": str(len(texts))}

    def load_text_embeddings(self, fingerprint: str, texts: Sequence[str]) -> torch.Tensor | None:
        meta = self._text_meta(fingerprint, texts)
        tensors = self._read(self._path("texts", _digest(meta)), meta)
        return None if tensors is None else tensors["embeddings"]

    def save_text_embeddings(self, fingerprint: str, texts: Sequence[str], embeddings: torch.Tensor) -> None:
        meta = self._text_meta(fingerprint, texts)
        self._write(self._path("texts", _digest(meta)), {"embeddings": embeddings}, meta)


def shared_textspan_cache() -> TextSpanCache:
    """The one TextSpan cache every caller uses (library default, CLI, dashboard): see the module docstring."""
    return TextSpanCache(cache_dir("textspan"))


def analysis_images_key(pair, per_class: int) -> str:
    """Names a run's analysed images in the cache (dataset, split, subset, image size), so Explain, Verify and the
    report share one entry for the same images."""
    return f"{pair.run.config['dataset']}|test|{per_class}|{pair.loaded.image_size}"
