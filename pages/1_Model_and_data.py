"""Model & data: choose the backbone and its weights, the dataset and K, and look at the images."""
from pathlib import Path

import pandas as pd
import streamlit as st

from clipsvd import app as ui
from clipsvd.app.access import check_model_paths, check_path
from clipsvd.app.text import md
from clipsvd.app.uploads import save_upload, session_upload_roots, session_uploads
from clipsvd.choices import ACTIVATIONS, field_helps
from clipsvd.data import DatasetSpec, builtin_datasets, few_shot
from clipsvd.data.loaders.biomedcoop import BIOMEDCOOP_DATASETS, available_biomedcoop
from clipsvd.data.loaders.coop import COOP_DATASETS
from clipsvd.importing import ImportOptions, import_checkpoint
from clipsvd.models import (
    RANDOM_WEIGHTS,
    TINY_MODEL_NAME,
    WORLD_LABEL,
    WORLD_MODEL_NAME,
    WORLD_WEIGHTS,
    ModelSpec,
    list_architectures,
    list_pretrained_tags,
)
from clipsvd.models.spec import looks_like_path

UPLOAD_TYPES = ["safetensors", "pt", "bin"]
SHIPPED, RANDOM, TAG, LOCAL, UPLOAD = ("Shipped (pretrained on the world)", "Random (seeded)", "Pretrained tag",
                                       "Local checkpoint file", "Upload checkpoint")
ACTIVATION_HELP = ("auto: what the file says (OpenAI archives and transformers files), else the architecture's "
                   "default, and the label then says 'activation unknown'. quickgelu: OpenAI's and LAION-400M's "
                   "weights were trained with it; gelu: most other open_clip weights. A wrong choice runs without "
                   "error but gives wrong features.")
DATA_SOURCES = ("Built-in", "Data root (CoOp / BiomedCoOp / ImageFolder)", "MedMNIST .npz file",
                "Upload zipped ImageFolder")
# the world CLIP (weights ship), the fast test model, then the papers' backbones
FIRST_ARCHITECTURES = (WORLD_MODEL_NAME, TINY_MODEL_NAME, "ViT-B-16", "ViT-B-32")
ARCHITECTURE_HELP = (f"{WORLD_MODEL_NAME}: {WORLD_LABEL} (8M parameters, 64 px; its weights ship with clipsvd). "
                     f"{TINY_MODEL_NAME}: 2 layers, width 64, 64 px, random — seconds per run on CPU.")
SAMPLES_SHOWN = 8  # sample images of the dataset chosen in the picker
HUB_EXAMPLE = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
PREVIEW_SHOTS = 6  # images per class shown at most


def class_count_table(dataset) -> pd.DataFrame:
    """Images per class in each split the dataset has (imbalance and empty classes at a glance)."""
    splits = [name for name in ("train", "val", "test") if getattr(dataset, name) is not None]
    table = pd.DataFrame({name: dataset.class_counts(name) for name in splits})
    table.index.name = "class"
    return table


def weight_sources(architecture: str) -> tuple[str, ...]:
    """The weight choices an architecture offers: the world CLIP has its shipped weights first."""
    others = (RANDOM, TAG, LOCAL, UPLOAD)
    return (SHIPPED, *others) if architecture == WORLD_MODEL_NAME else others


def current_source(current: ModelSpec) -> str:
    if current.architecture == WORLD_MODEL_NAME and current.weights == WORLD_WEIGHTS:
        return SHIPPED
    if current.weights == RANDOM_WEIGHTS:
        return RANDOM
    return LOCAL if looks_like_path(current.weights) else TAG


def activation_widget(current: ModelSpec, prefix: str = "_w") -> str:
    return st.selectbox("Activation", ACTIVATIONS, index=ACTIVATIONS.index(current.activation),
                        key=f"{prefix}_activation", help=ACTIVATION_HELP)


