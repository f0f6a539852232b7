"""Singular values: how far each matrix's σ moved during fine-tuning, and one matrix's spectrum."""
import streamlit as st

from clipsvd import app as ui
from clipsvd.analysis import spectra
from clipsvd.analysis.run_pair import DEFAULT_ROTATION_TOP, run_sv_rotation, run_sv_shifts
from clipsvd.models.layout import ENCODERS, MATRIX_KINDS
from clipsvd.plots import spectra_figure, sv_rotation_heatmap, sv_shift_heatmap
from clipsvd.plots.weights import MEASURE_TITLES, ROTATION_TITLES

ROTATION_HELP = ("For each matrix, the span of its top singular vectors before vs after: the largest principal "
                 "angle between the output (left) spans and between the input (right) spans — 0° the directions "
                 "are the same subspace, 90° a direction left it — and the smallest |cos| between vectors matched "
                 "by rank (1: each kept; it drops where two σ change places although the span holds).")


@st.cache_data(show_spinner="Decomposing every matrix before and after…", max_entries=8)
def shifts_table(_ctx: ui.AnalysisContext, key: tuple[str, ...]):
    return run_sv_shifts(_ctx)


@st.cache_data(show_spinner="Decomposing every matrix before and after (singular vectors)…", max_entries=8)
def rotation_table(_ctx: ui.AnalysisContext, key: tuple[str, ...], top: int):
    return run_sv_rotation(_ctx, top)


def rotation_section(ctx: ui.AnalysisContext) -> None:
    """The second view of a changed matrix: not how much σ moved, but how far the singular vectors turned."""
    st.subheader("How far the top singular vectors turned")
    st.caption(ROTATION_HELP)
    if ctx.reference is None and ctx.method.singular_value_weights():
        st.caption("CLIP-SVD trains only σ and keeps every singular vector, so the angles are 0 by construction; "
                   "a nonzero angle can only come from σ changing places across the top-k boundary.")
    r1, r2 = st.columns([1, 3])
    top = int(r1.number_input("Top singular vectors", 1, 512, DEFAULT_ROTATION_TOP, key="_w_rot_top",
                              help="How many of the largest singular vectors of each matrix form the compared span."))
    value = r2.selectbox("Measure", list(ROTATION_TITLES), key="_w_rot_measure",
                         format_func=lambda m: f"{m} ({ROTATION_TITLES[m]})")
    rotation = ui.try_call(rotation_table, ctx, ctx.key, top)
    if rotation is None:
        return
    fig = sv_rotation_heatmap(rotation, value)
    st.plotly_chart(fig, key="rotation-heatmap")
    ui.figure_downloads(fig, ui.file_stem(ctx.run.run_id, "singular-vector-turn", value, f"top{top}"), key="rotation")
    with st.expander("Table"):
        st.dataframe(rotation, hide_index=True, width="stretch", column_config=ui.number_columns(rotation))
        ui.table_download(rotation, ui.file_stem(ctx.run.run_id, "singular-vector-turn", f"top{top}"),
                          key="rotation")


@st.cache_data(show_spinner="Computing the spectrum…", max_entries=32)
def spectrum(_ctx: ui.AnalysisContext, key: tuple[str, ...], encoder: str, layer: int, kind: str):
    return spectra(_ctx.before, _ctx.method, encoder, layer, kind)


ui.page_header("Singular values", "Where training moved the singular values σ of each attention and MLP matrix.")
CONTEXT = ui.analysis_context(compare=True)
if CONTEXT is not None and not CONTEXT.changes_weights:  # CoOp, linear probe, zero-shot: one line
    ui.unchanged_note(CONTEXT, False, "attention or MLP matrices")
elif CONTEXT is not None:
    shifts = ui.try_call(shifts_table, CONTEXT, CONTEXT.key)
    if shifts is not None and not (shifts["rel_change"] > 0).any():
        ui.unchanged_note(CONTEXT, False, "attention or MLP matrices")  # one line, no all-zero charts
    elif shifts is not None:
        c1, c2 = st.columns([1, 3])
        measure = c1.selectbox("Measure", list(MEASURE_TITLES), key="_w_sv_measure",
                               format_func=lambda m: f"{m} ({MEASURE_TITLES[m]})")
        top = shifts.sort_values(measure, key=abs, ascending=False).iloc[0]
        cols = st.columns(3)
        cols[0].metric("Matrices", len(shifts))
        cols[1].metric("Matrices changed", int((shifts["rel_change"] > 0).sum()))
        cols[2].metric("Largest change", f"{top['encoder']} L{top['layer']} {top['kind']}",
                       f"{MEASURE_TITLES[measure]} = {top[measure]:.3g}", delta_color="off", delta_arrow="off")
        fig = sv_shift_heatmap(shifts, measure)
        st.plotly_chart(fig, key="sv-heatmap")
        ui.figure_downloads(fig, ui.file_stem(CONTEXT.run.run_id, "sigma-shift", measure), key="heatmap")
        if CONTEXT.reference is not None:
            st.caption(f"Against {CONTEXT.before_name}: σ of both runs' weights are recomputed and matched by rank.")
        elif CONTEXT.method.singular_value_weights():
            st.caption("CLIP-SVD: each trained σ is compared with its own initial value (same singular vectors).")
        else:
            st.caption("This method trains plain weights: σ are recomputed after training and matched by rank.")
        with st.expander("Table"):
            st.dataframe(shifts, hide_index=True, width="stretch")
            ui.table_download(shifts, ui.file_stem(CONTEXT.run.run_id, "sigma-shifts"), key="shifts")

        st.subheader("Spectrum of one matrix")
        st.caption("q, k, v: attention query/key/value projections; out: attention output projection; fc: MLP "
                   "expansion; proj: MLP contraction.")
        s1, s2, s3, s4 = st.columns([1, 1, 3, 1], vertical_alignment="bottom")
        encoder = s1.selectbox("Encoder", [e for e in ENCODERS if e in set(shifts["encoder"])], key="_w_sp_enc")
        layers = sorted(shifts.loc[shifts["encoder"] == encoder, "layer"].unique())
        layer = s2.selectbox("Layer", layers, index=len(layers) - 1, key="_w_sp_layer")
        # every kind in sight at once (q … proj), in a column wide enough for all six
        kind = s3.radio("Matrix", MATRIX_KINDS, horizontal=True, key="_w_sp_kind")
        log_y = s4.toggle("Log scale", value=True, key="_w_sp_log")
        table = ui.try_call(spectrum, CONTEXT, CONTEXT.key, encoder, int(layer), kind)
        if table is not None:
            spec_fig = spectra_figure(table, f"σ of {encoder} layer {layer} · {kind}", log_y=log_y)
            st.plotly_chart(spec_fig, key="spectrum")
            ui.figure_downloads(spec_fig, ui.file_stem(CONTEXT.run.run_id, "spectrum", encoder, layer, kind),
                                key="spectrum")
        rotation_section(CONTEXT)
