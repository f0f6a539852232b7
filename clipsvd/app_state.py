"""Session helpers shared by the dashboard pages, so each page stays a short list of widgets and calls.

What the user chose on one page (model, dataset, device, run store) lives under fixed keys of
st.session_state: widget values are dropped when the user leaves a page, so widgets here copy their
value into those keys. Heavy objects (datasets, models, analysis results) are cached per process
and keyed by what they depend on (a spec or a run id plus settings).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import streamlit as st

from clipsvd.analysis.heads import RANKING_MEASURES, head_changes
from clipsvd.analysis.runs import RunPair, load_pretrained, run_model_spec
from clipsvd.analysis.runs import analysis_images as run_analysis_images
from clipsvd.data import ClassificationDataset, DatasetSpec, load_dataset
from clipsvd.data.builtin import DEFAULT_DATASET as DEFAULT_DATASET_NAME
from clipsvd.errors import ClipsvdError
from clipsvd.methods import Method, get_method
from clipsvd.methods.base import OPTIMIZERS, PRECISIONS, SCHEDULES, WARMUPS, config_help
from clipsvd.methods.presets import Setting
from clipsvd.models import UNTRAINED_LABEL, WORLD_LABEL, LoadedModel, ModelSpec, load_model
from clipsvd.plots.export import FORMATS, MIME_TYPES, export_figure, export_table
from clipsvd.plots.heads import MEASURE_TITLES as HEAD_MEASURE_TITLES
from clipsvd.runs import RUNS_ENV, SUMMARY_COLUMNS, Run, RunStatus, RunStore, default_runs_root, mean_std_text
from clipsvd.training import restore_run
from clipsvd.training.jobs import JobRegistry

DEVICES = ("auto", "cpu", "cuda")
CHOICES = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "warmup": WARMUPS, "precision": PRECISIONS}

MODEL_KEY, DATASET_KEY, SHOTS_KEY, DATA_SEED_KEY = "model_spec", "dataset_spec", "shots", "data_seed"
DEVICE_KEY, RUNS_ROOT_KEY, JOB_KEY, RUN_KEY = "device", "runs_root", "job_id", "run_id"
HEADS_MEASURE_KEY = "heads_measure"  # the head-change measure chosen on Heads or Explain
DEFAULT_DATASET = DatasetSpec("builtin", DEFAULT_DATASET_NAME)  # the world's microscopy-like shape task
NO_WEIGHTS_NOTE = (
    "**No OpenAI or LAION CLIP weights ship offline.** The default model is *" + WORLD_LABEL + "*: real "
    "pretrained weights, but of an 8M-parameter model that has only seen the generated world. Any other "
    f"architecture starts as a seeded random initialisation, labelled *{UNTRAINED_LABEL}*. Load real CLIP "
    "weights on **Model & data** with a pretrained tag (needs internet or a filled cache) or a local "
    "`.safetensors` / `.pt` / `.bin` checkpoint (path or upload)."
)
NO_BIOMEDICAL_NOTE = (
    "**No real biomedical images ship offline.** The built-in datasets are the generated world (shape, colour "
    "and object tasks in clean, microscopy-like and sketch styles: synthetic, not real images), Animal Shape "
    "silhouettes and Fashion-MNIST. For biomedical work point a data root at your BiomedCoOp folders or "
    "MedMNIST `.npz` files (or upload a zipped ImageFolder) on **Model & data**."
)
WORLD_STORY = (
    "**The generated world** is a synthetic image world whose truth is known — shapes, colours, sizes, "
    "positions, counts and fills — drawn in a *clean* style that the small default CLIP was pretrained on, and in "
    "shifted *microscopy-like* and *sketch* styles for it to adapt to. It is here so that CLIP-SVD and TextSpan "
    "can be seen working, and checked against that known truth, offline and in minutes on a CPU before a "
    "GPU-day is spent on real CLIP and real (biomedical) data."
)

PAGES = {
    "home": ("app.py", "Home", ":material/home:"),
    "data": ("pages/1_Model_and_data.py", "Model & data", ":material/dataset:"),
    "train": ("pages/2_Train.py", "Train", ":material/model_training:"),
    "sigma": ("pages/3_Singular_values.py", "Singular values", ":material/bar_chart:"),
    "heads": ("pages/4_Heads.py", "Heads", ":material/grid_view:"),
    "explain": ("pages/5_Explain.py", "Explain (TextSpan)", ":material/text_snippet:"),
    "embeddings": ("pages/6_Embeddings.py", "Embeddings", ":material/scatter_plot:"),
    "compare": ("pages/7_Compare.py", "Compare", ":material/compare_arrows:"),
    "runs": ("pages/8_Runs.py", "Runs", ":material/folder_open:"),
    "reproduce": ("pages/9_Reproduce.py", "Reproduce", ":material/table_chart:"),
}
ANALYSIS_PAGES = ("sigma", "heads", "explain", "embeddings")


# ----- page frame --------------------------------------------------------------------------------
def page_header(title: str, caption: str) -> None:
    """Same frame on every page: wide layout, the settings sidebar, a title and one line of caption."""
    st.set_page_config(page_title=f"{title} · clipsvd", layout="wide")
    settings_sidebar()
    st.title(title)
    st.caption(caption)


def flash(key: str, message: str) -> None:
    """Keep a success message for the next run, then rerun so every widget (sidebar too) shows the new state."""
    st.session_state[f"flash-{key}"] = message
    st.rerun()


def show_flash(key: str) -> None:
    message = st.session_state.pop(f"flash-{key}", None)
    if message:
        st.success(message, icon=":material/check_circle:")


def page_link(page: str, label: str | None = None, **query: str) -> None:
    path, default_label, icon = PAGES[page]
    st.page_link(path, label=label or default_label, icon=icon, query_params=query or None)


def settings_sidebar() -> None:
    """Device and run-store folder, plus what is selected; the same on every page."""
    with st.sidebar:
        st.subheader("Settings")
        current = st.session_state.get(DEVICE_KEY, "auto")
        st.session_state[DEVICE_KEY] = st.selectbox(
            "Device", DEVICES, index=DEVICES.index(current), key="_w_device",
            help="auto: CUDA when present, else CPU. Training and analyses run here.")
        root = st.text_input("Run store folder", value=str(runs_root()), key="_w_runs_root",
                             help=f"Where runs are saved and read (default ${RUNS_ENV} or ./runs).")
        st.session_state[RUNS_ROOT_KEY] = root.strip() or str(default_runs_root())
        st.divider()
        st.caption("Selected")
        st.markdown(f"**Model** · {model_label(model_spec())}")
        st.markdown(f"**Data** · {dataset_label(dataset_spec())} · {shots_label(shots())}")


# ----- selections --------------------------------------------------------------------------------
def model_spec() -> ModelSpec:
    return st.session_state.get(MODEL_KEY) or ModelSpec.default()


def dataset_spec() -> DatasetSpec:
    return st.session_state.get(DATASET_KEY) or DEFAULT_DATASET


def shots() -> int | None:
    return st.session_state.get(SHOTS_KEY, 16)


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


def shots_label(k: int | None) -> str:
    return "all images" if k is None else f"{k}-shot"


@st.cache_resource(show_spinner=False, max_entries=16)
def _built_model_label(spec: ModelSpec) -> str:
    return load_model(spec, "cpu").label


def model_label(spec: ModelSpec | None = None) -> str:
    """The model's full label as built (LoadedModel.label: architecture, where the weights came from and in
    which format, the activation built, any note such as "activation unknown"). Builds the model once per
    spec and process; falls back to the spec's own label when it cannot be built."""
    spec = spec or model_spec()
    try:
        return _built_model_label(spec)
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


