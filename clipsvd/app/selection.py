"""What the user chose (model, dataset, shots, seed, device, run store) and how it is named on every page.

Widget values are dropped when the user leaves a page, so the choices live under fixed keys of
st.session_state; pages read them through these functions. The selection also lives in the URL and in a
small state file of the run store, so a reload, a shared link or a second tab restores it.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from clipsvd.analysis.run_pair import run_model_spec
from clipsvd.app.caches import built_model
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
        st.info(f"{where}: **{label}**", icon=":material/memory:")
    else:
        st.warning(f"{where}: **{label}**. Its weights are random, so accuracies and analyses "
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
            continue
    return found


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
    """Once per browser session: fill what the session has not chosen from the URL, else from the state file,
    so a reload, a shared link or a second tab starts where the user was. A run named in the URL always wins."""
    url_run = st.query_params.get("run")
    if url_run:  # a link to a run (Train's "σ shifts", Heads → Explain) wins over the remembered one
        st.session_state[RUN_KEY] = url_run
    if st.session_state.get(RESTORED_KEY):
        return
    st.session_state[RESTORED_KEY] = True
    saved = {**read_state_file(runs_root()), **_from_url()}
    setters = {MODEL_KEY: ("model", lambda d: ModelSpec(**d)), DATASET_KEY: ("dataset", DatasetSpec.from_dict),
               SHOTS_KEY: ("shots", lambda k: None if k is None else int(k)), DATA_SEED_KEY: ("seed", int),
               RUN_KEY: ("run", str)}
    for key, (name, build) in setters.items():
        if key in st.session_state or name not in saved:
            continue
        try:
            st.session_state[key] = build(saved[name])
        except (TypeError, ValueError, ClipsvdError):
            continue  # a stale or hand-edited value: keep the default


def remember_selection() -> None:
    """Put the selection in the URL (page switches drop query parameters) and, when it changed, in the state file."""
    record = _selection_record()
    for name, value in record.items():
        if value is None:
            st.query_params.pop(name, None)
        else:
            st.query_params[name] = value if name == "run" else json.dumps(value, separators=(",", ":"))
    if st.session_state.get(WRITTEN_KEY) != record:
        write_state_file(runs_root(), record)
        st.session_state[WRITTEN_KEY] = record
