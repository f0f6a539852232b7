"""Everything a run's report shows, computed once: σ shifts, head ranking, TextSpan before/after with the
explanation shifts, images for the texts that entered, and UMAP.

One analysis failing (a model TextSpan cannot decompose, too few images for UMAP) is recorded and
reported instead of costing the others, as in `python -m clipsvd analyze`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd
from PIL import Image

from clipsvd.analysis.corpus import default_corpus_for, load_corpus
from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT, tower_blocks, vision_tower
from clipsvd.analysis.explanation_shift import (
    SHIFT_TOP_K,
    explanation_shifts,
    head_shift,
    by_explanation_shift,
    layers_to_explain,
    top_changed_heads,
    top_shifted_heads,
)
from clipsvd.analysis.heads import HeadChange, head_change, head_changes
from clipsvd.analysis.prompts import nearest_words
from clipsvd.analysis.run_pair import (
    RunPair,
    TwoSides,
    images_for_text,
    run_model_spec,
    run_sv_rotation,
    run_sv_shifts,
    run_textspan,
    run_umap,
)
from clipsvd.analysis.textspan import DEFAULT_RANK, DEFAULT_TEXTS_PER_HEAD, TextSpanResult
from clipsvd.analysis.textspan_cache import TextSpanCache
from clipsvd.data import ClassificationDataset
from clipsvd.errors import ClipsvdError
from clipsvd.runs import Run

DEFAULT_TOP_HEADS = 3
ENTERED_TEXTS_SHOWN = 3


@dataclass
class EnteredImages:
    """The test images one head writes most along a text that entered its explanation."""

    layer: int
    head: int
    text: str
    images: list[tuple[Image.Image, str]]  # (image, class name)


@dataclass
class RunAnalysis(TwoSides):
    """One run's part of a report; the fields a failed analysis would fill stay None (see `failures`)."""

    run: Run
    model_label: str
    measure: str
    heads: pd.DataFrame | None = None  # head_changes of the image tower, ranked by `measure`
    sv_shifts: pd.DataFrame | None = None
    sv_rotation: pd.DataFrame | None = None  # singular_vector_rotation: how far the top singular vectors turned
    prompt_words: pd.DataFrame | None = None  # nearest_words of a learned prompt context (CoOp)
    before: TextSpanResult | None = None
    after: TextSpanResult | None = None
    explanations: pd.DataFrame | None = None  # explanation_shifts joined with the weight ranking
    umap: pd.DataFrame | None = None
    entered: list[EnteredImages] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    verification: list[Any] = field(default_factory=list)  # AblationResult cached in the run folder
    method_trains: bool = True  # False for zero-shot: nothing could have changed
    method_changes_weights: bool = True  # False where what trains lies outside the model (CoOp, linear probe)
    keeps_singular_vectors: bool = False  # True for CLIP-SVD: only σ train, the singular vectors are frozen
    reference: Run | None = None  # "before" is this run's fine-tuned model (a difference of two runs), not pretrained

    @property
    def head_change(self) -> HeadChange | None:
        """What the run did to the image tower's attention weights under `measure` (None: not computed)."""
        if self.heads is None:
            return None
        return head_change(self.heads, self.measure, self.method_trains, self.method_changes_weights)

    @property
    def ranks_by_weight(self) -> bool:
        """Whether "most changed" means something: False where no head's weights moved (then heads are
        ordered by explanation shift)."""
        return self.head_change is not None and self.head_change.ranks_by_weight

    @property
    def shifts(self) -> pd.DataFrame | None:
        """The explanation table in the order the report reads it: by weight rank, or by explanation shift
        (without the weight rank, an arbitrary order of zeros) where no weight changed."""
        if self.explanations is None or self.ranks_by_weight:
            return self.explanations
        return by_explanation_shift(self.explanations)

    @property
    def top_heads(self) -> list[tuple[int, int]]:
        """The analysed heads the report details: the most-changed, or those whose explanation moved most."""
        n = self.settings.get("top_heads", DEFAULT_TOP_HEADS)
        if self.heads is None or self.before is None:
            return []
        if self.ranks_by_weight:
            return top_changed_heads(self.heads, n, self.before.layers, self.measure)
        return top_shifted_heads(self.explanations, n) if self.explanations is not None else []

    @property
    def short_name(self) -> str:
        """Method and seed: figure titles (the run id heads each column); both runs' against a reference run."""
        own = f"{self.run.config.get('method')} · seed {self.run.config.get('seed')}"
        if self.reference is None:
            return own
        return f"{own} vs {self.reference.config.get('method')} · seed {self.reference.config.get('seed')}"

    @property
    def name(self) -> str:
        return f"{self.short_name} · {self.run.run_id}"