def runs_table(store: RunStore) -> pd.DataFrame:
    """The store's table with the full model label (architecture, weights source and format, activation) as "model"."""
    rows = [{**run.summary(), "model": run_model_label(run)} for run in store.list()]
    table = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    numeric = ["accuracy", "base", "novel", "hm", "trainable", "trainable_fraction", "train_seconds",
               "checkpoint_bytes"]
    return table.astype({c: "float64" for c in numeric})  # None -> NaN: shown blank, sorted as numbers


# ----- cached heavy objects ------------------------------------------------------------------------
@st.cache_resource
def job_registry() -> JobRegistry:
    """One registry per server process: jobs outlive page switches and browser reloads."""
    return JobRegistry()


@st.cache_resource(show_spinner="Loading dataset…", max_entries=4)
def cached_dataset(spec: DatasetSpec) -> ClassificationDataset:
    return load_dataset(spec)


def class_count_table(dataset: ClassificationDataset) -> pd.DataFrame:
    """Images per class in each split the dataset has (imbalance and empty classes at a glance)."""
    splits = [name for name in ("train", "val", "test") if getattr(dataset, name) is not None]
    table = pd.DataFrame({name: dataset.class_counts(name) for name in splits})
    table.index.name = "class"
    return table


def try_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a clipsvd function; show its ClipsvdError as a red box (its message is user-facing) and return None."""
    try:
        return function(*args, **kwargs)
    except ClipsvdError as exc:
        st.error(str(exc), icon=":material/error:")
        return None


# ----- runs ------------------------------------------------------------------------------------------
def run_title(run: Run) -> str:
    cfg, m = run.config, run.metrics
    score = m.get("hm") if m.get("hm") is not None else m.get("accuracy")
    score_text = f" · {score:.1f}%" if isinstance(score, (int, float)) else ""
    k = cfg.get("shots")
    return (f"{cfg.get('method')} · {(cfg.get('dataset') or {}).get('name')} · {shots_label(k)} · "
            f"seed {cfg.get('seed')} · {run.status}{score_text} · {run.run_id}")


def pick_run(label: str = "Run", statuses: tuple[RunStatus, ...] = (RunStatus.COMPLETED,), key: str = "pick_run") -> Run | None:
    """A run chosen from the store; the choice follows ?run=<id> and is remembered across pages."""
    store = run_store()
    try:
        runs = [r for r in store.list() if r.status in statuses]
    except ClipsvdError as exc:
        st.error(str(exc))
        return None
    if not runs:
        st.info(f"No {' or '.join(statuses)} runs in `{store.root}` yet. Train one on the Train page.",
                icon=":material/info:")
        page_link("train")
        return None
    ids = [r.run_id for r in runs]
    wanted = st.query_params.get("run") or st.session_state.get(RUN_KEY)
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox(label, ids, index=index, key=f"_w_{key}",
                          format_func=lambda run_id: run_title(runs[ids.index(run_id)]))
    st.session_state[RUN_KEY] = chosen
    st.query_params["run"] = chosen
    return runs[ids.index(chosen)]


RUN_COLUMN_ORDER = ["run_id", "status", "method", "dataset", "protocol", "shots", "seed", "accuracy", "base", "novel",
                    "hm", "trainable", "trainable_fraction", "train_seconds", "checkpoint_bytes", "model", "created"]
RUN_COLUMNS = {
    "accuracy": st.column_config.NumberColumn("accuracy %", format="%.2f"),
    "base": st.column_config.NumberColumn("base %", format="%.2f"),
    "novel": st.column_config.NumberColumn("novel %", format="%.2f"),
    "hm": st.column_config.NumberColumn("HM %", format="%.2f"),
    "trainable": st.column_config.NumberColumn("trainable", format="localized"),
    "trainable_fraction": st.column_config.NumberColumn("trainable share", format="percent"),
    "train_seconds": st.column_config.NumberColumn("train s", format="%.1f"),
    "checkpoint_bytes": st.column_config.NumberColumn("checkpoint bytes", format="localized"),
}


def load_runs(run_ids: list[str]) -> list[Run]:
    store = run_store()
    return [store.load(run_id) for run_id in run_ids]


def comparison_view(summary: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """`compare_methods` output as the table a reader wants: one row per method, numbers as text."""
    scores = ["base", "novel", "hm"] if protocol == "base2novel" else ["accuracy"]
    rows = []
    for _, row in summary.iterrows():
        out = {"method": row["method"], "runs": int(row["n"]), "seeds": row.get("seeds", "")}
        for metric in scores:
            out[{"hm": "HM (avg of runs)"}.get(metric, metric)] = mean_std_text(row, metric)
        if protocol == "base2novel":
            hm = row.get("hm_of_averages")
            out["HM (of avgs)"] = "—" if hm is None or pd.isna(hm) else f"{hm:.2f}"
        out["trainable"] = "—" if pd.isna(row.get("trainable")) else f"{int(row['trainable']):,}"
        out["trainable share"] = fraction_text(row.get("trainable_fraction")) or "—"
        out["train time (s)"] = mean_std_text(row, "train_seconds")
        out["checkpoint"] = bytes_text(None if pd.isna(row.get("checkpoint_bytes")) else row["checkpoint_bytes"])
        rows.append(out)
    return pd.DataFrame(rows)


def percent(value: float | None) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.2f}%"


def fraction_text(value: float | None) -> str | None:
    return None if value is None or pd.isna(value) else f"{value:.4%} of the model"


def seconds_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f} s" if value < 10 else f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def bytes_text(value: int | None) -> str:
    if value is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value} B"


# ----- analysis: a stored run against its pretrained model ----------------------------------------------
@dataclasses.dataclass
class AnalysisContext(RunPair):
    """What every analysis page compares: the run, the pretrained model, the run's method, on a device."""

    device: str = "auto"

    @property
    def key(self) -> tuple[str, str, str]:
        """Identifies the pair in cache keys: (run store folder, run id, device)."""
        return str(self.run.path.parent), self.run.run_id, self.device


