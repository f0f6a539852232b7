"""Analyses of one stored run against the pretrained model it started from, or against another run of the same
base (a reference run: then "before" is that run's fine-tuned model, and every analysis shows the difference of the
two fine-tunes directly, e.g. a CLIP-SVD run against an imported CLIP-LoRA one).

These are what the dashboard's analysis pages and `python -m clipsvd analyze` both call: the run
is rebuilt from its adapter tensors, the pretrained model from the run's model spec, and each
analysis compares the two on a seeded subset of the run's test images.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
from PIL import Image
from torch.utils.data import DataLoader

from clipsvd.analysis.current_weights import as_loaded
from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT
from clipsvd.analysis.embeddings import image_features, umap_before_after
from clipsvd.analysis.textspan import (
    DEFAULT_RANK,
    TextSpanResult,
    explain_heads,
    top_images_for_text,
)
from clipsvd.analysis.textspan_cache import TextSpanCache
from clipsvd.analysis.weights import (
    singular_value_shifts,
    singular_value_shifts_from_method,
    singular_vector_rotation,
)
from clipsvd.data import ClassificationDataset, TransformedSplit
from clipsvd.errors import ConfigError
from clipsvd.methods import Method
from clipsvd.models import LoadedModel, ModelSpec, load_model
from clipsvd.runs import Run
from clipsvd.training.experiment import ExperimentConfig, prepare_data, restore_run


class TwoSides:
    """The two sides of an analysis in words, as pages and the report name them: the pretrained model and the
    fine-tuned one, or run B (the reference) and run A. Mixed into what holds `run` and `reference`."""

    run: Run
    reference: Run | None

    @property
    def before_name(self) -> str:
        return "pretrained" if self.reference is None else f"run {self.reference.run_id}"

    @property
    def after_name(self) -> str:
        return "fine-tuned" if self.reference is None else f"run {self.run.run_id}"


@dataclass
class RunPair(TwoSides):
    """A stored run's trained method ("after") and what it is compared with ("before"): the pretrained model it
    started from, or — with `reference` — the trained method of another run of the same base."""

    run: Run
    before: LoadedModel | Method
    method: Method
    reference: Run | None = None  # the run whose model is "before"; None: the pretrained model

    @property
    def loaded(self) -> LoadedModel:
        """The "before" model's LoadedModel (tokenizer, image size, transforms; the same base for both sides)."""
        return as_loaded(self.before)

    @property
    def trains(self) -> bool:
        """Whether either side differs from the pretrained model at all: it trained something, or it changes weights
        without training here (an imported fine-tune). Zero-shot against the pretrained model: nothing can differ."""
        def differs(method: Method) -> bool:
            return method.trains or method.changes_weights

        return differs(self.method) or (self.reference is not None and differs(self.before))

    @property
    def changes_weights(self) -> bool:
        """Whether a weight can differ between the two sides: the run's method changes weights, or the reference
        run's does (CoOp against CLIP-SVD: CLIP-SVD's weight changes, seen from the other side)."""
        return self.method.changes_weights or (self.reference is not None and self.before.changes_weights)



def run_model_spec(run: Run) -> ModelSpec:
    """The model a run started from, as stored in its config."""
    return ModelSpec.from_dict(run.config.get("model") or {})


def check_same_base(run: Run, reference: Run) -> ModelSpec:
    """The base both runs started from; ConfigError naming both bases where they differ (another architecture, or
    the same one with other weights: then a difference of the two runs mixes what each base already differed in)."""
    if run.run_id == reference.run_id:
        raise ConfigError(f"run {run.run_id} compared with itself: pick a second run")
    spec, other = run_model_spec(run), run_model_spec(reference)
    if spec != other:
        raise ConfigError(f"runs {run.run_id} and {reference.run_id} started from different bases ({spec.label} vs "
                          f"{other.label}): only two runs of the same base model compare directly; compare each "
                          "with its own pretrained model instead")
    return spec


def load_pretrained(spec: ModelSpec, device: str = "auto") -> LoadedModel:
    """The pretrained model in eval mode: the "before" of every analysis."""
    loaded = load_model(spec, device)
    loaded.model.eval()
    return loaded


