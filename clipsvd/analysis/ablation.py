"""Is an explanation true? Mean-ablate heads and measure what the model loses (TextSpan's own check).

Mean ablation, as clip_text_span's compute_ablations.py does it: replace a head's direct contribution to every
image embedding by its mean over the evaluation images, keep everything else, and score again. The terms come
from one decomposition pass over the images (`direct_contributions` with every layer and every MLP term), so any
number of head sets costs tensor sums, never another forward pass per head.

What is ablated (`Ablation`): one head, a hand-picked list ("L3.H2,L2.H1"), a whole layer ("L3": its heads),
an MLP ("L3.MLP"), the top-N of the Heads ranking, or the heads whose first TextSpan texts match a query (a
word such as "nucleus", or a corpus tag such as a world factor). Effects: accuracy overall and per class, and
the cosine of the image embedding with each of the heads' top texts, intact vs ablated, for the pretrained and
the fine-tuned model on the same images: its mean and its spread (standard deviation over the images). Mean
ablation keeps a head's average, so what it removes is the variation the head adds along a text: the spread
is the number that says whether the head carries that text.

Linearising ln_post per image (with the image's own μ and σ) is TextSpan's approximation: an ablated
embedding is the sum of the terms, not a new forward pass through ln_post.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from clipsvd.analysis.decomposition import (
    DEFAULT_LN_POST_SPLIT,
    LnPostSplit,
    direct_contributions,
    resolve_ln_post_split,
    tower_blocks,
    vision_tower,
)
from clipsvd.analysis.head_topics import mean_ablated
from clipsvd.analysis.textspan import TextSpanResult, _image_tensor
from clipsvd.errors import ConfigError, DataError

_ITEM = re.compile(r"^L(\d+)(?:\.(H(\d+)|MLP))?$", re.IGNORECASE)
MODELS = ("pretrained", "fine-tuned")


@dataclass(frozen=True)
class Ablation:
    """The heads (layer, head) and MLP blocks to mean-ablate, and how they were chosen (shown with results)."""

    heads: tuple[tuple[int, int], ...]
    mlps: tuple[int, ...] = ()
    how: str = ""

    @property
    def empty(self) -> bool:
        return not self.heads and not self.mlps

    def names(self) -> list[str]:
        return [f"L{layer}.H{head}" for layer, head in self.heads] + [f"L{block}.MLP" for block in self.mlps]

    def text(self) -> str:
        chosen = ", ".join(self.names()) or "nothing"
        return f"{chosen} ({self.how})" if self.how else chosen


def tower_shape(model: Any) -> tuple[int, int]:
    """(blocks, heads per block) of the image tower; refuses towers without direct contributions by name
    (attention-pooled CoCa-style towers, ...) before anything heavy runs."""
    blocks = tower_blocks(vision_tower(model))
    return len(blocks), int(blocks[0].attn.num_heads)


def _check_head(layer: int, head: int, n_layers: int, n_heads: int, item: str) -> None:
    if not 0 <= layer < n_layers or not 0 <= head < n_heads:
        raise ConfigError(f"'{item}': no such head; the image tower has layers L0..L{n_layers - 1} and heads "
                          f"H0..H{n_heads - 1} (e.g. L{n_layers - 1}.H{n_heads - 1})")


def parse_heads(text: str, n_layers: int, n_heads: int) -> Ablation:
    """"L3.H2,L2.H1" → those heads; "L3" → every head of layer 3; "L3.MLP" → block 3's MLP. Order kept,
    repeats dropped; a head or layer that does not exist is refused with the valid range."""
    heads: list[tuple[int, int]] = []
    mlps: list[int] = []
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise ConfigError("--heads: give heads as L<layer>.H<head>, e.g. L3.H2,L2.H1 (L3: a whole layer, "
                          "L3.MLP: its MLP)")
    for item in items:
        match = _ITEM.match(item)
        if match is None:
            raise ConfigError(f"'{item}': expected L<layer>.H<head> (e.g. L{n_layers - 1}.H0), L<layer> or "
                              "L<layer>.MLP")
        layer = int(match.group(1))
        if match.group(3) is not None:
            _check_head(layer, int(match.group(3)), n_layers, n_heads, item)
            chosen = [(layer, int(match.group(3)))]
        else:
            _check_head(layer, 0, n_layers, n_heads, item)
            if match.group(2):  # MLP
                mlps.extend([layer] if layer not in mlps else [])
                continue
            chosen = [(layer, h) for h in range(n_heads)]
        heads.extend(key for key in chosen if key not in heads)
    return Ablation(tuple(heads), tuple(mlps), "hand-picked")


def layer_heads(layer: int, n_layers: int, n_heads: int) -> Ablation:
    """Every head of one layer."""
    _check_head(layer, 0, n_layers, n_heads, f"L{layer}")
    return Ablation(tuple((layer, h) for h in range(n_heads)), (), f"all heads of layer {layer}")


def top_ranked(changes: pd.DataFrame, n: int) -> Ablation:
    """The n heads of the image tower that changed most (the Heads page's ranking, `head_changes`)."""
    from clipsvd.analysis.explanation_shift import top_changed_heads

    if n < 1:
        raise ConfigError(f"--top: expected at least 1 head, got {n}")
    measure = next((m for m in ("ov_change", "value_change", "qk_change", "out_change") if m in changes), "rank")
    return Ablation(tuple(top_changed_heads(changes, n)), (), f"top {n} of the head ranking by {measure}")


def matching_heads(results: Sequence[TextSpanResult], query: str, top_k: int = 5,
                   tags: Mapping[str, str | None] | None = None) -> Ablation:
    """Heads whose first `top_k` TextSpan texts (in any of `results`: before and/or after) contain `query`
    (case-insensitive), or, with a tagged corpus, carry `query` as their tag (a world factor such as "shape").
    Matches nothing → an empty Ablation whose `how` says so: nothing is ablated."""
    needle = str(query).strip().lower()
    if not needle:
        raise ConfigError("--match: give a word or phrase to look for in the heads' texts")
    found: list[tuple[int, int]] = []
    for result in results:
        for key, chosen in sorted(result.heads.items()):
            texts = chosen.texts[:top_k]
            hit = any(needle in text.lower() for text in texts)
            if tags is not None:
                hit = hit or any((tags.get(text) or "").lower() == needle for text in texts)
            if hit and key not in found:
                found.append(key)
    how = (f"heads whose top {top_k} texts match '{query}'" if found
           else f"no head's top {top_k} texts match '{query}': nothing ablated")
    return Ablation(tuple(sorted(found)), (), how)


# ----- terms and effects ---------------------------------------------------------------------------------

@dataclass
class AblationTerms:
    """Every head's and MLP's direct contribution on a set of images: (N, L, H, D), (N, L, D), (N, D)."""

    heads: torch.Tensor
    mlps: torch.Tensor
    embedding: torch.Tensor
    layers: tuple[int, ...]
    ln_post_split: str = DEFAULT_LN_POST_SPLIT.value

    def ablated(self, ablation: Ablation) -> torch.Tensor:
        """The embeddings with `ablation`'s heads and MLPs mean-ablated (unnormalised sums of terms)."""
        return mean_ablated(self.heads, self.embedding, self.layers, list(ablation.heads), self.mlps,
                            list(ablation.mlps))


@torch.no_grad()
def collect_terms(model: Any, image_batches: Iterable[Any], batch_size: int = 64,
                  ln_post_split: str | LnPostSplit = DEFAULT_LN_POST_SPLIT,
                  progress: Callable[[int], None] | None = None) -> AblationTerms:
    """One decomposition pass: every head of every layer and every MLP term, on the CPU."""
    split = resolve_ln_post_split(ln_post_split)
    n_layers, _ = tower_shape(model)
    heads, mlps, embeddings = [], [], []
    for batch in image_batches:
        images = _image_tensor(batch)
        for start in range(0, len(images), batch_size):
            parts = direct_contributions(model, images[start:start + batch_size], range(n_layers), split,
                                         mlp_terms=True)
            heads.append(parts.heads.cpu())
            mlps.append(parts.mlps.cpu())
            embeddings.append(parts.embedding.cpu())
            if progress:
                progress(sum(len(e) for e in embeddings))
    if not heads:
        raise DataError("ablation: no images were given")
    return AblationTerms(torch.cat(heads), torch.cat(mlps), torch.cat(embeddings), tuple(range(n_layers)),
                         split.value)


def _predictions(embeddings: torch.Tensor, class_weights: torch.Tensor) -> np.ndarray:
    return (F.normalize(embeddings.float(), dim=-1) @ class_weights.float().t()).argmax(1).numpy()


def ablation_effects(terms: AblationTerms, ablation: Ablation, class_weights: torch.Tensor, labels: Sequence[int],
                     classnames: Sequence[str], texts: Mapping[str, torch.Tensor] | None = None,
                     model: str = "") -> dict[str, pd.DataFrame]:
    """Accuracy (%) overall and per class, and the mean cosine with each text, intact vs `ablation`.

    class_weights: (classes × D) as the method classifies with (normalised text features); texts: {text:
    embedding} (e.g. the ablated heads' top TextSpan texts, embedded by the same model)."""
    labels = np.asarray(labels)
    if len(labels) != len(terms.embedding):
        raise ConfigError(f"ablation: {len(labels)} labels for {len(terms.embedding)} images")
    ablated = terms.ablated(ablation)
    intact_pred, ablated_pred = _predictions(terms.embedding, class_weights), _predictions(ablated, class_weights)
    intact_acc, ablated_acc = 100 * float((intact_pred == labels).mean()), 100 * float((ablated_pred == labels).mean())
    overall = pd.DataFrame([{"model": model, "ablated": ablation.text(), "n_images": len(labels),
                             "accuracy": intact_acc, "accuracy_ablated": ablated_acc,
                             "drop": intact_acc - ablated_acc}])
    rows = []
    for index, name in enumerate(classnames):
        mask = labels == index
        if mask.any():
            before, after = 100 * float((intact_pred[mask] == index).mean()), 100 * float((ablated_pred[mask] == index).mean())
            rows.append({"model": model, "class": name, "n_images": int(mask.sum()), "accuracy": before,
                         "accuracy_ablated": after, "drop": before - after})
    similarity = []
    for text, embedding in (texts or {}).items():
        direction = F.normalize(torch.as_tensor(embedding).float().reshape(-1), dim=0)
        intact = F.normalize(terms.embedding, dim=-1) @ direction
        removed = F.normalize(ablated, dim=-1) @ direction
        similarity.append({"model": model, "text": text, "similarity": float(intact.mean()),
                           "similarity_ablated": float(removed.mean()), "drop": float(intact.mean() - removed.mean()),
                           "spread": float(intact.std()), "spread_ablated": float(removed.std()),
                           "spread_drop": float(intact.std() - removed.std())})
    return {"overall": overall, "per_class": pd.DataFrame(rows),
            "texts": pd.DataFrame(similarity, columns=["model", "text", "similarity", "similarity_ablated", "drop", "spread",
                                              "spread_ablated", "spread_drop"])}


def head_top_texts(results: Sequence[TextSpanResult], ablation: Ablation, top_k: int = 3) -> list[str]:
    """The first `top_k` TextSpan texts of every ablated head, before and after, without repeats."""
    texts: list[str] = []
    for result in results:
        for key in ablation.heads:
            if key in result.heads:
                texts.extend(t for t in result.heads[key].texts[:top_k] if t not in texts)
    return texts


def combine(frames: Sequence[dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """Side by side: the pretrained and fine-tuned tables stacked, one `model` column telling them apart."""
    return {key: pd.concat([f[key] for f in frames], ignore_index=True) for key in frames[0]}


def effects_wide(table: pd.DataFrame, key: str, values: Sequence[str] = ("accuracy", "accuracy_ablated", "drop")
                 ) -> pd.DataFrame:
    """One row per `key` with pretrained and fine-tuned columns beside each other (for papers)."""
    wide = table.pivot_table(index=key, columns="model", values=list(values), sort=False)
    wide.columns = [f"{value} ({model})" for value, model in wide.columns]
    return wide.reset_index()


def effects_latex(table: pd.DataFrame, caption: str) -> str:
    """A LaTeX table (booktabs) of an effects table, numbers to one decimal."""
    return table.to_latex(index=False, float_format="%.1f", caption=caption, escape=True)


# ----- run level -----------------------------------------------------------------------------------------

@dataclass
class AblationResult:
    """One ablation of one run: what was ablated and the effects, pretrained and fine-tuned side by side."""

    ablation: Ablation
    overall: pd.DataFrame
    per_class: pd.DataFrame
    texts: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    factors: pd.DataFrame = field(default_factory=pd.DataFrame)  # world runs: shape vs colour accuracy
    ground_truth: pd.DataFrame = field(default_factory=pd.DataFrame)  # world runs: pointing game vs chance
    maps: list[Any] = field(default_factory=list)  # verification.TextMaps of the moved texts
    settings: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every non-empty table by name (overall, per_class, texts, and on world runs factors, ground_truth)."""
        tables = {"overall": self.overall, "per_class": self.per_class, "texts": self.texts,
                  "factors": self.factors, "ground_truth": self.ground_truth}
        return {name: table for name, table in tables.items() if name in TABLES[:3] or len(table)}


TABLES = ("overall", "per_class", "texts", "factors", "ground_truth")


def check_evaluation_data(run: Any) -> None:
    """A run whose evaluation data folder is gone is refused with the path, before any model is loaded."""
    dataset = (run.config or {}).get("dataset") or {}
    root = dataset.get("root")
    if root and not Path(root).expanduser().exists():
        raise DataError(f"run {run.run_id}: its evaluation data is gone: {root} does not exist (dataset "
                        f"{dataset.get('name')!r}); restore it there to verify this run")


def check_method(method: Any) -> None:
    """A method whose features come from a trained part after the decomposed terms (ProLIP's projection:
    `Method.features_are_tower_terms` False) is not measured by ablating the tower's heads; refuse by name."""
    if not method.features_are_tower_terms:
        raise ConfigError(f"ablation: {getattr(method, 'display_name', type(method).__name__)} changes the image "
                          "features after the image tower's projection; head ablation measures the tower itself")


def cache_key(run_id: str, ablation: Ablation, images: str, ln_post_split: str, extra: Mapping[str, Any]) -> str:
    payload = {"run": run_id, "heads": ablation.names(), "images": images, "split": ln_post_split, **extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class AblationStore:
    """Ablation results under <run folder>/verification/, each one JSON file written atomically (a temporary
    file renamed into place: a failure or cancel leaves nothing half-written)."""

    def __init__(self, run: Any):
        if run.path is None:
            raise ConfigError(f"run {run.run_id} has not been saved: nowhere to keep its ablations")
        self.root = Path(run.path) / "verification"

    def path(self, key: str) -> Path:
        return self.root / f"ablation-{key}.json"

    def load(self, key: str) -> AblationResult | None:
        return self._read(self.path(key))

    def all(self) -> list[AblationResult]:
        """Every readable cached ablation of the run, oldest first (what the report's Verification shows)."""
        if not self.root.is_dir():
            return []
        files = sorted(self.root.glob("ablation-*.json"), key=lambda p: (p.stat().st_mtime, p.name))
        return [result for result in map(self._read, files) if result is not None]

    @staticmethod
    def _read(file: Path) -> AblationResult | None:
        from clipsvd.analysis.ground_truth import TextMaps

        if not file.is_file():
            return None
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            ablation = Ablation(tuple(tuple(h) for h in data["heads"]), tuple(data["mlps"]), data["how"])
            return AblationResult(ablation, *(pd.DataFrame(data[k]) for k in ("overall", "per_class", "texts")),
                                  notes=data.get("notes", []),
                                  factors=pd.DataFrame(data.get("factors", [])),
                                  ground_truth=pd.DataFrame(data.get("ground_truth", [])),
                                  maps=[TextMaps.from_dict(m) for m in data.get("maps", [])],
                                  settings=data.get("settings", {}))
        except (OSError, ValueError, KeyError, TypeError):  # unreadable or foreign: recompute
            return None

    def save(self, key: str, result: AblationResult) -> Path:
        data = {"heads": [list(h) for h in result.ablation.heads], "mlps": list(result.ablation.mlps),
                "how": result.ablation.how, "notes": result.notes, "settings": result.settings,
                "maps": [m.to_dict() for m in result.maps],
                **{k: v.to_dict(orient="records") for k, v in result.tables().items()}}
        self.root.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return self.path(key)


def factor_effects(terms: AblationTerms, ablation: Ablation, weights: Mapping[str, torch.Tensor],
                   labels: Mapping[str, Sequence[int]], model: str = "") -> pd.DataFrame:
    """Zero-shot accuracy (%) per world factor (shape, colour), intact vs ablated: ablating a shape head should
    cost shape accuracy more than colour accuracy, and vice versa."""
    ablated = terms.ablated(ablation)
    rows = []
    for factor, factor_weights in weights.items():
        truth = np.asarray(labels[factor])
        before = 100 * float((_predictions(terms.embedding, factor_weights) == truth).mean())
        after = 100 * float((_predictions(ablated, factor_weights) == truth).mean())
        rows.append({"model": model, "factor": factor, "n_images": len(truth), "accuracy": before,
                     "accuracy_ablated": after, "drop": before - after})
    return pd.DataFrame(rows)


def run_ablation(pair: Any, dataset: Any, ablation: Ablation, results: Sequence[TextSpanResult] = (),
                 top_k: int = 3, batch_size: int = 64, ln_post_split: str = DEFAULT_LN_POST_SPLIT.value,
                 images_key: str | None = None, use_cache: bool = True,
                 progress: Callable[[str], None] | None = None, maps_per_text: int = 0,
                 map_heads: int = 4) -> AblationResult:
    """Mean-ablate `ablation` in the pretrained and the fine-tuned model of a run, on `dataset`'s test images.

    results: TextSpan results (pretrained, fine-tuned) whose first `top_k` texts per ablated head are scored.
    On a world dataset also: accuracy per factor (shape, colour) and, with `results`, each head's pointing game
    against the objects' masks. maps_per_text > 0: for the first `map_heads` heads, the texts that entered or
    left their first `top_k` texts, each with that many images and their patch maps before and after.
    Cached per run (folder `verification/`) by the heads, the images and the settings.
    """
    from clipsvd.analysis.run_pair import image_batches
    from clipsvd.analysis.textspan import encode_texts
    from clipsvd.analysis.ground_truth import (
        factor_prompts,
        ground_truth_scores,
        moved_texts,
        text_maps,
        world_truth,
    )

    say = progress or (lambda message: None)
    check_method(pair.method)
    texts = head_top_texts(results, ablation, top_k)
    store = AblationStore(pair.run) if use_cache and pair.run.path is not None else None
    settings = {"top_k": top_k, "maps_per_text": maps_per_text, "map_heads": map_heads,
                "ln_post_split": ln_post_split, "images": len(dataset.test), "dataset": str(dataset.name)}
    key = cache_key(pair.run.run_id, ablation, images_key or f"{dataset.name}:{len(dataset.test)}", ln_post_split,
                    {"texts": texts, "top_k": top_k, "maps": [maps_per_text, map_heads], "version": 2})
    if store is not None and (cached := store.load(key)) is not None:
        say("ablation read back from the run folder")
        return cached
    labels = np.asarray(dataset.test.labels)
    templates = getattr(pair.method.config, "templates", None) or []
    prompts = dataset.prompts(templates)
    truth = world_truth(dataset)
    frames, factor_frames = [], []
    for name, model in zip(MODELS, (pair.before, pair.method)):
        say(f"decomposing the {name} model on {len(labels)} images")
        terms = collect_terms(model, image_batches(dataset, pair.before, batch_size), batch_size, ln_post_split)

        def encode(class_prompts: list[Any]) -> torch.Tensor:
            with torch.no_grad():
                return (pair.method.class_weights(class_prompts) if name == "fine-tuned"
                        else pair.before.encode_text(class_prompts)).float().cpu()

        embedded = dict(zip(texts, encode_texts(model, texts))) if texts else {}
        frames.append(ablation_effects(terms, ablation, encode(prompts), labels, dataset.classnames, embedded, name))
        if truth is not None:
            factor_frames.append(factor_effects(terms, ablation, {f: encode(p) for f, p in factor_prompts().items()},
                                                truth.factors, name))
        del terms
    tables = combine(frames)
    result = AblationResult(ablation, tables["overall"], tables["per_class"], tables["texts"],
                            factors=pd.concat(factor_frames, ignore_index=True) if factor_frames else pd.DataFrame(),
                            settings=settings)
    mapped = [key for key in ablation.heads if all(key in r.heads for r in results)][:map_heads] if results else []
    if truth is not None and mapped:
        say(f"pointing game of {len(mapped)} heads against the objects' masks")
        result.ground_truth = pd.DataFrame(ground_truth_scores(pair, dataset, results, mapped, truth, ln_post_split))
    if maps_per_text > 0 and mapped:
        say(f"patch maps of the texts that entered or left {len(mapped)} heads")
        for layer, head in mapped:
            moved = moved_texts(results[0], results[1], layer, head, top_k)
            # nothing moved: where the head reads its first text (marked "kept"), so there is still a map to check
            for text, mark in moved or [(results[1].heads[(layer, head)].texts[0], "kept")]:
                result.maps.append(text_maps(pair, dataset, results, layer, head, text, mark, maps_per_text,
                                             ln_post_split))
    if store is not None:
        try:
            store.save(key, result)
        except OSError as exc:  # a read-only run store: the result stands, the next call recomputes
            result.notes.append(f"not cached: {store.root} could not be written ({exc.strerror})")
    return result
