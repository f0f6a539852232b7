"""Heads: which attention heads fine-tuning changed most, measured per head on the weights."""
import streamlit as st

from clipsvd import app as ui
from clipsvd.analysis import legacy_sigma_block_scores
from clipsvd.plots import head_heatmap, head_ranking_bar
from clipsvd.plots.heads import MEASURE_TITLES

DEFAULT_TOP = 15  # heads in the ranking bar, when that many exist
MEASURES_HELP = r"""
Every attention head $h$ of a layer reads with its query and key rows $W_Q^h, W_K^h$, writes with its value rows
$W_V^h$ and its slice of the output projection $W_O^h$. Each measure compares the weights after fine-tuning with
those before, relative to before (0: unchanged):

- **ov_change** — $\lVert \Delta (W_O^h W_V^h) \rVert_F / \lVert W_O^h W_V^h \rVert_F$: the OV circuit, *what* the
  head writes into the residual stream.
- **value_change** — $\lVert \Delta W_V^h \rVert_F / \lVert W_V^h \rVert_F$: the head's value rows alone.
- **qk_change** — $\lVert \Delta (W_Q^{h\top} W_K^h) \rVert_F / \lVert W_Q^{h\top} W_K^h \rVert_F$: the QK circuit,
  *where* the head looks.
- **out_change** — $\lVert \Delta W_O^h \rVert_F / \lVert W_O^h \rVert_F$: the head's columns of the output
  projection.

Matrix kinds in the other pages: **q, k, v** are the attention's query, key and value projections, **out** its
output projection; **fc** the MLP's expansion and **proj** its contraction.
"""


@st.cache_data(show_spinner=False, max_entries=8)
def legacy(_ctx: ui.AnalysisContext, key: tuple[str, ...], encoder: str):
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


def ranking_section(ctx: ui.AnalysisContext, encoder: str, rank_by: str, table, top: int) -> None:
    """The most-changed head, the ranking bar, the layer × head heatmap and the table."""
    best = table.iloc[0]
    cols = st.columns(3)
    cols[0].metric("Heads", len(table))
    cols[1].metric("Most changed", f"layer {best['layer']} · head {best['head']}")
    cols[2].metric(rank_by, f"{best[rank_by]:.3g}", help=MEASURE_TITLES[rank_by])
    left, right = st.columns(2)
    with left:
        bar = head_ranking_bar(table, rank_by, top)
        st.plotly_chart(bar, key="head-bar")
        ui.figure_downloads(bar, ui.file_stem(ctx.run.run_id, "head-ranking", encoder, rank_by), key="bar")
    with right:
        heat = head_heatmap(table, rank_by)
        st.plotly_chart(heat, key="head-heatmap")
        ui.figure_downloads(heat, ui.file_stem(ctx.run.run_id, "head-heatmap", encoder, rank_by), key="heat")
    with st.expander("Table (all heads, ranked)"):
        st.dataframe(table, hide_index=True, width="stretch", column_config=ui.number_columns(table))
        ui.table_download(table, ui.file_stem(ctx.run.run_id, "head-changes", encoder), key="heads")
    if encoder == "visual":
        ui.page_link("explain", "What did these heads start or stop writing? Explain them",
                     run=ctx.run.run_id, measure=rank_by,
                     **({"compare": ctx.reference.run_id} if ctx.reference is not None else {}))
        ui.page_link("verify", "Ablate these heads", run=ctx.run.run_id, measure=rank_by, top=str(top))


ui.page_header("Heads", "Which attention heads changed: per-head OV and QK circuits before vs after fine-tuning.")
with st.expander("What the measures and matrix kinds mean"):
    st.markdown(MEASURES_HELP)
CONTEXT = ui.analysis_context(compare=True)
if CONTEXT is not None:
    c1, c2, c3 = st.columns(3)
    encoder = c1.selectbox("Encoder", ("visual", "text"), key="_w_heads_encoder")
    rank_by = ui.pick_heads_measure(c2, "heads")
    table = ui.head_ranking(CONTEXT, encoder, rank_by)
    state = ui.heads_note(CONTEXT, table, rank_by, f"{encoder} attention heads",
                          "Explain shows which heads' words moved although their weights did not."
                          if encoder == "visual" else "") if table is not None else None
    if state is not None and not state.ranks_by_weight:  # one line: no chart of zeros, no "top" head
        if encoder == "visual" and state.weights_differ:  # no weight changed: Explain would show one tower twice
            ui.page_link("explain", "Heads by explanation shift: Explain them", run=CONTEXT.run.run_id,
                         measure=rank_by)
    elif table is not None:
        n_heads = len(table)
        top = (c3.slider("Heads in the ranking", 1, n_heads, min(DEFAULT_TOP, n_heads), key="_w_heads_top",
                         help=f"Of the {n_heads} heads of the {encoder} tower.") if n_heads > 1 else 1)
        ranking_section(CONTEXT, encoder, rank_by, table, top)
        if CONTEXT.reference is None and CONTEXT.method.singular_value_weights():  # CLIP-SVD, unmerged, vs σ₀
            legacy_section(CONTEXT, encoder)
