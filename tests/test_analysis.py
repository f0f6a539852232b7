"""Analysis layer: weight shifts, per-head changes, TextSpan decomposition and greedy choice, corpus, UMAP."""
import copy

import numpy as np
import pytest
import torch

from clipsvd.analysis import (
    TextSpanCache,
    compare_heads,
    direct_contributions,
    encode_texts,
    explain_heads,
    head_changes,
    legacy_sigma_block_scores,
    load_corpus,
    parse_corpus,
    singular_value_shifts,
    singular_value_shifts_from_method,
    spectra,
    text_span,
    top_images_for_text,
    weights_after,
)
from clipsvd.analysis.decomposition import LnPostSplit
from clipsvd.analysis.textspan import DEFAULT_RANK
from clipsvd.errors import ConfigError, DataError
from clipsvd.methods import create_method
from clipsvd.models import ModelSpec, load_model
from tests.conftest import PROMPTS, TINY

WIDTH, HEADS, HEAD_DIM = 64, 2, 32


def _randomise_affine_params(model: torch.nn.Module, seed: int = 0) -> None:
    """Random biases and LayerNorm gains, so every bias/γ/β path of the decomposition is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.visual.named_parameters():
            if name.endswith("bias") or ".ln" in name or name.startswith("ln_"):
                param.add_(0.3 * torch.randn(param.shape, generator=generator))


def _clip_svd(loaded):
    return create_method("clip-svd").attach(loaded, PROMPTS)


def _scale_sigma(method, prefix: str, factor: float, kinds=None) -> None:
    with torch.no_grad():
        for path, svw in method.singular_value_weights().items():
            if path.startswith(prefix):
                for kind, sigma in svw.sigma.items():
                    if kinds is None or kind in kinds:
                        sigma.mul_(factor)


# ----- decomposition --------------------------------------------------------------------------------

def test_decomposition_sums_to_embedding_tiny(tiny, images):
    _randomise_affine_params(tiny.model)
    block = tiny.model.visual.transformer.resblocks[1]
    from open_clip.transformer import LayerScale

    block.ls_1, block.ls_2 = LayerScale(WIDTH, 0.7), LayerScale(WIDTH, 1.3)  # LayerScale path
    with torch.no_grad():
        block.ls_1.gamma.add_(0.2 * torch.randn(WIDTH))
        expected = tiny.encode_image(images)
    for split in ("official", "even"):
        for layers in (None, [1], [0, 1]):
            parts = direct_contributions(tiny, images, layers, ln_post_split=split)
            assert parts.heads.shape == (4, len(parts.layers), HEADS, 64)
            total = parts.heads.sum((1, 2)) + parts.rest
            assert (total - expected).abs().max() <= 1e-4
            assert (parts.embedding - expected).abs().max() <= 1e-4
    assert parts.layers == (0, 1) and parts.head_shares == (1 / (1 + 2 * (HEADS + 2)),) * 2
    assert direct_contributions(tiny, images).ln_post_split is LnPostSplit.OFFICIAL
    with pytest.raises(ConfigError, match="ln_post_split"):
        direct_contributions(tiny, images, ln_post_split="uneven")


@torch.no_grad()
def _official_head_terms(model: torch.nn.Module, images: torch.Tensor, per_token: bool = False) -> torch.Tensor:
    """clip_text_span's PRSLogger, reimplemented on open_clip's own modules: per (source token, head)
    terms of the class token, each with out_proj.bias/(T·H), ln_post linearised with μ and β over
    (2L+1)·T·H, then summed over tokens (compute_prs.py). Returns (N, L, H, D)."""
    visual = model.visual
    blocks = list(visual.transformer.resblocks)
    captured = {}
    handle = visual.ln_post.register_forward_hook(lambda m, args, out: captured.update(x=args[0]))
    unnormalised = model.encode_image(images)
    handle.remove()
    residual = captured["x"][:, 0] if captured["x"].ndim == 3 else captured["x"]
    mean = residual.mean(-1)
    std = (((residual ** 2).mean(-1) - mean ** 2) + visual.ln_post.eps).sqrt()  # the official LayerNorm's form
    x = visual._embeds(images)
    per_layer = []
    for block in blocks:
        attn = block.attn
        h, width = attn.num_heads, attn.embed_dim
        y = block.ln_1(x)
        _, weights = attn(y, y, y, need_weights=True, average_attn_weights=False)  # (N, H, T, T)
        v = (y @ attn.in_proj_weight[2 * width:].t() + attn.in_proj_bias[2 * width:])
        v = v.reshape(*v.shape[:2], h, width // h)  # (N, T, H, d_h)
        w_o = attn.out_proj.weight.reshape(width, h, width // h)
        spatial = torch.einsum("nhm,nmhc,dhc->nmhd", weights[:, :, 0], v, w_o)  # (N, T, H, D) at the cls query
        tokens = spatial.shape[1]
        spatial = spatial + attn.out_proj.bias / (tokens * h)
        share = 1 / ((2 * len(blocks) + 1) * tokens * h)
        post = (visual.ln_post.weight * (spatial - mean[:, None, None, None] * share) / std[:, None, None, None]
                + visual.ln_post.bias * share)
        per_layer.append((post @ visual.proj) if per_token else (post @ visual.proj).sum(1))
        x = block(x)
    norm = unnormalised.norm(dim=-1)
    return torch.stack(per_layer, 1) / norm.view(-1, *(1,) * (per_layer[0].ndim))


def test_official_split_matches_the_reference_formula(tiny, images):
    _randomise_affine_params(tiny.model)
    reference = _official_head_terms(tiny.model, images)
    official = direct_contributions(tiny, images, [0, 1], ln_post_split="official")
    even = direct_contributions(tiny, images, [0, 1], ln_post_split="even")
    assert (official.heads - reference).abs().max() <= 1e-5
    assert official.head_shares == (1 / ((2 * 2 + 1) * HEADS),) * 2
    assert (even.heads - official.heads).abs().max() > 1e-3  # the conventions really differ per head


def test_spatial_terms_equal_the_official_prs_spatial_mode(tiny, images):
    _randomise_affine_params(tiny.model)
    reference = _official_head_terms(tiny.model, images, per_token=True)  # (N, L, T, H, D)
    spatial = direct_contributions(tiny, images, [0, 1], spatial=True)
    assert spatial.heads.shape == reference.shape
    assert (spatial.heads - reference).abs().max() <= 1e-5


def test_decomposition_follows_unmerged_clip_svd_sigma(tiny, images):
    method = _clip_svd(tiny)
    _scale_sigma(method, "visual.transformer.resblocks.1.", 1.5)  # no forward since: weights are stale
    parts = direct_contributions(method, images)
    with torch.no_grad():
        expected = tiny.encode_image(images)  # the forward pre-hooks recompose W from σ
    assert (parts.heads.sum((1, 2)) + parts.rest - expected).abs().max() <= 1e-4


def test_decomposition_vit_b16_random_weights():
    loaded = load_model(ModelSpec("ViT-B-16"), "cpu").model.eval()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 224, 224)
    parts = direct_contributions(loaded, images)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(loaded.encode_image(images), dim=-1)
    assert parts.heads.shape == (2, 4, 12, 512) and parts.layers == (8, 9, 10, 11)
    assert (parts.heads.sum((1, 2)) + parts.rest - expected).abs().max() <= 1e-4


def test_decomposition_refuses_what_it_cannot_mirror(tiny, images):
    tiny.model.visual.pool_type = "none"
    with pytest.raises(ConfigError, match="pool_type"):
        direct_contributions(tiny, images)
    with pytest.raises(ConfigError, match="outside"):
        direct_contributions(load_model(TINY, "cpu"), images, layers=[5])


# ----- TextSpan ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus_embeddings():
    texts = load_corpus("general")
    return texts, encode_texts(load_model(TINY, "cpu"), texts, batch_size=256)


def _identifiable_texts(embeddings: torch.Tensor, count: int) -> list[int]:
    """Texts with no near-duplicate in the corpus and low similarity to each other."""
    sims = embeddings @ embeddings.t()
    sims.fill_diagonal_(-1)
    picked: list[int] = []
    for index in torch.argsort(sims.max(dim=1).values).tolist():
        if all(abs(float(sims[index, other])) < 0.5 for other in picked):
            picked.append(index)
        if len(picked) == count:
            return picked
    raise AssertionError("corpus too redundant for the planted test")


def test_textspan_finds_planted_texts_first(corpus_embeddings):
    texts, embeddings = corpus_embeddings
    planted = _identifiable_texts(embeddings, 3)
    generator = torch.Generator().manual_seed(0)
    strengths = torch.tensor([3.0, 2.0, 1.0])
    coefficients = torch.randn(400, 3, generator=generator) * strengths
    contributions = coefficients @ embeddings[planted] + 0.01 * torch.randn(400, 64, generator=generator)
    choice = text_span(contributions + 0.5, embeddings, n_texts=10, rank=HEAD_DIM)  # offset: centring matters
    assert choice.indices[:3] == planted
    assert len(set(choice.indices)) == len(choice.indices) == 10
    explained = np.array(choice.explained_variance)
    # Strongest planted text first, then weaker ones, then noise: explained variance falls step by step
    # through the planted texts; among noise-level texts the greedy order is not monotone (see below).
    assert np.all(np.diff(explained[:4]) < 0) and explained[3:].max() < 1e-3
    assert explained[:3].sum() > 0.99 and explained.sum() <= 1 + 1e-9


def test_textspan_rank_defaults_to_the_official_80_and_is_capped():
    import inspect

    from clipsvd.analysis.run_pair import run_textspan

    assert DEFAULT_RANK == 80
    for function in (text_span, explain_heads, run_textspan):
        assert inspect.signature(function).parameters["rank"].default == DEFAULT_RANK
    generator = torch.Generator().manual_seed(0)
    texts = torch.randn(30, 64, generator=generator)
    assert text_span(torch.randn(24, 64, generator=generator), texts, 3).rank == 24  # images cap it
    assert text_span(torch.randn(200, 64, generator=generator), texts, 3).rank == 64  # so does d
    assert text_span(torch.randn(200, 64, generator=generator), texts, 3, rank=10).rank == 10
    with pytest.raises(ConfigError, match="rank"):
        text_span(torch.randn(24, 64, generator=generator), texts, 3, rank=0)


def test_textspan_explained_variance_can_rise():
    """Faithful to the greedy reference: deflating T can turn a text towards a direction C still varies
    along, so a later step can explain more than an earlier one (documented, not hidden by sorting).
    C varies a little along y: a direction C has nothing along is not part of its span (null space)."""
    angle = np.deg2rad
    t1 = [np.cos(angle(60)), np.sin(angle(60))]
    t2 = [np.cos(angle(110)), np.sin(angle(110))]
    generator = torch.Generator().manual_seed(0)
    contributions = torch.randn(500, 2, generator=generator, dtype=torch.float64) * torch.tensor([1.0, 1e-4])
    choice = text_span(contributions, torch.tensor([t1, t2]), n_texts=2)
    assert choice.indices == [0, 1] and choice.rank == 2
    assert choice.explained_variance[0] == pytest.approx(0.25, abs=1e-5)
    assert choice.explained_variance[1] == pytest.approx(0.75, abs=1e-5)


def test_textspan_cache_has_one_home(tmp_path, monkeypatch, corpus_embeddings):
    """Library default, CLI (through the default) and dashboard share the user cache; no page builds its own."""
    from pathlib import Path

    from clipsvd.analysis import shared_textspan_cache

    monkeypatch.setenv("CLIPSVD_CACHE", str(tmp_path))
    assert shared_textspan_cache().root == tmp_path / "textspan"
    texts, _ = corpus_embeddings
    images = torch.randn(6, 3, 64, 64)
    explain_heads(load_model(TINY, "cpu"), [images], texts, texts_per_head=2)  # no cache given: the shared one
    assert [p.name.split("-")[0] for p in (tmp_path / "textspan").iterdir()] == ["texts"]
    pages = Path(__file__).resolve().parent.parent / "pages"
    assert not [page.name for page in pages.glob("*.py") if "TextSpanCache(" in page.read_text()]


def test_explain_heads_streams_caches_and_compares(tmp_path, corpus_embeddings):
    texts, _ = corpus_embeddings
    loaded = load_model(TINY, "cpu")
    torch.manual_seed(3)
    images = torch.randn(24, 3, 64, 64)
    batches = [(images[i:i + 8], torch.zeros(8)) for i in range(0, 24, 8)]
    cache = TextSpanCache(tmp_path)
    result = explain_heads(loaded, batches, texts, texts_per_head=5, batch_size=5, cache=cache, images_key="rand24")
    assert result.layers == (0, 1) and result.contributions.shape == (24, 2, HEADS, 64)
    expected = direct_contributions(loaded, images).heads
    assert torch.allclose(result.contributions, expected, atol=1e-6)
    for head in result.heads.values():
        assert len(head.texts) == 5 and len(set(head.texts)) == 5
        assert sum(head.explained_variance) <= 1 + 1e-9
    importance = result.importance()
    assert len(importance) == 2 * HEADS and importance["total_variance"].is_monotonic_decreasing
    frame = result.frame()
    assert set(frame.columns) >= {"layer", "head", "step", "text", "explained_variance", "cumulative_variance"}
    assert len(frame) == 2 * HEADS * 5
    assert (frame["rank"] == 24).all() and (frame["ln_post_split"] == "official").all()  # min(80, 24 images, 64)
    assert (importance["rank"] == 24).all() and (importance["ln_post_split"] == "official").all()

    def must_not_run():
        raise AssertionError("the cached contributions should have been used")
        yield

    again = explain_heads(loaded, must_not_run(), texts, texts_per_head=5, cache=cache, images_key="rand24")
    assert again.frame().equals(frame)
    with pytest.raises(AssertionError, match="cached"):  # the other convention's terms are never reused
        explain_heads(loaded, must_not_run(), texts, texts_per_head=5, cache=cache, images_key="rand24",
                      ln_post_split="even")
    even = explain_heads(loaded, batches, texts, texts_per_head=5, rank=8, cache=cache, images_key="rand24",
                         ln_post_split="even")
    assert torch.allclose(even.contributions, direct_contributions(loaded, images, ln_post_split="even").heads,
                          atol=1e-6)
    assert (even.frame()["rank"] == 8).all() and (even.frame()["ln_post_split"] == "even").all()
    assert explain_heads(loaded, must_not_run(), texts, texts_per_head=5, rank=8, cache=cache, images_key="rand24",
                         ln_post_split="even").frame().equals(even.frame())

    tuned = _clip_svd(load_model(TINY, "cpu"))
    _scale_sigma(tuned, "visual.transformer.resblocks.1.", 1.3)
    after = explain_heads(tuned, batches, texts, texts_per_head=5, cache=cache, images_key="rand24")
    assert not torch.allclose(after.contributions, result.contributions)  # other model: not a cache hit
    table = compare_heads(result, after, layer=1, head=0)
    assert list(table.columns[:5]) == ["step", "text_before", "explained_before", "text_after", "explained_after"]
    assert len(table) == 5 and table["text_before"].tolist() == result.head(1, 0).texts


def test_top_images_for_text():
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(64, generator=generator), dim=0)
    contributions = 0.1 * torch.randn(50, 64, generator=generator)
    contributions[7] += 3 * direction
    contributions[21] += 2 * direction
    assert top_images_for_text(contributions, direction, k=2).tolist() == [7, 21]


# ----- weights and heads ------------------------------------------------------------------------------

def test_head_changes_find_the_perturbed_head(tiny):
    after = copy.deepcopy(tiny.model)
    with torch.no_grad():
        w = after.visual.transformer.resblocks[1].attn.in_proj_weight
        w[2 * WIDTH + HEAD_DIM: 2 * WIDTH + 2 * HEAD_DIM] *= 1.25  # W_V rows of head 1, layer 1
    table = head_changes(tiny.model, after)
    top = table.iloc[0]
    assert (top["layer"], top["head"], top["rank"]) == (1, 1, 1)
    assert top["value_change"] == pytest.approx(0.25, rel=1e-6)
    assert top["ov_change"] == pytest.approx(0.25, rel=1e-6)
    assert top["qk_change"] == 0
    assert (table.iloc[1:][["value_change", "ov_change", "qk_change"]] == 0).all().all()


def test_head_changes_qk(tiny):
    after = copy.deepcopy(tiny.model)
    with torch.no_grad():
        after.visual.transformer.resblocks[0].attn.in_proj_weight[:HEAD_DIM] *= 2.0  # W_Q rows of head 0
    table = head_changes(tiny.model, after, rank_by="qk_change")
    assert (table.iloc[0]["layer"], table.iloc[0]["head"]) == (0, 0)
    assert table.iloc[0]["qk_change"] == pytest.approx(1.0, rel=1e-6)


def test_head_change_tells_unchanged_heads_from_a_ranking(tiny):
    from clipsvd.analysis.heads import HeadChange, head_change, head_change_note

    after = copy.deepcopy(tiny.model)
    with torch.no_grad():  # a LayerNorm only, as CLIPFit trains: no attention weight moves
        after.visual.transformer.resblocks[0].ln_1.weight.mul_(1.5)
    unchanged = head_changes(tiny.model, after)
    assert head_change(unchanged, "ov_change") is HeadChange.NO_HEAD and not HeadChange.NO_HEAD.ranks_by_weight
    assert head_change(unchanged, "ov_change", trains=False) is HeadChange.NOTHING_TRAINED
    with torch.no_grad():
        after.visual.transformer.resblocks[0].attn.in_proj_weight[:HEAD_DIM] *= 2.0  # W_Q rows: qk only
    only_qk = head_changes(tiny.model, after)
    assert head_change(only_qk, "ov_change") is HeadChange.NOT_BY_MEASURE
    assert head_change(only_qk, "qk_change") is HeadChange.CHANGED and HeadChange.CHANGED.ranks_by_weight
    note = head_change_note(HeadChange.NO_HEAD, "visual attention heads", "CLIPFit", "All image LayerNorms.",
                            "ov_change", "Ordered by explanation shift.")
    assert note == ("This run changed none of the visual attention heads: CLIPFit trains all image LayerNorms. "
                    "Ordered by explanation shift.")
    assert head_change_note(HeadChange.CHANGED, "heads", "CLIP-SVD", "", "ov_change") is None
    with pytest.raises(ConfigError, match="no column"):
        head_change(unchanged.drop(columns=["qk_change"]), "qk_change")


def test_singular_value_shifts_show_the_scaled_layer(tiny):
    pretrained = load_model(TINY, "cpu").model
    method = _clip_svd(tiny)
    _scale_sigma(method, "visual.transformer.resblocks.1.", 1.2)

    from_sigma = singular_value_shifts_from_method(method)
    assert len(from_sigma) == 2 * 2 * 6  # encoders × layers × kinds
    scaled = (from_sigma["encoder"] == "visual") & (from_sigma["layer"] == 1)
    assert np.allclose(from_sigma.loc[scaled, "rel_change"], 0.2, atol=1e-6)
    assert (from_sigma.loc[~scaled, "rel_change"] == 0).all()
    assert (from_sigma.loc[scaled, "mean_shift"] > 0).all()

    merged = weights_after(method)
    assert method.singular_value_weights() and method.hooked_blocks  # the live method is untouched
    from_weights = singular_value_shifts(pretrained, merged)
    scaled = (from_weights["encoder"] == "visual") & (from_weights["layer"] == 1)
    assert np.allclose(from_weights.loc[scaled, "rel_change"], 0.2, atol=1e-5)
    assert (from_weights.loc[~scaled, "rel_change"] < 1e-5).all()

    spectrum = spectra(pretrained, merged, "visual", 1, "fc")
    assert list(spectrum.columns) == ["index", "sigma_before", "sigma_after"] and len(spectrum) == WIDTH
    assert np.allclose(spectrum["sigma_after"], 1.2 * spectrum["sigma_before"], rtol=1e-5)


def test_weight_analyses_work_for_methods_that_leave_block_matrices_alone(tiny):
    method = create_method("clipfit").attach(tiny, PROMPTS)
    with torch.no_grad():
        for param in method.trainable_parameters():
            param.add_(0.1)
    merged = weights_after(method)
    pretrained = load_model(TINY, "cpu").model
    assert (singular_value_shifts(pretrained, merged)["rel_change"] == 0).all()
    assert (head_changes(pretrained, merged)[["value_change", "ov_change", "qk_change"]] == 0).all().all()
    with pytest.raises(ConfigError, match="no trained singular values"):
        singular_value_shifts_from_method(method)


def test_legacy_sigma_block_scores(tiny):
    method = _clip_svd(tiny)
    with torch.no_grad():
        svw = method.singular_value_weights()["visual.transformer.resblocks.0.attn.in_proj_weight_svd"]
        svw.sigma["v"][:HEAD_DIM] *= 1.5  # the largest 32 σ of v: "block 0", spread over both heads
    table = legacy_sigma_block_scores(method)
    assert "legacy_sigma_block" in table.columns
    assert (table.iloc[0]["layer"], table.iloc[0]["head"]) == (0, 0)
    assert "not a per-head measure" in legacy_sigma_block_scores.__doc__.replace("NOT", "not")


# ----- corpus and UMAP --------------------------------------------------------------------------------

def test_corpus_loader(tmp_path):
    general = load_corpus("general")
    assert len(general) > 500 and len(set(general)) == len(general)
    assert load_corpus("biomedical")[0] == "a frontal chest x-ray"
    path = tmp_path / "mine.txt"
    path.write_text("  a dog \n\na cat\na dog\n   \na cat\na bird\n", encoding="utf-8")
    assert load_corpus(path) == ["a dog", "a cat", "a bird"]
    assert parse_corpus("x\r\ny\nx\n") == ["x", "y"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n   \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt"):
        load_corpus(empty)
    with pytest.raises(DataError, match="missing.txt"):
        load_corpus(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="upload.txt"):
        parse_corpus("\n\n", source="upload.txt")


def test_image_features_of_a_split(tiny):
    from PIL import Image
    from torchvision import transforms as T

    from clipsvd.analysis import image_features

    rng = np.random.default_rng(0)
    split = [(Image.fromarray(rng.integers(0, 255, (80, 72, 3), dtype=np.uint8)), i % 2) for i in range(5)]
    transform = T.Compose([T.Resize(64), T.CenterCrop(64), T.ToTensor()])
    features, labels = image_features(tiny, split, transform, batch_size=2)
    assert features.shape == (5, 64) and labels.tolist() == [0, 1, 0, 1, 0]
    with torch.no_grad():
        expected = tiny.encode_image(torch.stack([transform(image) for image, _ in split]))
    assert np.allclose(features, expected.numpy(), atol=1e-5)
    method = create_method("zero-shot").attach(tiny, PROMPTS)
    assert np.allclose(image_features(method, split, transform)[0], features, atol=1e-5)


def test_umap_before_after_shape():
    from clipsvd.analysis.embeddings import umap_before_after

    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 20)
    centres = rng.normal(size=(3, 32)) * 3
    before = rng.normal(size=(60, 32))
    after = before + centres[np.repeat(np.arange(3), 20)]
    layout = umap_before_after(before, after, labels, seed=0)
    assert layout.shape == (120, 5) and list(layout.columns) == ["x", "y", "label", "which", "index"]
    assert (layout["which"] == "before").sum() == 60 and np.isfinite(layout[["x", "y"]].to_numpy()).all()
    with pytest.raises(DataError):
        umap_before_after(before[:5], after[:4], labels[:5])
