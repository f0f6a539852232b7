"""What the user chose (model, dataset, shots, seed, device, run store) and how it is named on every page.

Widget values are dropped when the user leaves a page, so the choices live under fixed keys of
st.session_state; pages read them through these functions. A session's selection also lives in its URL, so a
reload or a shared link restores it; the run store's state file holds only store-wide defaults (a built-in
dataset, a model that names no file, K and seed), never one session's data root, weights path, run or class
names, so a new session never opens on another user's data. Every value from the URL or the file is checked
against what exists (and, served beyond localhost, against the allowed roots) before it is used; one that is not
is ignored with a one-line note and never written anywhere.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from clipsvd.analysis.run_pair import run_model_spec
from clipsvd.app import access
from clipsvd.app.caches import built_model
from clipsvd.app.text import md
from clipsvd.choices import DEFAULT_DATASET
from clipsvd.data import DatasetSpec
from clipsvd.errors import ClipsvdError
from clipsvd.models import ModelSpec
from clipsvd.runs import Run, RunStore, default_runs_root

DEVICES = ("auto", "cpu", "cuda")
MODEL_KEY, DATASET_KEY, SHOTS_KEY, DATA_SEED_KEY = "model_spec", "dataset_spec", "shots", "data_seed"
DEVICE_KEY, RUNS_ROOT_KEY, JOB_KEY, RUN_KEY = "device", "runs_root", "job_id", "run_id"
DEFAULT_DATASET_SPEC = DatasetSpec("builtin", DEFAULT_DATASET)  # the world's microscopy-like shape task
DEFAULT_SHOTS = 16


def model_spec() -> ModelSpec:
    return st.session_state.get(MODEL_KEY) or ModelSpec.default()


def dataset_spec() -> DatasetSpec:
    return st.session_state.get(DATASET_KEY) or DEFAULT_DATASET_SPEC


def shots() -> int | None:
    return st.session_state.get(SHOTS_KEY, DEFAULT_SHOTS)


def data_seed() -> int:
    return int(st.session_state.get(DATA_SEED_KEY, 1))


def device() -> str:
    return st.session_state.get(DEVICE_KEY, "auto")


def runs_root() -> Path:
    root = st.session_state.get(RUNS_ROOT_KEY)
    return Path(root).expanduser().resolve() if root else default_runs_root()


def run_store() -> RunStore:
    return RunStore(runs_root())


def dataset_label(spec: DatasetSpec) -> str:
    return spec.name if spec.kind == "builtin" else f"{spec.name} ({spec.kind})"


def model_label(spec: ModelSpec | None = None) -> str:
    """The model's full label as built (LoadedModel.label: architecture, where the weights came from and in
    which format, the activation built, any note such as "activation unknown"); the spec's own label when it
    cannot be built."""
    spec = spec or model_spec()
    try:
        return built_model(spec).label
    except Exception:  # shown where the model is named; the error itself is shown where the model is used
        return spec.label


def run_model_label(run: Run) -> str:
    """The full label of the model a stored run started from, as recorded when it was trained."""
    source = run.config.get("model_source") or {}
    return source.get("label") or run_model_spec(run).label


def model_notice(spec: ModelSpec | None = None, where: str = "Model", label: str | None = None) -> None:
    """The model's full label; a visible warning when its weights are random."""
    spec = spec or model_spec()
    label = label or model_label(spec)
    if spec.is_pretrained:
        st.info(f"{where}: **{md(label)}**", icon=":material/memory:")
    else:
        st.warning(f"{where}: **{md(label)}**. Its weights are random, so accuracies and analyses "
                   "describe an untrained network. Load a checkpoint on *Model & data*.", icon="⚠️")


def run_model_notice(run: Run) -> None:
    """The same notice for the model a stored run was trained from."""
    model_notice(run_model_spec(run), where="This run's model", label=run_model_label(run))


