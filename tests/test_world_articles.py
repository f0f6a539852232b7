"""English articles in the world's texts: "an amber object", never "a amber object" (TextSpan shows these lines)."""
import re

import numpy as np

from clipsvd.analysis.corpus import corpus_tags
from clipsvd.world.captions import caption, indefinite_article
from clipsvd.world.corpus import world_corpus_lines
from clipsvd.world.scenes import sample_scene

# "a" as a word before a word starting with a vowel letter; the world's words have no "a one"/"a unit" exceptions.
WRONG_ARTICLE = re.compile(r"\ba [aeiou]", re.IGNORECASE)


def test_no_line_of_the_shipped_world_corpus_puts_a_before_a_vowel():
    texts = list(corpus_tags("world"))
    assert len(texts) == len(world_corpus_lines())
    assert [text for text in texts if WRONG_ARTICLE.search(text)] == []
    assert {"an amber object", "an orange object", "an emerald object"} <= set(texts)


def test_captions_use_an_before_a_vowel_too():
    rng = np.random.default_rng(0)
    texts = [caption(rng, sample_scene(rng)) for _ in range(2000)]
    assert any(" an " in text for text in texts)
    assert [text for text in texts if WRONG_ARTICLE.search(text)] == []


def test_indefinite_article():
    assert [indefinite_article(w) for w in ("amber", "Orange", "red", "emerald", "")] == ["an", "an", "a", "an", "a"]
