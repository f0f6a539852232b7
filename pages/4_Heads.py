"""Heads: which attention heads fine-tuning changed most, measured per head on the weights."""
import streamlit as st

from clipsvd import app as ui
from clipsvd.analysis import legacy_sigma_block_scores
from clipsvd.plots import head_heatmap, head_ranking_bar
from clipsvd.plots.heads import MEASURE_TITLES


@st.cache_data(show_spinner=False, max_entries=8)
def legacy(_ctx: ui.AnalysisContext, key: tuple[str, str, str], encoder: str):
    return legacy_sigma_block_scores(_ctx.method, encoder)


def legacy_section(ctx: ui.AnalysisContext, encoder: str) -> None:
    with st.expander("The CLIP-SVD paper's σ-block \"head\" score (not a per-head measure)"):
        st.caption("The paper cuts the sorted σ of v and out into blocks of the head size and calls block h "
                   "\"head h\". σ are sorted by size and every singular vector spans all heads, so block h is the "
                   "h-th group of singular directions, not attention head h. Shown for comparison only.")
        table = ui.try_call(legacy, ctx, ctx.key, encoder)
        if table is not None:
            fig = head_heatmap(table, "legacy_sigma_block", "σ-block score by layer (paper's \"heads\")")
            st.plotly_chart(fig, key="legacy-heatmap")
            ui.figure_downloads(fig, ui.file_stem(ctx.run.run_id, "legacy-sigma-blocks", encoder), key="legacy")
            ui.table_download(table, ui.file_stem(ctx.run.run_id, "legacy-sigma-blocks", encoder), key="legacy")


ui.page_header("Heads", "Which attention heads changed: per-head OV and QK circuits before vs after fine-tuning.")
CONTEXT = ui.analysis_context()
if CONTEXT is not None:
    c1, c2, c3 = st.columns(3)
    encoder = c1.selectbox("Encoder", ("visual", "text"), key="_w_heads_encoder")
    rank_by = ui.pick_heads_measure(c2, "heads")
    top = c3.slider("Heads in the ranking", 5, 50, 15, key="_w_heads_top")
    table = ui.head_ranking(CONTEXT, encoder, rank_by)
    if table is not None:
        ui.unchanged_note(CONTEXT, bool((table[rank_by] > 0).any()), f"{encoder} attention heads")
        best = table.iloc[0]
        cols = st.columns(3)
        cols[0].metric("Heads", len(table))
        cols[1].metric("Most changed", f"layer {best['layer']} · head {best['head']}")
        cols[2].metric(MEASURE_TITLES[rank_by], f"{best[rank_by]:.3g}")
        left, right = st.columns(2)
        with left:
            bar = head_ranking_bar(table, rank_by, top)
            st.plotly_chart(bar, key="head-bar")
            ui.figure_downloads(bar, ui.file_stem(CONTEXT.run.run_id, "head-ranking", encoder, rank_by), key="bar")
        with right:
            heat = head_heatmap(table, rank_by)
            st.plotly_chart(heat, key="head-heatmap")
            ui.figure_downloads(heat, ui.file_stem(CONTEXT.run.run_id, "head-heatmap", encoder, rank_by),
                                key="heat")
        with st.expander("Table (all heads, ranked)"):
            st.dataframe(table, hide_index=True, width="stretch")
            ui.table_download(table, ui.file_stem(CONTEXT.run.run_id, "head-changes", encoder), key="heads")
        if encoder == "visual":
            ui.page_link("explain", "What did these heads start or stop writing? Explain them",
                         run=CONTEXT.run.run_id, measure=rank_by)
        if CONTEXT.method.singular_value_weights():  # CLIP-SVD, attached and unmerged
            legacy_section(CONTEXT, encoder)