@st.cache_resource(max_entries=2, show_spinner="Rebuilding the fine-tuned model from its run…")
def restored_run(root: str, run_id: str, device_name: str) -> tuple[LoadedModel, Method]:
    return restore_run(RunStore(root).load(run_id), device_name)


@st.cache_resource(max_entries=2, show_spinner="Loading the pretrained model…")
def pretrained_model(spec: ModelSpec, device_name: str) -> LoadedModel:
    return load_pretrained(spec, device_name)


def analysis_context() -> AnalysisContext | None:
    """Run picker + the two models, with the untrained warning; None (and a message) if not possible."""
    run = pick_run("Fine-tuned run", key="analysis")
    if run is None:
        return None
    run_model_notice(run)
    restored = try_call(restored_run, str(run.path.parent), run.run_id, device())
    before = try_call(pretrained_model, run_model_spec(run), device())
    if restored is None or before is None:
        return None
    st.caption(f"Before: the model this run started from. After: {run.config.get('method')} as trained in "
               f"run {run.run_id}.")
    return AnalysisContext(run, before, restored[1], device())


def unchanged_note(ctx: AnalysisContext, changed: bool, what: str) -> None:
    """Say plainly when a method left everything this page measures untouched (all-zero figures otherwise puzzle)."""
    if not changed:
        st.info(f"This run changed none of the {what}. {ctx.method.display_name} trains: {ctx.method.summary}",
                icon=":material/info:")


