"""Heavy objects kept per server process (st.cache_resource / st.cache_data), keyed by what they depend on."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import pandas as pd
import streamlit as st
import torch

from clipsvd.analysis.embeddings import import_umap, umap_kernels_cached
from clipsvd.analysis.heads import head_changes
from clipsvd.analysis.run_pair import RunPair, load_pretrained
from clipsvd.app.access import check_dataset_paths, check_model_paths
from clipsvd.app.uploads import session_upload_roots
from clipsvd.data import ClassificationDataset, DatasetSpec, load_dataset
from clipsvd.methods import Method, count_parameters
from clipsvd.models import LoadedModel, ModelSpec, load_model
from clipsvd.models.device import resolve_device
from clipsvd.runs import RunStore
from clipsvd.training import restore_run
from clipsvd.training.jobs import JobRegistry


@st.cache_resource
def job_registry() -> JobRegistry:
    """One registry per server process: jobs outlive page switches and reloads, and every tab sees them."""
    return JobRegistry()


@st.cache_resource(show_spinner=False)
def warm_start() -> threading.Thread | None:
    """Once per server, in the background: import umap with its numba kernels from the disk cache (~1.5 s), so
    the first embedding map asked for waits for its fit only. import_umap is locked: a page asking meanwhile waits
    for this import instead of starting its own. Skipped while nothing is cached: a first-ever compile (~30 s of
    both cores) would slow every page; it happens at the first map instead."""
    if not umap_kernels_cached():
        return None
    thread = threading.Thread(target=import_umap, name="clipsvd-warm-start", daemon=True)
    thread.start()
    return thread


def cached_dataset(spec: DatasetSpec) -> ClassificationDataset:
    """The dataset, loaded once per process; its root first checked against the allowed roots (clipsvd.app.access),
    so no page can open a folder a browser may not name."""
    check_dataset_paths(spec, session_upload_roots())
    return _cached_dataset(spec)


@st.cache_resource(show_spinner="Loading dataset…", max_entries=4)
def _cached_dataset(spec: DatasetSpec) -> ClassificationDataset:
    return load_dataset(spec)


@dataclass(frozen=True)
class BuiltModel:
    """What the pages show of a model they do not run: its parameter count and its full label as built."""

    parameters: int
    label: str


def built_model(spec: ModelSpec) -> BuiltModel:
    """The model built once per spec and process (this also validates a checkpoint), for the Model page's "Use this
    model" and every model label: one cached builder, so no spec is built twice; its files checked first."""
    check_model_paths(spec, session_upload_roots())
    return _built_model(spec)


@st.cache_resource(show_spinner="Building the model…", max_entries=16)
def _built_model(spec: ModelSpec) -> BuiltModel:
    loaded = load_model(spec, "cpu")
    return BuiltModel(count_parameters(loaded.model), loaded.label)


def device_key(device_name: str) -> str:
    """One name per physical device ('auto', 'cuda' and 'cuda:0' are the same GPU), so a model is cached once."""
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def restored_run(root: str, run_id: str, device_name: str) -> tuple[LoadedModel, Method]:
    return _restored_run(root, run_id, device_key(device_name))


def pretrained_model(spec: ModelSpec, device_name: str) -> LoadedModel:
    check_model_paths(spec, session_upload_roots())
    return _pretrained_model(spec, device_key(device_name))


@st.cache_resource(max_entries=2, show_spinner="Rebuilding the fine-tuned model from its run…")
def _restored_run(root: str, run_id: str, device_name: str) -> tuple[LoadedModel, Method]:
    return restore_run(RunStore(root).load(run_id), device_name)


@st.cache_resource(max_entries=2, show_spinner="Loading the pretrained model…")
def _pretrained_model(spec: ModelSpec, device_name: str) -> LoadedModel:
    return load_pretrained(spec, device_name)


@st.cache_data(show_spinner="Comparing every head before and after…", max_entries=8)
def cached_head_changes(_pair: RunPair, key: tuple[str, ...], encoder: str, measure: str) -> pd.DataFrame:
    """head_changes of one run's tower; `key` (store, run id, device, reference run) stands for the unhashable
    pair."""
    return head_changes(_pair.before, _pair.method, encoder, measure)
