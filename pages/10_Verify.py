"""Verify: are the explanations true? Mean-ablate the chosen heads in the pretrained and the fine-tuned model
(accuracy overall, per class, per world factor; similarity to the heads' own texts) and see where on the image
they write the texts that entered or left their explanation."""
import streamlit as st

from clipsvd import app as ui
from clipsvd.analysis import BUILTIN_CORPORA, load_corpus
from clipsvd.analysis.ablation import check_evaluation_data, check_method, effects_latex, effects_wide, tower_shape
from clipsvd.analysis.corpus import default_corpus_for
from clipsvd.analysis.run_pair import run_model_spec
from clipsvd.analysis.verification import CHOICE_TITLES, CHOICES, HeadChoice
from clipsvd.app import verify as page
from clipsvd.plots.verification import ablation_figure, patch_map_figure

TABLE_KEYS = {"overall": ("ablated", ("accuracy", "accuracy_ablated", "drop")),
              "per_class": ("class", ("accuracy", "accuracy_ablated", "drop")),
              "factors": ("factor", ("accuracy", "accuracy_ablated", "drop")),
              "texts": ("text", ("similarity", "similarity_ablated", "spread", "spread_ablated", "spread_drop"))}
TABLE_TITLES = {"overall": "Accuracy, overall (%)", "per_class": "Accuracy per class (%)",
                "factors": "Zero-shot accuracy per world factor (%): which factor do these heads carry?",
                "texts": "Cosine of the image embedding with each ablated head's top texts",
                "ground_truth": "Where the heads read: pointing game and mass in the object's mask vs chance"}
TABLE_HELP = {
    "texts": "Mean ablation keeps a head's average, so what it removes is the variation it adds along a text: a "
             "spread (standard deviation over the images) that falls when the head is ablated says the head "
             "carries that text.",
    "ground_truth": "Each head's patch map along its first text, on every analysed image. Pointing game: share of "
                    "the top patch inside the object; mass: share of the positive map inside it; chance: the "
                    "object's share of the image (what a random patch or a flat map scores)."}


def choose_heads(n_layers: int, n_heads: int) -> HeadChoice | None:
    """How the heads are chosen, preset from the URL (the links of Heads and Explain) and kept there."""
    page.preset_choice(n_layers, n_heads)
    c1, c2 = st.columns([1, 2])
    kind = c1.radio("Choose heads by", CHOICES, format_func=CHOICE_TITLES.get, key=page.KIND_WIDGET)
    key = page.value_widget_key(kind)
    if kind == "top":
        st.session_state.setdefault(key, min(3, n_layers * n_heads))
        value = c2.number_input("How many of the most-changed heads", 1, n_layers * n_heads, key=key,
                                help="The top of the Heads ranking, under the measure chosen below.")
    elif kind == "match":
        value = c2.text_input("Query (a word in the heads' top texts, or a world factor such as shape)", key=key,
                              help="Heads whose first k TextSpan texts, before or after, contain it.")
    elif kind == "heads":
        value = c2.text_input("Heads (L<layer>.H<head>, comma-separated)", key=key,
                              placeholder=f"L{n_layers - 1}.H0, L{n_layers - 2}.H1",
                              help=f"Layers 0..{n_layers - 1}, heads 0..{n_heads - 1}; L3 = every head of layer 3.")
    else:
        value = c2.selectbox("Layer (all its heads)", list(range(n_layers)), key=key)
    if not str(value).strip():
        st.info("Give the heads to ablate.", icon=":material/info:")
        return None
    choice = HeadChoice(kind, str(value).strip())
    page.remember_choice(choice)
    return choice


def table_section(name: str, table, run_id: str, caption: str) -> None:
    index, values = TABLE_KEYS.get(name, (None, None))
    shown = effects_wide(table, index, values) if index else table
    st.markdown(f"**{TABLE_TITLES[name]}**", help=TABLE_HELP.get(name))
    st.dataframe(shown, hide_index=True, width="stretch", column_config=ui.number_columns(shown))
    row = st.container(horizontal=True, gap="small")
    with row:
        ui.table_download(shown, ui.file_stem(run_id, "ablation", name), key=f"abl-{name}", label="CSV")
        st.download_button("LaTeX (booktabs)", effects_latex(shown, f"{caption}: {name.replace('_', ' ')}"),
                           file_name=f"{ui.file_stem(run_id, 'ablation', name)}.tex", mime="text/x-tex",
                           key=f"dl-abl-{name}-tex", on_click="ignore", icon=":material/download:")


