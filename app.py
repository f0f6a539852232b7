"""clipsvd dashboard, home page: what the tool does, what is selected, where to go next.

Start with `clipsvd dashboard` (or `streamlit run app.py` in the clone; both listen on this machine only); the other pages live in pages/ (Streamlit's multipage folder).
"""
import streamlit as st

from clipsvd import app as ui
from clipsvd.app.text import md
from clipsvd.methods import available_methods, get_method
from clipsvd.models import UNTRAINED_LABEL, WORLD_LABEL

NO_WEIGHTS_NOTE = (
    "**No OpenAI or LAION CLIP weights ship offline.** The default model is *" + WORLD_LABEL + "*: real "
    "pretrained weights, but of an 8M-parameter model that has only seen the generated world. Any other "
    f"architecture starts as a seeded random initialisation, labelled *{UNTRAINED_LABEL}*. Load real CLIP "
    "weights on **Model & data** with a pretrained tag (needs internet or a filled cache) or a local "
    "`.safetensors` / `.pt` / `.bin` checkpoint (path or upload)."
)
WORLD_STORY = (
    "**The generated world** is a synthetic image world whose truth is known — shapes, colours, sizes, "
    "positions, counts and fills — drawn in a *clean* style that the small default CLIP was pretrained on, and in "
    "shifted *microscopy-like* and *sketch* styles for it to adapt to. It is here so that CLIP-SVD and TextSpan "
    "can be seen working, and checked against that known truth, offline and in minutes on a CPU before a "
    "GPU-day is spent on real CLIP and real (biomedical) data."
)

ui.page_header("clipsvd", "Adapt CLIP to a new domain with parameter-efficient fine-tuning, then see what changed.")

st.info(WORLD_STORY, icon=":material/public:")
left, right = st.columns([3, 2], gap="large")
with left:
    st.subheader("Methods")
    st.markdown("\n".join(
        f"- **{get_method(m).display_name}** (`{m}`): {get_method(m).summary}"
        + ("" if get_method(m).supports_novel_classes else " *Training classes only.*")
        for m in available_methods()))
    st.subheader("Analyses")
    st.markdown(
        "- **Singular values**: how far each matrix's σ moved, per encoder, layer and matrix kind; spectra "
        "before/after.\n"
        "- **Heads**: which attention heads changed (OV and QK circuits per head), next to the paper's σ-block "
        "score.\n"
        "- **Explain**: TextSpan descriptions of what the top heads write, before vs after, from a text corpus.\n"
        "- **Embeddings**: UMAP of test-image embeddings before and after adaptation.\n"
        "- **Compare**: methods side by side over seeds (mean ± std), base/novel/HM, parameters, time, size.")

with right:
    st.subheader("Current selection")
    ui.model_notice()
    spec = ui.dataset_spec()
    st.markdown(f"**Dataset** · {md(ui.dataset_label(spec))} · {ui.shots_label(ui.shots())} · "
                f"data seed {ui.data_seed()}")
    st.markdown(f"**Device** · {ui.device()}  \n**Run store** · {md(ui.runs_root())}")
    st.subheader("Go to")
    for page in ("data", "train", "compare", "runs"):
        ui.page_link(page)
    with st.expander("Analysis pages"):
        for page in ui.ANALYSIS_PAGES:
            ui.page_link(page)

st.subheader("What ships offline")
note_left, note_right = st.columns(2)
note_left.info(NO_WEIGHTS_NOTE, icon=":material/memory:")
note_right.info(ui.NO_BIOMEDICAL_NOTE, icon=":material/biotech:")
