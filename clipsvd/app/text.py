"""User-supplied strings (dataset, class, run, corpus names, URL parameters) shown as text, never as markup.

Streamlit renders markdown in st.markdown, st.caption, alerts, widget labels and progress texts: a dataset named
`[x](http://evil)` would become a live link, `![](http://evil/i.png)` an image the browser fetches, `**a**` bold,
`:red[a]` coloured. Every page passes such strings through `md` before putting them into markdown (or shows them
with st.text / st.code, which render nothing).
"""
from __future__ import annotations

import re

# CommonMark lets any ASCII punctuation be backslash-escaped; Streamlit's own directives (:material/…:, :red[…],
# $…$ maths) and emoji shortcodes are built from the same characters.
_SPECIALS = re.compile(r"([!-/:-@\[-`{-~])")


def md(text: object) -> str:
    """`text` escaped so that markdown shows it literally: every ASCII punctuation mark backslash-escaped, line
    breaks (which could start a heading or a list) turned into spaces."""
    return _SPECIALS.sub(r"\\\1", " ".join(str(text).splitlines()))


__all__ = ["md"]