def show_result(ablation, result, run_id: str) -> None:
    st.subheader("Ablated")
    st.markdown(page.literal(ablation.text()))
    for note in result.notes:
        st.caption(page.literal(note))
    overall = result.overall.set_index("model")
    cols = st.columns(len(overall))
    for column, (model, row) in zip(cols, overall.iterrows()):
        column.metric(f"Accuracy, {model}", f"{row['accuracy_ablated']:.1f}% ablated",
                      f"{0.0 - row['drop']:+.1f} points vs {row['accuracy']:.1f}% intact", delta_color="off")
    caption = f"Mean ablation of {ablation.text()}"
    for name, table in result.tables().items():
        if name == "per_class":
            fig = ablation_figure(table)
            st.plotly_chart(fig, key="abl-per-class")
            ui.figure_downloads(fig, ui.file_stem(run_id, "ablation-per-class"), key="abl-per-class")
        table_section(name, table, run_id, caption)
    if result.maps:
        st.subheader("Where the heads write the texts that moved")
        st.caption(f"{result.maps[0].grid_text()} of the image tower; each patch's contribution along the text, "
                   "laid over the images the head writes most along it; before and after on one colour scale.")
    for index, maps in enumerate(result.maps):
        st.markdown(f"**L{maps.layer}.H{maps.head}**, text {maps.mark}: {page.literal(maps.text)}")
        fig = patch_map_figure(maps)
        st.plotly_chart(fig, key=f"map-{index}")
        ui.figure_downloads(fig, ui.file_stem(run_id, "patch-map", f"L{maps.layer}H{maps.head}", str(index)),
                            key=f"map-{index}")


ui.page_header("Verify", "Are the explanations true? Mean-ablate heads before and after fine-tuning, and see where "
               "on the image they write their texts.")
CONTEXT = ui.analysis_context()
if CONTEXT is not None:  # CoOp, a linear probe, zero-shot: the tower's heads are the pretrained ones
    ui.unchanged_note(CONTEXT, True, "image tower's attention heads (the ablation then differs only through the "
                      "class weights)")
SHAPE = None
if CONTEXT is not None and ui.try_call(check_evaluation_data, CONTEXT.run) is None \
        and ui.try_call(lambda: check_method(CONTEXT.method) or True):
    SHAPE = ui.try_call(tower_shape, CONTEXT.before)
if SHAPE is not None:
    n_layers, n_heads = SHAPE
    choice = choose_heads(n_layers, n_heads)
    c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])
    default = default_corpus_for(run_model_spec(CONTEXT.run))
    corpus = c1.radio("Corpus", BUILTIN_CORPORA, index=BUILTIN_CORPORA.index(default), horizontal=True,
                      key="_w_verify_corpus", help="Where the heads' TextSpan texts come from (as on Explain).")
    per_class = c2.slider("Images per class", 2, 100, 10, key="_w_verify_images")
    texts = c3.slider("Texts per head", 3, 40, 10, key="_w_verify_texts")
    top_k = c4.slider("Texts compared per head (k)", 1, 10, 3, key="_w_verify_k",
                      help="Each head's first k texts: scored by the ablation, matched by a query, and compared "
                           "before/after to find those that entered or left.")
    per_map = c5.slider("Images per map", 1, 8, 4, key="_w_verify_per_map")
    measure = ui.pick_heads_measure(st, "verify") if choice is not None and choice.kind == "top" else None
    ranking = ui.head_ranking(CONTEXT, "visual", measure) if measure else None
    if choice is not None and (choice.kind != "top" or ranking is not None):
        params = {"run": CONTEXT.run.run_id, "choice": (choice.kind, choice.value), "corpus": corpus,
                  "images": per_class, "texts": texts, "k": top_k, "maps": per_map, "measure": measure}
        if ui.computed_once("verify", params, "Run the ablation"):
            lines = ui.try_call(load_corpus, corpus)
            found = ui.try_call(page.cached_verify, CONTEXT, CONTEXT.key, choice, corpus, tuple(lines or ()),
                                per_class, texts, top_k, per_map, measure or "", ranking) if lines else None
            if found is not None:
                ablation, result = found
                if result is None:
                    st.info(page.literal(ablation.how[:1].upper() + ablation.how[1:] + "."), icon=":material/info:")
                else:
                    show_result(ablation, result, CONTEXT.run.run_id)