def weights_widgets(architecture: str, current: ModelSpec, prefix: str = "_w") -> ModelSpec | None:
    """The weight choices of an architecture as a model spec (None until complete); `prefix` keeps the keys of the
    Model section apart from the import panel's base, which offers the same choices."""
    sources = weight_sources(architecture)
    wanted = current_source(current) if current.architecture == architecture else sources[0]
    source = st.radio("Weights", sources, index=sources.index(wanted) if wanted in sources else 0, horizontal=True,
                      key=f"{prefix}_weight_source-{'world' if architecture == WORLD_MODEL_NAME else 'open_clip'}")
    if source == SHIPPED:
        st.caption(f"{WORLD_LABEL}. Pretrained on the clean style of the generated world; its weights ship with "
                   "clipsvd, so it works offline.")
        return ModelSpec(architecture, WORLD_WEIGHTS)
    if source == RANDOM:
        seed = st.number_input("Initialisation seed", 0, 2**31 - 1, current.seed, key=f"{prefix}_model_seed")
        return ModelSpec(architecture, RANDOM_WEIGHTS, int(seed))
    if source == TAG:
        tags = list_pretrained_tags(architecture)
        if not tags:
            st.info(f"open_clip lists no pretrained tags for {md(architecture)}.")
            return None
        st.caption("Downloads need internet (set HF_HUB_OFFLINE=0 before starting) or a filled cache.")
        return ModelSpec(architecture, st.selectbox("Pretrained tag", tags, key=f"{prefix}_tag"))
    if source == LOCAL:
        known = current.weights if current.architecture == architecture and current_source(current) == LOCAL else ""
        path = st.text_input("Checkpoint path", value=known, placeholder="/path/to/ViT-B-16.safetensors",
                             key=f"{prefix}_ckpt_path")
        activation = activation_widget(current, prefix)
        if not path.strip() or ui.try_call(check_path, path.strip(), "Checkpoint path", session_upload_roots()) is None:
            return None
        return ModelSpec(architecture, path.strip(), activation=activation)
    uploaded = st.file_uploader("Checkpoint (.safetensors, .pt, .bin)", type=UPLOAD_TYPES, key=f"{prefix}_ckpt_upload",
                                help="Loaded with weights_only=True: plain tensors only, never pickled objects.")
    activation = activation_widget(current, prefix)
    if uploaded is None:
        return None
    saved = ui.try_call(save_upload, uploaded)
    return ModelSpec(architecture, str(saved), activation=activation) if saved is not None else None


def model_widgets(current: ModelSpec, prefix: str = "_w") -> ModelSpec | None:
    """Hub id, or architecture and weights: the model spec chosen (None until complete)."""
    architectures = list_architectures()
    ordered = [*FIRST_ARCHITECTURES, *(a for a in architectures if a not in FIRST_ARCHITECTURES)]
    hub = st.text_input("Hub model id (optional)", placeholder=HUB_EXAMPLE, key=f"{prefix}_hub",
                        help="Overrides the architecture; the weights come with the hub model.")
    if hub.strip():
        return ModelSpec(hub.strip())
    index = ordered.index(current.architecture) if current.architecture in ordered else 0
    architecture = st.selectbox("Architecture", ordered, index=index, key=f"{prefix}_arch", help=ARCHITECTURE_HELP)
    return weights_widgets(architecture, current, prefix)


def model_section() -> None:
    current = ui.model_spec()
    spec = model_widgets(current)
    if st.button("Use this model", type="primary", disabled=spec is None, key="use_model"):
        built = ui.try_call(ui.built_model, spec)
        if built is not None:
            st.session_state[ui.MODEL_KEY] = spec
            ui.flash("model", f"Model set: {built.label} ({built.parameters:,} parameters)")
    ui.show_flash("model")
    ui.model_notice()


IMPORT_LOCAL, IMPORT_UPLOAD = "Local path (file or PEFT adapter folder)", "Upload a checkpoint file"
IMPORTED_KEY = "imported_run"  # the run the last import made: its links stay shown


