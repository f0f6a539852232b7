"""Embeddings: UMAP of test-image features before and after fine-tuning, coloured by class."""
import streamlit as st

from clipsvd import app as ui
from clipsvd.analysis.run_pair import run_umap
from clipsvd.plots import umap_figure


@st.cache_data(show_spinner="Embedding the images and fitting UMAP (the first fit compiles, ~10 s)…", max_entries=8)
def layout(_ctx: ui.AnalysisContext, key: tuple[str, str, str], per_class: int, seed: int):
    return run_umap(_ctx, ui.analysis_images(_ctx.run, per_class), seed)


ui.page_header("Embeddings", "UMAP of test-image features before and after fine-tuning: do the classes separate?")
CONTEXT = ui.analysis_context()
if CONTEXT is not None:
    c1, c2 = st.columns(2)
    per_class = c1.slider("Test images per class", 5, 200, 30, key="_w_umap_per_class",
                          help="A seeded subset of the test split, the same before and after.")
    seed = c2.number_input("UMAP seed", 0, 10_000, 0, key="_w_umap_seed")
    params = {"run": CONTEXT.run.run_id, "per_class": per_class, "seed": int(seed)}
    if ui.computed_once("umap", params, "Compute UMAP"):
        points = ui.try_call(layout, CONTEXT, CONTEXT.key, per_class, int(seed))
        if points is not None:
            fig = umap_figure(points)
            st.plotly_chart(fig, key="umap")
            ui.figure_downloads(fig, ui.file_stem(CONTEXT.run.run_id, "umap", per_class), key="umap")
            st.caption("The two layouts are fitted separately (the feature spaces differ): compare how classes "
                       "cluster, not positions across panels.")
            ui.table_download(points, ui.file_stem(CONTEXT.run.run_id, "umap-points"), key="umap",
                              label="Points (CSV)")