def load_run_pair(run: Run, device: str = "auto", reference: Run | None = None) -> RunPair:
    """`run` against its pretrained model, or against `reference` (another run of the same base, checked)."""
    if reference is None:
        return RunPair(run, load_pretrained(run_model_spec(run), device), restore_run(run, device)[1])
    check_same_base(run, reference)
    return RunPair(run, restore_run(reference, device)[1], restore_run(run, device)[1], reference)


def analysis_images(run: Run, per_class: int, dataset: ClassificationDataset | None = None) -> ClassificationDataset:
    """The run's dataset, all classes, with at most `per_class` test images per class (seeded, fixed)."""
    config = ExperimentConfig.from_dict(run.config)
    small = dataclasses.replace(config, protocol="few-shot", shots=None, max_test_per_class=per_class)
    return prepare_data(small, dataset).test_sets["all"]


def image_batches(dataset: ClassificationDataset, loaded: LoadedModel, batch_size: int = 64) -> DataLoader:
    """Preprocessed test-image batches for a model (its own size and normalisation)."""
    transform = loaded.eval_transform()
    return DataLoader(TransformedSplit(dataset.test, transform), batch_size=batch_size, shuffle=False)


def run_sv_shifts(pair: RunPair) -> pd.DataFrame:
    """σ shifts of a run: CLIP-SVD's trained σ against σ₀ (aligned); other methods, and any run against a reference
    run, via plain weights (σ recomputed on both sides and matched by rank)."""
    if pair.reference is None and pair.method.singular_value_weights():
        return singular_value_shifts_from_method(pair.method)
    return singular_value_shifts(pair.before, pair.method)


DEFAULT_ROTATION_TOP = 8  # top singular vectors whose span is compared before vs after


def run_sv_rotation(pair: RunPair, top: int = DEFAULT_ROTATION_TOP) -> pd.DataFrame:
    """How far each matrix's top-`top` singular vectors turned in a run (the recomposed or merged weights against
    the pretrained ones); refused for a method that changes no weight, where every angle is 0 by definition."""
    if not pair.changes_weights:
        raise ConfigError(f"{pair.method.name}: changes no weight of the model, so no singular vector can turn")
    return singular_vector_rotation(pair.before, pair.method, top)


def run_textspan(
    pair: RunPair,
    dataset: ClassificationDataset,
    corpus: Sequence[str],
    layers: Sequence[int] | None,
    texts_per_head: int,
    cache: TextSpanCache | None = None,
    images_key: str | None = None,
    rank: int = DEFAULT_RANK,
    ln_post_split: str = DEFAULT_LN_POST_SPLIT.value,
) -> tuple[TextSpanResult, TextSpanResult]:
    """TextSpan of the same heads on the same images, before and after fine-tuning."""
    return tuple(
        explain_heads(model, image_batches(dataset, pair.loaded), list(corpus), list(layers) if layers else None,
                      texts_per_head, rank=rank, cache=cache, images_key=images_key, ln_post_split=ln_post_split)
        for model in (pair.before, pair.method)
    )


def run_umap(pair: RunPair, dataset: ClassificationDataset, seed: int = 0) -> pd.DataFrame:
    """UMAP layouts of the test images' features before and after, labelled by class name."""
    transform = pair.loaded.eval_transform()
    before, labels = image_features(pair.before, dataset.test, transform)
    after, _ = image_features(pair.method, dataset.test, transform)
    return umap_before_after(before, after, [dataset.classnames[i] for i in labels], seed)


def images_for_text(
    result: TextSpanResult, dataset: ClassificationDataset, layer: int, head: int, text: str, k: int = 8
) -> list[tuple[Image.Image, str]]:
    """The k test images whose contribution from this head points most along `text`, with their class names.

    `dataset` must be the one `result` was computed on (same test images, same order).
    """
    if len(dataset.test) != result.contributions.shape[0]:
        raise ConfigError(f"images_for_text: {len(dataset.test)} images given, TextSpan ran on "
                          f"{result.contributions.shape[0]}; pass the same dataset")
    if text not in result.corpus:
        raise ConfigError(f"images_for_text: '{text}' is not in the corpus TextSpan used")
    embedding = result.text_embeddings[result.corpus.index(text)]
    chosen = top_images_for_text(result.contributions_of(layer, head), embedding, k)
    return [(dataset.test.load_image(int(i)), dataset.classnames[dataset.test.labels[int(i)]]) for i in chosen]
