"""Explain: what the heads fine-tuning changed most started or stopped writing, in words (TextSpan before vs
after), how far each explanation moved, and one report of it all."""

import streamlit as st

from clipsvd import app as ui
from clipsvd.analysis import BUILTIN_CORPORA, compare_heads, load_corpus, parse_corpus, shared_textspan_cache
from clipsvd.app.text import md
from clipsvd.analysis.corpus import default_corpus_for
from clipsvd.analysis.decomposition import (
    DEFAULT_LN_POST_SPLIT,
    LnPostSplit,
    resolve_layers,
    tower_blocks,
    vision_tower,
)
from clipsvd.analysis.explanation_shift import (
    ENTERED,
    KEPT,
    SHIFT_COLUMNS,
    SHIFT_TOP_K,
    by_explanation_shift,
    explanation_shifts,
    head_shift,
    layers_to_explain,
    marked_texts,
    shift_correlation,
    top_changed_heads,
)
from clipsvd.analysis.run_pair import RunPair, images_for_text, run_model_spec, run_textspan
from clipsvd.analysis.textspan import DEFAULT_RANK, DEFAULT_TEXTS_PER_HEAD
from clipsvd.analysis.textspan_cache import analysis_images_key
from clipsvd.plots import find_browser, textspan_figure
from clipsvd.plots.explanation import SHIFT_TITLES, explanation_shift_figure
from clipsvd.plots.heads import MEASURE_TITLES
from clipsvd.report import analyse_run, explanation_latex, html_bytes_to_pdf, report_html

UPLOAD = "upload a .txt file"
BY_CHANGE, BY_SHIFT, BY_VARIANCE = ("weight change (Heads ranking)", "explanation shift",
                                   "variance after fine-tuning")
UNCHANGED_INSTEAD = ("Nothing to rank by weight change: heads are ordered by explanation shift instead — which "
                     "heads' words moved although their weights did not (what the run trained changes what the "
                     "heads' outputs mean).")
MARK_BADGES = {KEPT: ":gray-badge[kept]", ENTERED: ":blue-badge[entered]", "left": ":orange-badge[left]"}
SHIFT_HELP = {"text_shift": "Share of the head's first k texts that were replaced (1 − overlap of the two top-k "
                            "sets). Counts a paraphrase as a change.",
              "span_shift": "Mean sin² of the principal angles between the spans of the before and after texts "
                            "(embedded by the pretrained text encoder, centred): 0 = the head still writes along "
                            "the same directions, 1 = orthogonal ones. A paraphrase barely moves it."}


def choose_corpus(model_spec) -> tuple[str, list[str]] | None:
    """(name, lines) of the corpus TextSpan picks descriptions from; preset to the one that suits the model."""
    default = default_corpus_for(model_spec)
    options = (*BUILTIN_CORPORA, UPLOAD)
    choice = st.radio("Corpus", options, index=options.index(default), horizontal=True,
                      key=f"_w_ts_corpus-{default}",
                      help="world: descriptions of the generated world, tagged by factor (shape, colour, size, "
                           "position, count, fill, style); biomedical: imaging descriptions; general: everyday "
                           f"visual descriptions. Preset to '{default}' for this run's model.")
    if choice != UPLOAD:
        lines = ui.try_call(load_corpus, choice)
        return (choice, lines) if lines else None
    uploaded = st.file_uploader("Corpus (one description per line, UTF-8)", type=["txt"], key="_w_ts_upload")
    if uploaded is None:
        return None
    lines = ui.try_call(parse_corpus, uploaded.getvalue(), uploaded.name)
    return (uploaded.name, lines) if lines else None


@st.cache_resource(show_spinner="Running TextSpan before and after (forward passes, then text embeddings)…",
                   max_entries=4)
def textspan(_ctx: ui.AnalysisContext, key: tuple[str, ...], corpus: tuple[str, ...], layers: tuple[int, ...],
             texts_per_head: int, per_class: int, rank: int, ln_post_split: str):
    dataset = ui.analysis_images(_ctx.run, per_class)
    return run_textspan(_ctx, dataset, corpus, layers, texts_per_head, cache=shared_textspan_cache(),
                        images_key=analysis_images_key(_ctx, per_class), rank=rank, ln_post_split=ln_post_split)


_md = md  # a corpus text shown literally in markdown (no emphasis, links, colours or emoji shortcodes)