def analysis_images(run: Run, per_class: int) -> ClassificationDataset:
    """The run's dataset with at most `per_class` test images per class (seeded), all classes."""
    return run_analysis_images(run, per_class, cached_dataset(DatasetSpec.from_dict(run.config["dataset"])))


def computed_once(name: str, params: dict[str, Any], button_label: str) -> bool:
    """Heavy analyses run on a button press and stay shown while their settings are unchanged."""
    if st.button(button_label, type="primary", key=f"run-{name}"):
        st.session_state[f"params-{name}"] = params
    done = st.session_state.get(f"params-{name}") == params
    if not done and st.session_state.get(f"params-{name}") is not None:
        st.caption(f"Settings changed: press **{button_label}** to recompute.")
    return done


def pick_heads_measure(where: Any = st, key: str = "heads") -> str:
    """The measure heads are ranked by, chosen on Heads or Explain: one choice for both pages, remembered
    across pages and carried in the URL (?measure=), so Explain starts from the ranking Heads showed."""
    wanted = st.query_params.get("measure") or st.session_state.get(HEADS_MEASURE_KEY)
    index = RANKING_MEASURES.index(wanted) if wanted in RANKING_MEASURES else 0
    chosen = where.selectbox("Rank heads by", RANKING_MEASURES, index=index, key=f"_w_{key}_measure",
                             format_func=lambda m: f"{m} ({HEAD_MEASURE_TITLES[m]})",
                             help="How a head's change is measured on the weights; shared by Heads and Explain.")
    st.session_state[HEADS_MEASURE_KEY] = chosen
    st.query_params["measure"] = chosen
    return chosen


@st.cache_data(show_spinner="Comparing every head before and after…", max_entries=8)
def _head_changes(_ctx: AnalysisContext, key: tuple[str, str, str], encoder: str, measure: str) -> pd.DataFrame:
    return head_changes(_ctx.before, _ctx.method, encoder, measure)


def head_ranking(ctx: AnalysisContext, encoder: str, measure: str) -> pd.DataFrame | None:
    """Every head of one tower ranked by `measure` (cached per run): what Heads shows and Explain starts from."""
    return try_call(_head_changes, ctx, ctx.key, encoder, measure)