# ----- the selection outside one browser session: the URL and a state file in the run store ------------------
STATE_FILE = ".dashboard-state.json"  # in the run store: a reload, a second tab or a restart starts from it
RESTORED_KEY = "_selection_restored"
WRITTEN_KEY = "_selection_written"
URL_KEYS = ("model", "dataset", "shots", "seed", "run")


def _selection_record() -> dict[str, Any]:
    """The current selection as plain JSON values (what the URL and the state file hold)."""
    return {"model": model_spec().to_dict(), "dataset": dataset_spec().to_dict(), "shots": shots(),
            "seed": data_seed(), "run": st.session_state.get(RUN_KEY)}


NOTES_KEY = "_selection_notes"  # one-line notes about ignored URL parameters, shown under the page title
RUN_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _from_url() -> dict[str, Any]:
    """The selection carried by the query string (JSON values; a parameter that does not parse is ignored)."""
    found = {}
    for name in URL_KEYS:
        text = st.query_params.get(name)
        if text is None:
            continue
        try:
            found[name] = json.loads(text) if name in ("model", "dataset", "shots", "seed") else text
        except json.JSONDecodeError:
            _note(name, text, "not valid JSON")
            st.query_params.pop(name, None)
    return found


def _note(name: str, value: Any, reason: str) -> None:
    shown = value if isinstance(value, str) else json.dumps(value)
    st.session_state.setdefault(NOTES_KEY, []).append(
        f"Ignored the link's {name} '{shown[:120]}': {reason}.")


def show_notes() -> None:
    """The notes about ignored URL parameters, once, as plain text (they quote what the URL said)."""
    for note in st.session_state.pop(NOTES_KEY, []):
        st.caption(md(note))


def valid_run_id(run_id: Any, root: Path | None = None) -> str:
    """A run id of the run store; ClipsvdError when it is malformed or no such run exists."""
    if not isinstance(run_id, str) or not run_id or run_id.startswith(".") or not set(run_id) <= RUN_ID_CHARS:
        raise ClipsvdError("not a run id")
    root = root or runs_root()
    try:
        names = set(os.listdir(root))
    except OSError:
        names = set()
    if run_id not in names:
        raise ClipsvdError(f"no such run in {root}")
    return run_id


def valid_dataset(data: Any) -> DatasetSpec:
    """A dataset spec from the URL or the state file: a built-in one installed here, or one whose root exists
    (within the allowed roots when served beyond localhost)."""
    from clipsvd.data import builtin_datasets

    if not isinstance(data, dict):
        raise ClipsvdError("not a dataset")
    spec = DatasetSpec.from_dict(data)
    if spec.kind == "builtin" and spec.name not in builtin_datasets():
        raise ClipsvdError("no such built-in dataset on this server")
    if spec.root is not None:
        access.check_dataset_paths(spec, _upload_roots())
        if not Path(spec.root).expanduser().exists():
            raise ClipsvdError("its data root does not exist")
    return spec


def valid_model(data: Any) -> ModelSpec:
    """A model spec from the URL or the state file: a known architecture with random, shipped or listed weights,
    or an existing weights file (within the allowed roots when served beyond localhost)."""
    from clipsvd.models import RANDOM_WEIGHTS, list_architectures, list_pretrained_tags
    from clipsvd.models.registry import weights_source
    from clipsvd.models.spec import looks_like_path

    if not isinstance(data, dict):
        raise ClipsvdError("not a model")
    try:
        spec = ModelSpec(**data)
    except TypeError as exc:
        raise ClipsvdError("not a model") from exc
    access.check_model_paths(spec, _upload_roots())
    if not spec.is_hub_model and spec.architecture not in list_architectures() and spec.architecture != "auto":
        raise ClipsvdError("no such architecture")
    if looks_like_path(spec.weights):
        if not Path(spec.weights).expanduser().is_file():
            raise ClipsvdError("its weights file does not exist")
    elif not spec.is_hub_model and spec.weights != RANDOM_WEIGHTS and \
            weights_source(spec.architecture, spec.weights) is None and \
            spec.weights not in list_pretrained_tags(spec.architecture):
        raise ClipsvdError("no such weights for this architecture")
    return spec


