"""The Verify page's parts: the head choice kept in the URL (?top=5, ?match=nucleus, ?heads=L3.H2,L2.H1,
?layer=3 — what the "Ablate these heads" links of Heads and Explain carry), the cached verification, and
user text shown literally in markdown."""
from __future__ import annotations

import re
from typing import Any

import streamlit as st

from clipsvd.analysis.corpus import corpus_tags
from clipsvd.analysis.textspan_cache import analysis_images_key, shared_textspan_cache
from clipsvd.analysis.verification import CHOICES, HeadChoice, verify
from clipsvd.app.analysis_context import AnalysisContext, analysis_images

CHOICE_KEY = "verify_choice"  # the last choice, for a visit without one in the URL (the sidebar drops it)
WRITTEN_KEY = "_verify_url_written"
KIND_WIDGET = "_w_verify_kind"


def value_widget_key(kind: str) -> str:
    return f"_w_verify_{kind}"


def literal(text: str) -> str:
    """A user's or a corpus's text shown literally in markdown (no emphasis, links, colours, emoji codes)."""
    return re.sub(r"([\\`*_\[\]{}()<>#+\-.!|~$:])", r"\\\1", str(text))


def choice_from_url() -> HeadChoice | None:
    """The head choice the URL carries (the first of ?top, ?match, ?heads, ?layer present), else None."""
    for kind in CHOICES:
        value = st.query_params.get(kind)
        if value is not None and str(value).strip():
            return HeadChoice(kind, str(value))
    return None


def preset_choice(n_layers: int, n_heads: int) -> None:
    """Before the widgets are drawn: a choice arriving in the URL (a link, a reload, a shared address) sets
    them; otherwise they keep their values, or start from the session's last choice."""
    url = choice_from_url()
    if url is not None and url != st.session_state.get(WRITTEN_KEY):
        st.session_state[KIND_WIDGET] = url.kind
        st.session_state[value_widget_key(url.kind)] = widget_value(url, n_layers, n_heads)
    elif KIND_WIDGET not in st.session_state and st.session_state.get(CHOICE_KEY) is not None:
        last = st.session_state[CHOICE_KEY]
        st.session_state[KIND_WIDGET] = last.kind
        st.session_state[value_widget_key(last.kind)] = widget_value(last, n_layers, n_heads)


def widget_value(choice: HeadChoice, n_layers: int, n_heads: int) -> Any:
    """The URL's text as its widget holds it (a number for top and layer, clipped to what exists)."""
    digits = re.sub(r"\D", "", choice.value)
    if choice.kind == "top":
        return min(max(int(digits or 1), 1), n_layers * n_heads)
    if choice.kind == "layer":
        return min(int(digits or 0), n_layers - 1)
    return choice.value


def remember_choice(choice: HeadChoice) -> None:
    """The choice into the URL (replacing any other kind) and the session."""
    for kind in CHOICES:
        if kind != choice.kind:
            st.query_params.pop(kind, None)
    st.query_params[choice.kind] = choice.value
    st.session_state[WRITTEN_KEY] = choice
    st.session_state[CHOICE_KEY] = choice


@st.cache_resource(show_spinner="Explaining the heads (TextSpan), ablating them before and after, mapping the "
                                "texts that moved…", max_entries=4)
def cached_verify(_ctx: AnalysisContext, key: tuple[str, str, str], choice: HeadChoice, corpus: str,
                  lines: tuple[str, ...], per_class: int, texts_per_head: int, top_k: int, maps_per_text: int,
                  measure: str, _ranking: Any):
    """verify() of one run; the result is also cached in the run folder (verification/), TextSpan in the store."""
    dataset = analysis_images(_ctx.run, per_class)
    tags = corpus_tags(corpus) if corpus in ("world", "general", "biomedical") else None
    return verify(_ctx, dataset, choice, list(lines), texts_per_head, top_k, _ranking, tags,
                  shared_textspan_cache(), analysis_images_key(_ctx, per_class),
                  maps_per_text=maps_per_text)