def show_marked(column, title: str, marks, side: str) -> None:
    lines = [f"{row.step}. {MARK_BADGES[getattr(row, f'mark_{side}')]} {_md(getattr(row, f'text_{side}'))} "
             f"· {100 * getattr(row, f'explained_{side}'):.1f}%"
             for row in marks.itertuples() if getattr(row, f"text_{side}") is not None]
    column.markdown(f"**{title}**\n\n" + "\n".join(lines))


def show_head(before, after, row, n_heads: int, measure: str | None, k: int, run_id: str, dataset,
              names: tuple[str, str] = ("pretrained", "fine-tuned")) -> None:
    """One head: its rank (by weight change, or by explanation shift when `measure` is None: no weight
    changed), both shift scores, the first k texts side by side with their marks, the images for the texts
    that entered; the full lists and any text's images below."""
    layer, head = int(row["layer"]), int(row["head"])
    rank = int(row["rank"] if measure else row["shift_rank"])
    st.markdown(f"#### #{rank} · layer {layer} · head {head}")
    shift = head_shift(before.head(layer, head), after.head(layer, head), before.text_embeddings, before.corpus, k)
    cols = st.columns(5 if measure else 4)
    if measure:
        cols[0].metric("Weight-change rank", f"#{rank} of {n_heads}")
        cols[1].metric(measure, f"{row[measure]:.3g}", help=MEASURE_TITLES[measure])
    else:
        cols[0].metric("Explanation-shift rank", f"#{rank} of {n_heads} analysed",
                       help="By span shift, then text shift: no head's attention weights changed.")
    cols[-3].metric("Text shift", f"{shift.text_shift:.2f}", help=SHIFT_HELP["text_shift"])
    cols[-2].metric("Span shift", f"{shift.span_shift:.2f}", help=SHIFT_HELP["span_shift"])
    cols[-1].metric(f"Explained by top {k}", f"{100 * shift.explained_after:.1f}%",
                   f"{100 * (shift.explained_after - shift.explained_before):+.1f} points vs before",
                   delta_color="off", help="Share of the head's variance over the images that its first k texts "
                                           "explain, after fine-tuning (before in the delta).")
    marks = marked_texts(before.head(layer, head), after.head(layer, head), k)
    left, right = st.columns(2)
    show_marked(left, f"Before ({md(names[0])}) · {100 * shift.explained_before:.1f}% explained", marks, "before")
    show_marked(right, f"After ({md(names[1])}) · {100 * shift.explained_after:.1f}% explained", marks, "after")
    for text in shift.entered[:3]:
        images = ui.try_call(images_for_text, after, dataset, layer, head, text, 6)
        if images:
            st.caption(f"Entered: “{_md(text)}” — the test images this head writes most along it")
            for column, (image, label) in zip(st.columns(6), images):
                column.image(image, caption=_md(label), width="stretch")
    fig = textspan_figure(before.head(layer, head), after.head(layer, head))
    with st.expander(f"All texts of layer {layer} · head {head} with the variance each explains"):
        st.plotly_chart(fig, key=f"ts-{layer}-{head}")
        ui.figure_downloads(fig, ui.file_stem(run_id, "textspan", f"L{layer}H{head}"), key=f"ts-{layer}-{head}")
        table = in_percent(compare_heads(before, after, layer, head))
        st.dataframe(table, hide_index=True, width="stretch", column_config=ui.number_columns(table))
        ui.table_download(table, ui.file_stem(run_id, "textspan", f"L{layer}H{head}"), key=f"ts-{layer}-{head}")
    with st.expander(f"Images that score highest on any text of layer {layer} · head {head}"):
        texts = after.head(layer, head).texts
        text = st.selectbox("Text", texts, key=f"_w_ts_img_{layer}_{head}")
        images = ui.try_call(images_for_text, after, dataset, layer, head, text, 8)
        if images:
            for column, (image, label) in zip(st.columns(len(images)), images):
                column.image(image, caption=_md(label), width="stretch")


def in_percent(table):
    """Explained variance in %, as in the figure (the analysis returns fractions)."""
    columns = {c: f"{c} (%)" for c in ("explained_before", "explained_after") if c in table}
    return table.assign(**{c: 100 * table[c] for c in columns}).rename(columns=columns)