def _upload_roots() -> list[Path]:
    from clipsvd.app.uploads import session_upload_roots

    return session_upload_roots()


def _valid_count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1_000_000:
        raise ClipsvdError("not a whole number from 1 to 1000000")
    return value


def _valid_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise ClipsvdError("not a whole number from 0 to 2^31-1")
    return value


def store_wide(record: dict[str, Any]) -> dict[str, Any]:
    """What of a selection the shared state file may hold: no run, no paths, no user-named dataset."""
    from clipsvd.models.loading import looks_like_path

    kept: dict[str, Any] = {name: record[name] for name in ("shots", "seed") if name in record}
    dataset, model = record.get("dataset"), record.get("model")
    if isinstance(dataset, dict) and dataset.get("kind") == "builtin" and not dataset.get("root") \
            and not dataset.get("template"):
        kept["dataset"] = dataset
    if isinstance(model, dict) and model.get("architecture") and \
            not str(model["architecture"]).startswith("local-dir:") and \
            not looks_like_path(str(model.get("weights", ""))):
        kept["model"] = model
    return kept


def read_state_file(root: Path) -> dict[str, Any]:
    """The last selection saved in this run store; {} when there is none or it cannot be read."""
    try:
        data = json.loads((root / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state_file(root: Path, record: dict[str, Any]) -> None:
    """Write the selection atomically (a reader never sees half a file); a read-only store is not an error."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=root, prefix=".dashboard-state-", suffix=".tmp", delete=False,
                                         encoding="utf-8") as fh:
            json.dump(record, fh, indent=1)
        os.replace(fh.name, root / STATE_FILE)
    except OSError:
        pass


def restore_selection() -> None:
    """Once per browser session: fill what the session has not chosen from the URL, else from the store-wide
    defaults of the state file, so a reload or a shared link starts where the user was. A run named in the URL
    always wins. Each value is validated first; one that fails is dropped from the URL with a one-line note."""
    url_run = st.query_params.get("run")
    if url_run and url_run != st.session_state.get(RUN_KEY):  # a link to a run (Train's "σ shifts", Heads → Explain)
        try:
            st.session_state[RUN_KEY] = valid_run_id(url_run)
        except ClipsvdError as exc:
            _note("run", url_run, str(exc))
            st.query_params.pop("run", None)
    if st.session_state.get(RESTORED_KEY):
        return
    st.session_state[RESTORED_KEY] = True
    url = _from_url()
    saved = store_wide(read_state_file(runs_root()))
    checks = {MODEL_KEY: ("model", valid_model), DATASET_KEY: ("dataset", valid_dataset),
              SHOTS_KEY: ("shots", _valid_count), DATA_SEED_KEY: ("seed", _valid_seed)}
    for key, (name, build) in checks.items():
        if key in st.session_state and (st.session_state[key] is not None or key in (SHOTS_KEY, DATA_SEED_KEY)):
            continue
        for source, values in (("url", url), ("file", saved)):
            if name not in values:
                continue
            try:
                st.session_state[key] = build(values[name])
                break
            except (TypeError, ValueError, ClipsvdError) as exc:
                if source == "url":  # the state file is only a default: a stale value there is skipped silently
                    _note(name, values[name], str(exc))
                    st.query_params.pop(name, None)


def remember_selection() -> None:
    """Put the selection in the URL (page switches drop query parameters) and, when it changed, in the state file."""
    record = _selection_record()
    for name, value in record.items():
        if value is None:
            st.query_params.pop(name, None)
        else:
            st.query_params[name] = value if name == "run" else json.dumps(value, separators=(",", ":"))
    shared = store_wide(record)
    if st.session_state.get(WRITTEN_KEY) != shared:
        write_state_file(runs_root(), shared)
        st.session_state[WRITTEN_KEY] = shared