# ----- hyperparameter forms ------------------------------------------------------------------------
def hyperparameter_form(method: str, setting: Setting, key: str) -> dict[str, Any]:
    """Widgets for every field of the method's Config, preset to the official protocol for this setting
    (protocol, dataset, backbone, K), each with its help; returns only the values the user changed."""
    cls = get_method(method)
    defaults = cls.default_config(setting)
    hints = typing.get_type_hints(cls.Config)
    helps = config_help(cls.Config)
    preset = cls.preset(setting)
    overrides: dict[str, Any] = {}
    columns = st.columns(3)
    shown = 0
    for f in dataclasses.fields(cls.Config):
        default = getattr(defaults, f.name)
        if not dataclasses.replace(defaults, **overrides).field_used(f.name):
            continue  # e.g. momentum under AdamW: the form shows what the chosen settings use
        source = preset.sources.get(f.name)
        help_text = helps.get(f.name, "") + (f"\n\nOfficial value, from {source}" if source else "")
        widget_key = f"{key}-{setting.protocol}-{setting.shots}-{setting.dataset}-{setting.backbone}-{f.name}"
        with columns[shown % 3]:
            value = _field_widget(f.name, hints.get(f.name, type(default)), default, widget_key, help_text)
        shown += 1
        if value != default:
            overrides[f.name] = value
    return overrides


def _field_widget(name: str, hint: Any, default: Any, key: str, help_text: str = "") -> Any:
    label = name.replace("_", " ")
    args = typing.get_args(hint)
    optional = type(None) in args
    help_text = help_text or None
    if name in CHOICES:
        return st.selectbox(label, CHOICES[name], index=CHOICES[name].index(default), key=key, help=help_text)
    if isinstance(default, bool):
        return st.checkbox(label, value=default, key=key, help=help_text)
    if isinstance(default, int) or (default is None and int in args):
        if optional:
            text = st.text_input(label, value="" if default is None else str(default), key=key,
                                 help=(help_text or "") + " (empty: not set)")
            try:
                return int(text) if text.strip() else None
            except ValueError:
                st.error(f"{label}: expected a whole number or nothing, got '{text}'")
                return default
        return int(st.number_input(label, value=default, step=1, key=key, help=help_text))
    if isinstance(default, float):
        step = 10.0 ** math.floor(math.log10(abs(default))) if default else 0.01
        return float(st.number_input(label, value=default, step=step, format="%g", key=key, help=help_text))
    if isinstance(default, str):
        return st.text_input(label, value=default, key=key, help=help_text)
    if name == "templates":
        text = st.text_area(label, value="\n".join(default), key=key, help=(help_text or "") + " One per line.")
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(default, list) and default and not optional:
        return st.multiselect(label, default, default=default, key=key, help=help_text)  # the default lists every choice
    text = st.text_input(label, value=", ".join(map(str, default or [])), key=key,
                         help=(help_text or "") + (" (comma-separated; empty: all)" if optional else " (comma-separated)"))
    items = [t.strip() for t in text.split(",") if t.strip()]
    is_int = any(typing.get_args(a) == (int,) for a in args) or typing.get_args(hint) == (int,)
    try:
        values = [int(t) for t in items] if is_int else items
    except ValueError:
        st.error(f"{label}: expected whole numbers, got '{text}'")
        values = []
    return values if values or not optional else None


# ----- exports ---------------------------------------------------------------------------------------
def figure_downloads(fig: Any, name: str, key: str | None = None) -> None:
    """PNG/SVG/PDF/HTML buttons for a figure. Bytes are made on click (kaleido needs ~2 s the first time)."""
    row = st.container(horizontal=True, gap="small")
    for fmt in FORMATS:
        row.download_button(fmt.upper(), data=_deferred(export_figure, fig, fmt), file_name=f"{name}.{fmt}",
                            mime=MIME_TYPES[fmt], key=f"dl-{key or name}-{fmt}", on_click="ignore",
                            icon=":material/download:", help=f"Download this figure as {fmt.upper()}")


def table_download(df: pd.DataFrame, name: str, key: str | None = None, label: str = "CSV") -> None:
    """A CSV button for a table, via the same export module as the figures."""
    st.download_button(label, data=_deferred(export_table, df), file_name=f"{name}.csv", mime="text/csv",
                       key=f"dl-{key or name}-csv", on_click="ignore", icon=":material/download:",
                       help="Download this table as CSV")


def _deferred(function: Callable[..., bytes], *args: Any) -> Callable[[], bytes]:
    return lambda: function(*args)


def file_stem(*parts: Any) -> str:
    """A file name from run ids and settings, safe on every OS."""
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:120] or "figure"