def summary_section(table, measure: str, ranks_by_weight: bool, k: int, run_id: str) -> None:
    if ranks_by_weight:
        st.subheader("Every analysed head: weight change vs explanation shift")
        if len(table) >= 3:
            st.markdown("Spearman rank correlation of **" + measure + "** with the explanation shift across heads: "
                        + "; ".join(f"{SHIFT_TITLES[c].split(' (')[0]} {shift_correlation(table, measure, c).text()}"
                                    for c in SHIFT_COLUMNS) + ".")
    else:
        st.subheader("Every analysed head by explanation shift")
        st.caption(f"No correlation with {measure}: no head's weights changed under it.")
    fig = explanation_shift_figure(table, measure)
    st.plotly_chart(fig, key="shift-scatter")
    ui.figure_downloads(fig, ui.file_stem(run_id, "explanation-shift", measure), key="shift-scatter")
    st.dataframe(table, hide_index=True, width="stretch", column_config=ui.number_columns(table))
    row = st.container(horizontal=True, gap="small")
    with row:
        ui.table_download(table, ui.file_stem(run_id, "explanation-shift"), key="shifts", label="Table (CSV)")
        st.download_button("Table (LaTeX, booktabs)", explanation_latex(table, measure),
                           file_name=f"{ui.file_stem(run_id, 'explanation-shift')}.tex", mime="text/x-tex",
                           key="dl-shifts-tex", on_click="ignore", icon=":material/download:",
                           help=f"Rank, weight change, both shifts over the first {k} texts, variance explained "
                                "before/after and the first 3 texts before/after, escaped, ready for a paper")


def report_section(ctx: ui.AnalysisContext, dataset, result, settings: dict) -> None:
    """Build one HTML report (and a PDF) of this run, optionally beside a second run, on request."""
    st.subheader("Report")
    st.caption("One self-contained HTML file with this run's config, metrics, σ shifts, head ranking, these "
               "explanations and UMAP (plotly inside: opens offline), and a PDF of it — what you send a co-author.")
    others = [run for run in ui.run_store().list() if run.status == "completed" and run.run_id != ctx.run.run_id]
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    compare = c1.selectbox("Compare with (side by side)", [None, *[run.run_id for run in others]],
                           key="_w_report_compare",
                           format_func=lambda run_id: "— this run only —" if run_id is None else
                           ui.run_title(next(run for run in others if run.run_id == run_id)))
    with_pdf = c2.checkbox("Also a PDF", value=find_browser() is not None, key="_w_report_pdf",
                           disabled=find_browser() is None, help="Printed by headless Chromium")
    params = {**settings, "compare": compare, "pdf": with_pdf}
    if st.button("Build report", key="build_report", icon=":material/description:"):
        with st.spinner("Building the report: σ shifts, head ranking, explanations, UMAP…"):
            files = ui.try_call(build_report, ctx, dataset, result, settings, compare, with_pdf)
        if files is not None:
            st.session_state["report-files"] = {**files, "params": params}
    files = st.session_state.get("report-files")
    if files and files["params"] == params:
        row = st.container(horizontal=True, gap="small")
        row.download_button("Report (HTML)", files["html"], file_name=f"{files['name']}.html", mime="text/html",
                            key="dl-report-html", on_click="ignore", icon=":material/download:")
        if files.get("pdf"):
            row.download_button("Report (PDF)", files["pdf"], file_name=f"{files['name']}.pdf",
                                mime="application/pdf", key="dl-report-pdf", on_click="ignore",
                                icon=":material/download:")
        for problem in files["failures"]:
            st.warning(problem)


def build_report(ctx: ui.AnalysisContext, dataset, result, settings: dict, compare: str | None,
                 with_pdf: bool) -> dict:
    common = dict(corpus=settings["corpus"], corpus_lines=settings["lines"], measure=settings["measure"],
                  layers=settings["layers"], texts_per_head=settings["texts"], k=settings["k"],
                  top_heads=settings["top_n"], rank=settings["rank"], ln_post_split=settings["split"],
                  cache=shared_textspan_cache())
    analyses = [analyse_run(ctx, dataset, textspan=result, model_label=ui.run_model_label(ctx.run), **common)]
    if compare:
        run = ui.run_store().load(compare)
        restored = ui.restored_run(str(run.path.parent), run.run_id, ctx.device)
        other = RunPair(run, ui.pretrained_model(run_model_spec(run), ctx.device), restored[1])
        analyses.append(analyse_run(other, ui.analysis_images(run, settings["images"]),
                                    images_key=analysis_images_key(other, settings["images"]),
                                    model_label=ui.run_model_label(run), **common))
    text = report_html(analyses)
    failures = [f"{a.run.run_id}: {name} could not be computed ({reason})"
                for a in analyses for name, reason in a.failures.items()]
    return {"html": text.encode("utf-8"), "pdf": html_bytes_to_pdf(text) if with_pdf else None,
            "name": ui.file_stem("report", *[a.run.run_id for a in analyses]), "failures": failures}