def finetuned_source(help_text: str) -> str | None:
    """The fine-tuned checkpoint's path: typed (checked against the allowed roots when served beyond localhost)
    or uploaded into this session's folder; None until given."""
    source = st.radio("Fine-tuned model", (IMPORT_LOCAL, IMPORT_UPLOAD), horizontal=True, key="_w_imp_source")
    if source == IMPORT_LOCAL:
        path = st.text_input("Fine-tuned checkpoint path", placeholder="/path/to/finetuned.safetensors",
                             key="_w_imp_path", help=help_text).strip()
        if not path or ui.try_call(check_path, path, "Fine-tuned checkpoint", session_upload_roots()) is None:
            return None
        return path
    uploaded = st.file_uploader("Fine-tuned checkpoint (.safetensors, .pt, .bin)", type=UPLOAD_TYPES,
                                key="_w_imp_upload", help=help_text)
    saved = ui.try_call(save_upload, uploaded) if uploaded is not None else None
    return str(saved) if saved is not None else None


def import_run(base: ModelSpec, options: ImportOptions):
    """The same library call `clipsvd import` makes, the base's files checked against the allowed roots first."""
    check_model_paths(base, session_upload_roots())
    return import_checkpoint(ui.run_store(), base, options.finetuned, strict=options.strict, label=options.label)


def import_section() -> None:
    """A model fine-tuned elsewhere, imported against its base as a run (method `imported`), like `clipsvd import`."""
    helps = field_helps(ImportOptions)
    with st.expander("Import a fine-tuned model", icon=":material/move_to_inbox:",
                     expanded=bool(st.session_state.get(IMPORTED_KEY))):
        st.caption("A model fine-tuned elsewhere (full weights, an official CLIP-SVD checkpoint, a CLIP-LoRA file or "
                   "a PEFT adapter) becomes a run of the store, stored as its difference from its base; every "
                   "analysis page then opens it. It has no accuracy until evaluated: `clipsvd eval RUN --dataset "
                   "NAME`.")
        finetuned = finetuned_source(helps["finetuned"])
        st.markdown("**Base model** — the model the fine-tune started from")
        base = model_widgets(ui.model_spec(), prefix="_w_imp")
        c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
        strict = c1.checkbox("strict", value=True, key="_w_imp_strict", help=helps["strict"])
        label = c2.text_input("label (optional)", key="_w_imp_label", help=helps["label"]).strip()
        if st.button("Import", type="primary", disabled=finetuned is None or base is None, key="import_model",
                     icon=":material/move_to_inbox:"):
            options = ImportOptions(finetuned, strict, label or None)
            with st.spinner("Reading the checkpoint and comparing it with its base…"):
                run = ui.try_call(import_run, base, options)
            if run is not None:
                st.session_state[IMPORTED_KEY] = run.run_id
                ui.flash("import", f"Imported as run {md(run.run_id)}: {md(run.message)}")
        ui.show_flash("import")
        run_id = st.session_state.get(IMPORTED_KEY)
        if run_id:
            links = st.container(horizontal=True)
            with links:
                for page in ("runs", "sigma", "heads", "explain"):
                    ui.page_link(page, run=run_id)


def short_description(text: str, limit: int = 90) -> str:
    """The first clause of a dataset's description, for the picker's list."""
    text = text.split(";")[0].split(" (")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def samples(spec: DatasetSpec) -> None:
    """A few training images of the dataset chosen in the picker (one per class), before it is used."""
    dataset = ui.try_call(ui.cached_dataset, spec)
    if dataset is None:
        return
    sample = ui.try_call(few_shot, dataset.train, 1, 0, classnames=dataset.classnames)
    if sample is None:
        return
    shown = list(range(min(len(sample.labels), SAMPLES_SHOWN)))
    st.caption(f"One training image per class of {md(spec.name)} (press **Use this dataset** to select it):")
    columns = st.columns(SAMPLES_SHOWN)
    for column, i in zip(columns, shown):
        image = ui.try_call(sample.load_image, i)
        if image is not None:
            column.image(image, caption=md(dataset.classnames[sample.labels[i]]), width="stretch")


