"""What the user chose (model, dataset, shots, seed, device, run store) and how it is named on every page.

Widget values are dropped when the user leaves a page, so the choices live under fixed keys of
st.session_state; pages read them through these functions.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from clipsvd.analysis.run_pair import run_model_spec
from clipsvd.app.caches import built_model_label
from clipsvd.data import DatasetSpec
from clipsvd.data.builtin import DEFAULT_DATASET as DEFAULT_DATASET_NAME
from clipsvd.formatting import shots_label
from clipsvd.models import ModelSpec
from clipsvd.runs import Run, RunStore, default_runs_root

DEVICES = ("auto", "cpu", "cuda")
MODEL_KEY, DATASET_KEY, SHOTS_KEY, DATA_SEED_KEY = "model_spec", "dataset_spec", "shots", "data_seed"
DEVICE_KEY, RUNS_ROOT_KEY, JOB_KEY, RUN_KEY = "device", "runs_root", "job_id", "run_id"
DEFAULT_DATASET = DatasetSpec("builtin", DEFAULT_DATASET_NAME)  # the world's microscopy-like shape task
DEFAULT_SHOTS = 16



def model_spec() -> ModelSpec:
    return st.session_state.get(MODEL_KEY) or ModelSpec.default()


def dataset_spec() -> DatasetSpec:
    return st.session_state.get(DATASET_KEY) or DEFAULT_DATASET


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
        return built_model_label(spec)
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

