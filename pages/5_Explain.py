"""Explain: TextSpan descriptions of what attention heads write, before vs after fine-tuning."""
import streamlit as st

from clipsvd import app_state as ui
from clipsvd.analysis import BUILTIN_CORPORA, TextSpanCache, compare_heads, load_corpus, parse_corpus
from clipsvd.analysis.corpus import default_corpus_for
from clipsvd.analysis.decomposition import (
    DEFAULT_LN_POST_SPLIT,
    LnPostSplit,
    resolve_layers,
    tower_blocks,
    vision_tower,
)
from clipsvd.analysis.runs import images_for_text, run_model_spec, run_textspan
from clipsvd.analysis.textspan import DEFAULT_RANK, DEFAULT_TEXTS_PER_HEAD
from clipsvd.plots import textspan_figure

UPLOAD = "upload a .txt file"


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
    lines = ui.try_call(parse_corpus, uploaded.getvalue().decode("utf-8", errors="replace"), uploaded.name)
    return (uploaded.name, lines) if lines else None


@st.cache_resource(show_spinner="Running TextSpan before and after (forward passes, then text embeddings)…",
                   max_entries=4)
def textspan(_ctx: ui.AnalysisContext, key: tuple[str, str, str], corpus: tuple[str, ...], layers: tuple[int, ...],
             texts_per_head: int, per_class: int, rank: int, ln_post_split: str):
    dataset = ui.analysis_images(_ctx.run, per_class)
    cache = TextSpanCache(ui.runs_root() / ".textspan-cache")
    images_key = f"{_ctx.run.config['dataset']}|test|{per_class}|{_ctx.before.image_size}"
    return run_textspan(_ctx, dataset, corpus, layers, texts_per_head, cache=cache, images_key=images_key,
                        rank=rank, ln_post_split=ln_post_split)


def show_top_images(after, dataset, layer: int, head: int) -> None:
    """The test images this head writes most along one of its chosen texts (after fine-tuning)."""
    texts = after.head(layer, head).texts
    text = st.selectbox("Text", texts, key=f"_w_ts_img_{layer}_{head}")
    images = ui.try_call(images_for_text, after, dataset, layer, head, text, 8)
    if images:
        columns = st.columns(len(images))
        for column, (image, label) in zip(columns, images):
            column.image(image, caption=label, width="stretch")


def show_head(before, after, layer: int, head: int, run_id: str, dataset) -> None:
    fig = textspan_figure(before.head(layer, head), after.head(layer, head))
    st.plotly_chart(fig, key=f"ts-{layer}-{head}")
    ui.figure_downloads(fig, ui.file_stem(run_id, "textspan", f"L{layer}H{head}"), key=f"ts-{layer}-{head}")
    table = compare_heads(before, after, layer, head)
    with st.expander(f"Texts of layer {layer} · head {head}, step by step"):
        st.dataframe(table, hide_index=True, width="stretch")
        ui.table_download(table, ui.file_stem(run_id, "textspan", f"L{layer}H{head}"), key=f"ts-{layer}-{head}")
    with st.expander(f"Images that score highest on a text of layer {layer} · head {head}"):
        show_top_images(after, dataset, layer, head)


ui.page_header("Explain (TextSpan)", "Describe what each attention head writes with texts from a corpus, "
               "before and after fine-tuning.")
CONTEXT = ui.analysis_context()
TOWER = ui.try_call(vision_tower, CONTEXT.before) if CONTEXT is not None else None
if TOWER is not None:
    n_layers = len(tower_blocks(TOWER))
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    with c1:
        corpus = choose_corpus(run_model_spec(CONTEXT.run))
    layers = c2.multiselect("Layers", list(range(n_layers)), default=list(resolve_layers(n_layers, None)),
                            key="_w_ts_layers", help="TextSpan finds most of the effect in the last few layers.")
    texts = c3.slider("Texts per head", 3, 40, DEFAULT_TEXTS_PER_HEAD, key="_w_ts_texts")
    per_class = c4.slider("Images per class", 2, 100, 10, key="_w_ts_images")
    c5, c6 = st.columns(2)
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
    if corpus is not None and layers:
        params = {"run": CONTEXT.run.run_id, "corpus": corpus[0], "n": len(corpus[1]), "layers": sorted(layers),
                  "texts": texts, "images": per_class, "rank": int(rank), "ln_post_split": split}
        if ui.computed_once("textspan", params, "Run TextSpan"):
            result = ui.try_call(textspan, CONTEXT, CONTEXT.key, tuple(corpus[1]), tuple(sorted(layers)), texts,
                                 per_class, int(rank), split)
            if result is not None:
                before, after = result
                importance = after.importance()
                options = [(int(r.layer), int(r.head)) for r in importance.itertuples()]
                st.subheader("Heads")
                shown = st.multiselect("Heads to show (ordered by the variance of their contribution after "
                                       "fine-tuning)", options, default=options[:3], key="_w_ts_heads",
                                       format_func=lambda lh: f"layer {lh[0]} · head {lh[1]}")
                images = ui.analysis_images(CONTEXT.run, per_class)
                for layer, head in shown:
                    show_head(before, after, layer, head, CONTEXT.run.run_id, images)
                with st.expander("Head importance (after)"):
                    st.dataframe(importance, hide_index=True, width="stretch")
                    ui.table_download(importance, ui.file_stem(CONTEXT.run.run_id, "head-importance"),
                                      key="importance")
                ui.table_download(after.frame(), ui.file_stem(CONTEXT.run.run_id, "textspan-after"),
                                  key="ts-all-after", label="All texts after (CSV)")
                ui.table_download(before.frame(), ui.file_stem(CONTEXT.run.run_id, "textspan-before"),
                                  key="ts-all-before", label="All texts before (CSV)")
    elif not layers:
        st.info("Choose at least one layer.")
