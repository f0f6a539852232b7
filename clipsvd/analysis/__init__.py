"""What fine-tuning changed and why: singular-value shifts, per-head changes, TextSpan head texts, UMAP.

Pure functions returning pandas DataFrames, numpy arrays or tensors; plotting lives in clipsvd.plots.
umap itself is imported only when a layout is computed: `import umap` is slow the first time.
"""
from clipsvd.analysis.corpus import BUILTIN_CORPORA, load_corpus, parse_corpus
from clipsvd.analysis.decomposition import DirectContributions, direct_contributions
from clipsvd.analysis.embeddings import image_features, umap_before_after
from clipsvd.analysis.heads import head_changes, legacy_sigma_block_scores
from clipsvd.analysis.textspan import (
    HeadTexts,
    TextSpanResult,
    compare_heads,
    encode_texts,
    explain_heads,
    text_span,
    top_images_for_text,
)
from clipsvd.analysis.textspan_cache import TextSpanCache, model_fingerprint, shared_textspan_cache
from clipsvd.analysis.weights import singular_value_shifts, singular_value_shifts_from_method, spectra, weights_after

__all__ = [
    "BUILTIN_CORPORA", "DirectContributions", "HeadTexts", "TextSpanCache", "TextSpanResult", "compare_heads",
    "direct_contributions", "encode_texts", "explain_heads", "head_changes", "image_features",
    "legacy_sigma_block_scores", "load_corpus", "model_fingerprint", "parse_corpus", "shared_textspan_cache",
    "singular_value_shifts", "singular_value_shifts_from_method",
    "spectra", "text_span", "top_images_for_text", "umap_before_after", "weights_after",
]
