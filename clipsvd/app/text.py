"""User-supplied strings (dataset, class, run, corpus names, URL parameters) shown as text, never as markup.

Streamlit renders markdown in st.markdown, st.caption, alerts, widget labels, image captions and progress texts: a
dataset named `[x](http://evil)` would become a live link, `![](http://evil/i.png)` an image the browser fetches,
`**a**` bold, `:red[a]` coloured, `www.evil.com` an autolink. The literal text is kept (autolink patterns are
broken by an invisible word joiner). Every page passes such strings through `md` before
putting them into markdown (or shows them with st.text / st.code, which render nothing).
"""
from __future__ import annotations

import re

# CommonMark lets any ASCII punctuation be backslash-escaped. Escaped everywhere: what opens emphasis, links,
# images, code, HTML, entities, tables, maths, Streamlit's :material/…: and :red[…] directives and emoji
# shortcodes, and the dot of GFM's www./e-mail autolinks. Hyphens, pluses and parentheses are left readable: they
# mean something only at the start of a line (escaped there) or after a `]` (always escaped).
_ALWAYS = re.compile(r"([\\`*_\[\]<>#!|~$:{}&.])")
_LINE_START = re.compile(r"^(\s*)([-+=])")
# Streamlit's renderer (remark-gfm) turns http://…, www.… and e-mail addresses into links by matching the text
# *after* escapes are resolved, so escaping cannot stop it: an invisible WORD JOINER (U+2060) after the scheme or
# www and before an @ breaks its patterns without changing what is read.
WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)(https?|ftp|www|mailto|xmpp)(?=[:.])|(?=@)")


def md(text: object) -> str:
    """`text` escaped so that markdown shows it literally, on one line (a line break could start a heading or a
    list, so each becomes a space)."""
    flat = _AUTOLINK.sub(lambda m: (m.group(1) or "") + WORD_JOINER, " ".join(str(text).splitlines()))
    return _LINE_START.sub(r"\1\\\2", _ALWAYS.sub(r"\\\1", flat))


__all__ = ["md"]