def root_dataset_widgets() -> DatasetSpec | None:
    kind = st.selectbox("Layout", ("biomedcoop", "coop", "imagefolder"), key="_w_kind",
                        format_func={"biomedcoop": "BiomedCoOp folders", "coop": "CoOp DATA folder",
                                     "imagefolder": "ImageFolder (class folders)"}.get)
    root = st.text_input("Data root", placeholder="/data/biomed", key="_w_root").strip()
    if root and ui.try_call(check_path, root, "Data root") is None:
        return None  # never listed: served beyond localhost, a browser may name only the allowed roots
    if kind == "coop":
        name = st.selectbox("Dataset", list(COOP_DATASETS), key="_w_coop_name")
    elif kind == "biomedcoop":
        found = available_biomedcoop(root) if root else []
        name = st.selectbox("Dataset", found or list(BIOMEDCOOP_DATASETS), key="_w_biomed_name",
                            help="Folders found under the root" if found else "BiomedCoOp's dataset names")
    else:
        name = st.text_input("Name", value=Path(root).name if root else "", key="_w_if_name").strip()
    return DatasetSpec(kind, name or "dataset", root) if root else None


def upload_dataset_widgets() -> DatasetSpec | None:
    uploaded = st.file_uploader("Zipped ImageFolder (root/<class>/<images> or root/{train,val,test}/<class>/…)",
                                type=["zip"], key="_w_zip")
    if uploaded is None:
        return None
    roots = st.session_state.setdefault("zip_roots", {})  # file id -> extracted dataset root
    if uploaded.file_id not in roots:
        root = ui.try_call(lambda: session_uploads().extract_zip(uploaded.getvalue(), f"zip-{uploaded.file_id}",
                                                                 source=uploaded.name))
        if root is None:
            return None
        roots[uploaded.file_id] = str(root)
    root = roots[uploaded.file_id]
    return DatasetSpec("imagefolder", Path(uploaded.name).stem, str(root))


def dataset_section() -> None:
    source = st.radio("Source", DATA_SOURCES, key="_w_data_source")
    spec = None
    if source == DATA_SOURCES[0]:
        builtins = builtin_datasets()
        if not builtins:
            st.error("No built-in dataset files on this machine (pip install animal-shape-mnist; "
                     "apt-get install dataset-fashion-mnist).")
        else:
            names = list(builtins)
            current = ui.dataset_spec()
            wanted = current.name if current.kind == "builtin" else ui.DEFAULT_DATASET_SPEC.name
            name = st.selectbox("Dataset", names, index=names.index(wanted) if wanted in names else 0,
                                key="_w_builtin", format_func=lambda n: f"{n} — {short_description(builtins[n])}",
                                help="world-…: the generated world (task, then style); the default model was "
                                     "pretrained on its clean style.")
            st.caption(builtins[name])
            spec = DatasetSpec("builtin", name)
            if spec != ui.dataset_spec():  # the selected one is previewed below the two columns
                samples(spec)
    elif source == DATA_SOURCES[1]:
        spec = root_dataset_widgets()
    elif source == DATA_SOURCES[2]:
        path = st.text_input("MedMNIST .npz path", placeholder="/data/medmnist/dermamnist.npz", key="_w_npz").strip()
        ok = path and ui.try_call(check_path, path, "MedMNIST file") is not None
        spec = ui.try_call(DatasetSpec, "medmnist", Path(path).stem, path) if ok else None
    else:
        spec = upload_dataset_widgets()
    template = st.text_input("Prompt template override (optional)", placeholder="a photo of a {}.",
                             key="_w_template").strip()
    k_col, seed_col = st.columns(2)
    k = k_col.number_input("Shots per class (0: all)", 0, 10_000, ui.shots() or 0, key="_w_shots")
    seed = seed_col.number_input("Sampling seed", 0, 2**31 - 1, ui.data_seed(), key="_w_data_seed")
    if st.button("Use this dataset", type="primary", disabled=spec is None, key="use_dataset"):
        if template:
            spec = ui.try_call(DatasetSpec, spec.kind, spec.name, spec.root, template)
        if spec is not None and ui.try_call(ui.cached_dataset, spec) is not None:
            st.session_state[ui.DATASET_KEY] = spec
            st.session_state[ui.SHOTS_KEY] = int(k) or None
            st.session_state[ui.DATA_SEED_KEY] = int(seed)
            st.session_state.pop("_w_train_shots", None)  # Train's K follows the new choice, not its kept value
            ui.flash("dataset", f"Dataset set: {md(ui.dataset_label(spec))}, {ui.shots_label(int(k) or None)}, "
                                f"seed {int(seed)}")
    ui.show_flash("dataset")
    st.info(ui.NO_BIOMEDICAL_NOTE, icon=":material/biotech:")