def analyse_run(
    pair: RunPair,
    dataset: ClassificationDataset,
    corpus: str | None = None,
    measure: str = "ov_change",
    layers: Sequence[int] | None = None,
    texts_per_head: int = DEFAULT_TEXTS_PER_HEAD,
    k: int = SHIFT_TOP_K,
    top_heads: int = DEFAULT_TOP_HEADS,
    images_per_text: int = 4,
    rank: int = DEFAULT_RANK,
    ln_post_split: str = DEFAULT_LN_POST_SPLIT.value,
    textspan: tuple[TextSpanResult, TextSpanResult] | None = None,
    cache: TextSpanCache | None = None,
    images_key: str | None = None,
    umap_seed: int = 0,
    model_label: str | None = None,
    corpus_lines: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    with_umap: bool = True,
) -> RunAnalysis:
    """Compute a run's report content on `dataset` (the run's test images, e.g. `analysis_images`).

    corpus: a built-in name or a file (default: the one that suits the run's model), or only its name when
    `corpus_lines` gives the texts (an uploaded corpus). layers: TextSpan's
    (default: the last four plus those of the `top_heads` most-changed heads). `textspan`: results already
    computed on the same images (the dashboard's), reused instead of recomputed. A pair with a reference run gives
    the difference of the two fine-tunes (σ shifts, head ranking and explanations of one run against the other);
    `with_umap` False skips the UMAP fit (the report's difference section has no UMAP).
    """
    say = progress or (lambda message: None)
    corpus = corpus or default_corpus_for(run_model_spec(pair.run))
    label = model_label or (pair.run.config.get("model_source") or {}).get("label") or pair.loaded.label
    analysis = RunAnalysis(pair.run, label, measure, settings={
        "corpus": str(corpus), "texts_per_head": texts_per_head, "k": k, "top_heads": top_heads, "rank": rank,
        "ln_post_split": ln_post_split, "images": len(dataset.test), "umap_seed": umap_seed},
        method_trains=pair.trains, method_changes_weights=pair.changes_weights,
        keeps_singular_vectors=pair.reference is None and bool(pair.method.singular_value_weights()),
        reference=pair.reference)

    def step(name: str, function: Callable[[], Any]) -> Any:
        say(f"{pair.run.run_id}: {name}")
        try:
            return function()
        except ClipsvdError as exc:
            analysis.failures[name] = str(exc)
            return None

    if pair.changes_weights:  # otherwise every σ and vector is the pretrained one: the report says so
        analysis.sv_shifts = step("σ shifts", lambda: run_sv_shifts(pair))
        analysis.sv_rotation = step("singular-vector rotation", lambda: run_sv_rotation(pair))
    if pair.method.learns_context and pair.reference is None:
        analysis.prompt_words = step("nearest words", lambda: nearest_words(pair.method))
    analysis.heads = step("head ranking", lambda: head_changes(pair.before, pair.method, "visual", measure))
    if analysis.heads is not None and layers is None:
        layers = layers_to_explain(len(tower_blocks(vision_tower(pair.before))), analysis.heads, top_heads, measure)
    analysis.settings["layers"] = list(layers) if layers is not None else None
    if textspan is None:
        textspan = step("TextSpan", lambda: run_textspan(pair, dataset, corpus_lines or load_corpus(corpus), layers,
                                                         texts_per_head, cache, images_key, rank, ln_post_split))
    if textspan is not None:
        analysis.before, analysis.after = textspan
        analysis.explanations = step("explanation shift", lambda: explanation_shifts(*textspan, analysis.heads, k))
        analysis.entered = step("images of entered texts", lambda: _entered_images(
            analysis, dataset, images_per_text)) or []
    if with_umap:
        analysis.umap = step("UMAP", lambda: run_umap(pair, dataset, umap_seed))
    if pair.reference is None:  # ablations are cached per run against its pretrained model
        analysis.verification = step("verification", lambda: _cached_verification(pair.run)) or []
    return analysis


def _cached_verification(run: Run) -> list[Any]:
    """The ablations cached in the run folder (Verify page, `clipsvd ablate`): read back, never recomputed."""
    from clipsvd.analysis.ablation import AblationStore

    return AblationStore(run).all() if run.path is not None else []


def _entered_images(analysis: RunAnalysis, dataset: ClassificationDataset, per_text: int) -> list[EnteredImages]:
    found = []
    k = analysis.settings["k"]
    for layer, head in analysis.top_heads:
        shift = head_shift(analysis.before.head(layer, head), analysis.after.head(layer, head),
                           analysis.before.text_embeddings, analysis.before.corpus, k)
        for text in shift.entered[:ENTERED_TEXTS_SHOWN]:
            found.append(EnteredImages(layer, head, text,
                                       images_for_text(analysis.after, dataset, layer, head, text, per_text)))
    return found