def heads_to_show(before, after, table, measure: str, ranks_by_weight: bool, top_n: int) -> list[tuple[int, int]]:
    """The heads to explain: by default the top-N of the Heads ranking (among the analysed layers), or of the
    explanation shift where no weight changed; the other orderings stay available."""
    orders = (BY_CHANGE, BY_SHIFT, BY_VARIANCE) if ranks_by_weight else (BY_SHIFT, BY_VARIANCE)
    order = st.radio("Order heads by", orders, horizontal=True,
                     key="_w_ts_order" if ranks_by_weight else "_w_ts_order-unchanged",
                     help="weight change: the ranking of the Heads page under the measure chosen above; "
                          "explanation shift: how far each head's texts moved (span shift, then text shift); "
                          "variance: how much each head's direct contribution varies over the images after "
                          "fine-tuning.")
    shifted = by_explanation_shift(table)
    row_of = {(int(r.layer), int(r.head)): r for r in table.itertuples()}
    shift_of = {(int(r.layer), int(r.head)): r for r in shifted.itertuples()}
    if order == BY_CHANGE:
        options = top_changed_heads(table, len(table))
    elif order == BY_SHIFT:
        options = [(int(r.layer), int(r.head)) for r in shifted.itertuples()]
    else:
        options = [(int(r.layer), int(r.head)) for r in after.importance().itertuples()]

    def label(lh: tuple[int, int]) -> str:
        if ranks_by_weight and order != BY_SHIFT:
            r = row_of[lh]
            return f"#{r.rank} · layer {lh[0]} · head {lh[1]} · {measure} {getattr(r, measure):.3g}"
        r = shift_of[lh]
        return f"#{r.shift_rank} · layer {lh[0]} · head {lh[1]} · span shift {r.span_shift:.2f}"

    return st.multiselect("Heads to explain", options, default=options[:top_n], format_func=label,
                          key=f"_w_ts_heads-{order}-{measure}-{top_n}")


ui.page_header("Explain (TextSpan)", "What the heads that fine-tuning changed most started or stopped writing: "
               "TextSpan texts per head before vs after, and how far each explanation moved.")
CONTEXT = ui.analysis_context(compare=True)
TOWER = ui.try_call(vision_tower, CONTEXT.before) if CONTEXT is not None else None
state = None  # what the run did to the attention weights (HeadChange), once ranked
if TOWER is not None:
    n_layers = len(tower_blocks(TOWER))
    m1, m2 = st.columns([2, 1])
    measure = ui.pick_heads_measure(m1, "explain")
    ranking = ui.head_ranking(CONTEXT, "visual", measure)
    state = (ui.heads_note(CONTEXT, ranking, measure, "image tower's attention weights", UNCHANGED_INSTEAD)
             if ranking is not None else None)
    BY_WEIGHT = state is not None and state.ranks_by_weight
    top_n = m2.slider("Most-changed heads to explain" if BY_WEIGHT else "Heads to explain", 1, 12, 3,
                      key="_w_ts_top_n", help="Explain starts from the top of the Heads ranking under this measure."
                      if BY_WEIGHT else "Explain starts from the heads whose explanation moved most.")