def preview() -> None:
    spec = ui.dataset_spec()
    dataset = ui.try_call(ui.cached_dataset, spec)
    if dataset is None:
        return
    summary = dataset.summary()
    st.subheader(f"Selected dataset: {md(ui.dataset_label(spec))}")
    cols = st.columns(4)
    cols[0].metric("Classes", summary["n_classes"])
    cols[1].metric("Train images", f"{summary['train']:,}")
    cols[2].metric("Val images", "—" if summary["val"] is None else f"{summary['val']:,}")
    cols[3].metric("Test images", f"{summary['test']:,}")
    st.caption(f"{md(summary['description'])}  Template: {md(summary['template'])}")

    grid_tab, counts_tab, prompts_tab = st.tabs(["Images per class", "Class counts", "Prompts"])
    with grid_tab:
        image_grid(dataset)
    with counts_tab:
        counts = class_count_table(dataset)
        st.dataframe(counts, width="stretch")
        ui.table_download(counts.reset_index(), ui.file_stem(dataset.name, "class-counts"), key="counts")
    with prompts_tab:
        prompts = pd.DataFrame({"class": dataset.classnames, "prompt": dataset.prompts()})
        st.dataframe(prompts, hide_index=True, width="stretch")
        ui.table_download(prompts, ui.file_stem(dataset.name, "prompts"), key="prompts")


def image_grid(dataset) -> None:
    k = ui.shots() or PREVIEW_SHOTS
    shown = min(k, PREVIEW_SHOTS)
    n_classes = len(dataset.classnames)
    limit = st.slider("Classes shown", 1, n_classes, min(n_classes, 10), key="_w_preview_classes")
    sample = ui.try_call(few_shot, dataset.train, k, ui.data_seed(), classnames=dataset.classnames)
    if sample is None:
        return
    st.caption(f"The {ui.shots_label(ui.shots())} training sample (seed {ui.data_seed()}); "
               f"{shown} image(s) per class shown.")
    for label, name in enumerate(dataset.classnames[:limit]):
        positions = [i for i, y in enumerate(sample.labels) if y == label][:shown]
        columns = st.columns([2] + [1] * PREVIEW_SHOTS)
        columns[0].markdown(f"**{md(name)}**")
        for column, i in zip(columns[1:], positions):
            image = ui.try_call(sample.load_image, i)  # an undecodable file: its DataError, not an exception box
            if image is None:
                break
            column.image(image, width="stretch")


ui.page_header("Model & data", "Pick the backbone and its weights, the dataset and K; check the images before "
               "training.")
model_col, data_col = st.columns(2, gap="large")
with model_col:
    st.subheader("Model")
    model_section()
with data_col:
    st.subheader("Dataset")
    dataset_section()
import_section()
st.divider()
preview()
