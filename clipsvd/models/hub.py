"""Check an `hf-hub:` / `local-dir:` model before building it, so a missing piece is named, not a traceback.

BiomedCLIP-style models keep their text tower (and tokenizer) in a *second* repository named in
`open_clip_config.json`; offline, both must be in the hub cache. These checks read only small
files (JSON configs, file listings) and run before any weights are loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clipsvd.errors import CheckpointError
from clipsvd.resources import require

# Files a transformers tokenizer can be built from (any one of these sets suffices).
TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"),
                       ("spiece.model",), ("sentencepiece.bpe.model",), ("tokenizer.model",))


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_file(repo: str, filename: str) -> str | None:
    """Path of a file of a hub repo in the local cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename)
    return found if isinstance(found, str) else None


def hub_model_config(model_id: str) -> dict[str, Any] | None:
    """open_clip_config.json of an hf-hub:/local-dir: model, when it can be read without the network."""
    schema, _, name = model_id.partition(":")
    if schema == "local-dir":
        folder = Path(name)
        if not folder.is_dir():
            raise CheckpointError(f"local-dir: folder not found: {folder}")
        path = folder / "open_clip_config.json"
        if not path.is_file():
            raise CheckpointError(f"local-dir: {folder} has no open_clip_config.json (expected model_cfg and "
                                  "preprocess_cfg, as in an open_clip hub repo)")
    else:
        found = cached_file(name, "open_clip_config.json")
        if found is None:
            if _offline():
                raise CheckpointError(
                    f"hf-hub:{name}: open_clip_config.json is not in the hub cache ({_cache_dir()}) and "
                    "HF_HUB_OFFLINE=1. Fill the cache where the internet is reachable "
                    f"(`huggingface-cli download {name}`, then copy ~/.cache/huggingface/hub or point HF_HOME at it), "
                    "or export HF_HUB_OFFLINE=0")
            return None
        path = Path(found)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from exc


def require_transformers(what: str) -> None:
    require("transformers", f"{what} has a Hugging Face text tower and", CheckpointError)


def _missing_tokenizer_files(files: set[str]) -> list[str]:
    if any(all(name in files for name in option) for option in TOKENIZER_FILE_SETS):
        return []
    return [" + ".join(option) for option in TOKENIZER_FILE_SETS[:3]]


def check_hub_model(model_id: str) -> dict[str, Any] | None:
    """Raise a CheckpointError naming what is missing for a hub model; return its open_clip config."""
    config = hub_model_config(model_id)
    if config is None:  # online: open_clip will download what it needs
        return None
    text_cfg = config.get("model_cfg", {}).get("text_cfg", {})
    text_model = text_cfg.get("hf_model_name")
    tokenizer = text_cfg.get("hf_tokenizer_name")
    if not (text_model or tokenizer):
        return config
    require_transformers(model_id)
    schema, _, name = model_id.partition(":")
    if text_model and not Path(text_model).is_dir() and cached_file(text_model, "config.json") is None and _offline():
        raise CheckpointError(
            f"{model_id}: its text tower '{text_model}' is not in the hub cache ({_cache_dir()}): "
            f"config.json of repo {text_model} is missing. Download that repo too "
            f"(`huggingface-cli download {text_model}`) or export HF_HUB_OFFLINE=0")
    if schema == "local-dir":
        files = {p.name for p in Path(name).iterdir()}
        missing = _missing_tokenizer_files(files)
        if missing or "tokenizer_config.json" not in files:
            need = ["tokenizer_config.json"] if "tokenizer_config.json" not in files else []
            raise CheckpointError(
                f"{model_id}: tokenizer files missing in {name}: {', '.join(need + (['one of ' + ' / '.join(missing)] if missing else []))} "
                f"(open_clip reads the tokenizer of a local-dir model from the folder itself; copy them from "
                f"the tokenizer repo '{tokenizer or text_model}')")
    elif tokenizer and _offline():
        files = {f for f in ("tokenizer_config.json",) + sum(TOKENIZER_FILE_SETS, ()) if cached_file(tokenizer, f)}
        if _missing_tokenizer_files(files):
            raise CheckpointError(
                f"{model_id}: the tokenizer repo '{tokenizer}' in the hub cache ({_cache_dir()}) has no "
                f"tokenizer files (one of {' / '.join(' + '.join(o) for o in TOKENIZER_FILE_SETS[:3])}). "
                f"Download it (`huggingface-cli download {tokenizer}`)")
    return config