if TOWER is not None and (state is None or state.weights_differ):  # zero-shot, CoOp: nothing can differ; said above
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    with c1:
        corpus = choose_corpus(run_model_spec(CONTEXT.run))
    default_layers = list(layers_to_explain(n_layers, ranking, top_n, measure) if ranking is not None
                          else resolve_layers(n_layers, None))
    layers = c2.multiselect("Layers", list(range(n_layers)), default=default_layers,
                            key=f"_w_ts_layers-{'-'.join(map(str, default_layers))}",
                            help="The last four (where TextSpan finds most of the effect) and those of the "
                                 "most-changed heads.")
    texts = c3.slider("Texts per head", 3, 40, DEFAULT_TEXTS_PER_HEAD, key="_w_ts_texts")
    per_class = c4.slider("Images per class", 2, 100, 10, key="_w_ts_images")
    c5, c6, c7 = st.columns(3)
    rank = c5.number_input("Rank", 1, 4096, DEFAULT_RANK, key="_w_ts_rank",
                           help="How many top singular directions of a head's contributions the texts are projected "
                                "onto, capped by the number of images and the embedding size. Default 80: the "
                                "official code's --w_ov_rank.")
    splits = [s.value for s in LnPostSplit]
    split = c6.selectbox("ln_post split", splits, index=splits.index(DEFAULT_LN_POST_SPLIT.value),
                         key="_w_ts_split",
                         help="How ln_post's mean μ and bias β are shared among the residual terms. official "
                              "(clip_text_span): μ/((2L+1)H) and β/((2L+1)H) per head, and each head carries 1/H of "
                              "its layer's out_proj bias. even (this project's earlier convention): μ/K and β/K for "
                              "each of K = 1 + L(H+2) terms, the bias in the rest. Both sum to the embedding; "
                              "the per-head terms differ.")
    k = c7.slider("Texts compared per head (k)", 1, 10, min(SHIFT_TOP_K, texts), key="_w_ts_k",
                  help="Entered / left / kept and both shift scores use each head's first k texts.")
    if corpus is not None and layers and ranking is not None:
        params = {"run": CONTEXT.run.run_id, "compare": CONTEXT.key[3], "corpus": corpus[0], "n": len(corpus[1]),
                  "layers": sorted(layers),
                  "texts": texts, "images": per_class, "rank": int(rank), "ln_post_split": split}
        if ui.computed_once("textspan", params, "Run TextSpan"):
            result = ui.try_call(textspan, CONTEXT, CONTEXT.key, tuple(corpus[1]), tuple(sorted(layers)), texts,
                                 per_class, int(rank), split)
            table = ui.try_call(explanation_shifts, *result, ranking, min(k, texts)) if result is not None else None
            if table is not None:
                before, after = result
                k = min(k, texts)
                images = ui.analysis_images(CONTEXT.run, per_class)
                missing = [lh for lh in top_changed_heads(ranking, top_n, measure=measure) if lh[0] not in layers]
                if missing:
                    st.caption(f"{len(missing)} of the {top_n} most-changed heads are in layers not analysed "
                               f"({', '.join(f'layer {l} · head {h}' for l, h in missing)}): add their layers.")
                st.subheader("Heads")
                shown = table if BY_WEIGHT else by_explanation_shift(table)
                chosen = heads_to_show(before, after, table, measure, BY_WEIGHT, top_n)
                if chosen:
                    ui.page_link("verify", "Ablate these heads", run=CONTEXT.run.run_id,
                                 heads=",".join(f"L{layer}.H{head}" for layer, head in chosen))
                for layer, head in chosen:
                    row = shown[(shown["layer"] == layer) & (shown["head"] == head)].iloc[0]
                    show_head(before, after, row, len(ranking) if BY_WEIGHT else len(shown),
                              measure if BY_WEIGHT else None, k, CONTEXT.run.run_id, images,
                              (CONTEXT.before_name, CONTEXT.after_name))
                summary_section(shown, measure, BY_WEIGHT, k, CONTEXT.run.run_id)
                with st.expander("Head importance (variance of each head's contribution, after)"):
                    importance = after.importance()
                    st.dataframe(importance, hide_index=True, width="stretch",
                                 column_config=ui.number_columns(importance))
                    ui.table_download(importance, ui.file_stem(CONTEXT.run.run_id, "head-importance"),
                                      key="importance")
                ui.table_download(after.frame(), ui.file_stem(CONTEXT.run.run_id, "textspan-after"),
                                  key="ts-all-after", label="All texts after (CSV)")
                ui.table_download(before.frame(), ui.file_stem(CONTEXT.run.run_id, "textspan-before"),
                                  key="ts-all-before", label="All texts before (CSV)")
                report_section(CONTEXT, images, result, {
                    "corpus": corpus[0], "lines": tuple(corpus[1]), "measure": measure, "layers": sorted(layers),
                    "texts": texts, "k": k, "top_n": top_n, "rank": int(rank), "split": split,
                    "images": per_class})
    elif not layers:
        st.info("Choose at least one layer.")
