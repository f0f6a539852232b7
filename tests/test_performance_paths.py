"""The fast paths give the same numbers: CLIP-SVD's factored/auto/lean forms and trimmed encoders against the
recomposed form through open_clip's own encoders; and the caches that spare first-use waits (numba kernels, text
embeddings)."""
import copy
import subprocess
import sys

import pytest
import torch

from clipsvd.methods import create_method
from clipsvd.methods.clip_svd import (
    ENCODER_SHORTCUTS, FactoredProjection, training_costs, trims_image_tokens, trims_text_padding,
)
from clipsvd.models import load_model
from tests.conftest import PROMPTS, TINY

ATTENTION, MLP = ("q", "k", "v", "out"), ("fc", "proj")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


TRIMMED = tuple(ENCODER_SHORTCUTS)  # what CLIP-SVD replaces by its exact shortcuts


def logits_and_sigma_grads(method, images, path: str, untrimmed: bool = False):
    """Logits and {σ name: gradient} of one forward+backward with every matrix on `path`; `untrimmed`: through
    open_clip's own encode_text/encode_image (all 77 text positions, every image token in the last block)."""
    method.set_path(path)
    trimmed = {name: method.model.__dict__.pop(name) for name in TRIMMED if name in method.model.__dict__} \
        if untrimmed else {}
    method.model.zero_grad(set_to_none=True)
    try:
        logits = method.logits(images, method.class_weights(PROMPTS))
        (logits * torch.linspace(-1, 1, logits.numel()).reshape(logits.shape)).sum().backward()
    finally:
        method.model.__dict__.update(trimmed)
        method.set_path("auto")
    grads = {name: p.grad.clone() for name, p in method.model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def assert_same(reference, other, tolerance: float = 1e-5) -> None:
    """Logits, and σ-gradients of the attention and of the MLP matrices (each group as one vector)."""
    assert relative(other[0], reference[0]) <= tolerance
    for kinds in (ATTENTION, MLP):
        names = [n for n in reference[1] if n.rsplit(".", 1)[1] in kinds]
        assert names
        a, b = (torch.cat([grads[n] for n in names]) for grads in (other[1], reference[1]))
        assert relative(a, b) <= tolerance, kinds


@pytest.fixture
def perturbed(tiny):
    """CLIP-SVD on the tiny model with σ moved off σ₀ (at σ₀ every form is the pretrained weight)."""
    method = create_method("clip-svd").attach(tiny, PROMPTS)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for sigma in method.trainable_parameters():
            sigma.mul_(1 + 0.1 * torch.randn(sigma.shape, generator=generator))
    return method


def test_factored_auto_and_trimmed_encoders_equal_the_recomposed_form(perturbed, images):
    assert set(TRIMMED) <= set(perturbed.model.__dict__)  # both shortcuts are on for the tiny CLIP
    reference = logits_and_sigma_grads(perturbed, images, "recomposed", untrimmed=True)
    for path in ("factored", "auto", "recomposed"):
        assert_same(reference, logits_and_sigma_grads(perturbed, images, path))
    copy.deepcopy(perturbed)  # no module keeps a tensor of the step's graph (a recomposed W) after it
    assert_same(reference, logits_and_sigma_grads(perturbed, images, "factored", untrimmed=True))
    for svw in perturbed.singular_value_weights().values():  # what the config's lean_memory sets
        svw.lean_memory = True
    assert_same(reference, logits_and_sigma_grads(perturbed, images, "factored"))


def test_lean_memory_is_a_config_field(tiny):
    from clipsvd.methods.clip_svd import CLIPSVDConfig

    method = create_method("clip-svd", CLIPSVDConfig(lean_memory=True)).attach(tiny, PROMPTS)
    assert all(svw.lean_memory for svw in method.singular_value_weights().values())


def plain_factored(x, vh, sigma, bias, us):
    """The same projection as FactoredProjection, left to autograd."""
    hidden = (torch.nn.functional.linear(x, vh) * sigma).chunk(len(us), dim=-1)
    biases = bias.chunk(len(us)) if bias is not None else [None] * len(us)
    return [torch.nn.functional.linear(h, u, b) for h, u, b in zip(hidden, us, biases)]


@pytest.mark.parametrize("blocks", [1, 3])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("heads", [False, True])
def test_factored_projection_has_autograds_values_and_gradients(blocks, recompute, with_bias, heads):
    """Outputs and the gradients of x, σ and the bias, against autograd on the plain expression (float64);
    with three blocks only two outputs are used, so one arrives at backward as None. `heads`: x comes as
    (B, H, L, d_h) and is merged to (B, L, H·d_h) inside."""
    generator = torch.Generator().manual_seed(blocks + 2 * recompute + 4 * with_bias + 8 * heads)
    n, r, m = 6, 5, 7
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, generator=generator) if heads else \
        torch.randn(2, 3, n, dtype=torch.float64, generator=generator)
    x.requires_grad_()
    vh = torch.randn(blocks * r, n, dtype=torch.float64, generator=generator)
    us = [torch.randn(m, r, dtype=torch.float64, generator=generator) for _ in range(blocks)]
    sigma = torch.rand(blocks * r, dtype=torch.float64, generator=generator).add_(0.5).requires_grad_()
    bias = torch.randn(blocks * m, dtype=torch.float64, generator=generator, requires_grad=True) if with_bias else None
    weights = [torch.randn(2, 3, m, dtype=torch.float64, generator=generator) for _ in range(blocks)]
    inputs = [t for t in (x, sigma, bias) if t is not None]

    def run(outputs):
        loss = sum((o * w).sum() for o, w in zip(outputs[:2], weights))
        return [o.detach() for o in outputs], torch.autograd.grad(loss, inputs)

    ours = run(FactoredProjection.apply(x, vh, sigma, bias, recompute, heads, *us))
    plain = run(plain_factored(x.transpose(1, 2).flatten(2) if heads else x, vh, sigma, bias, us))
    for a, b in zip(ours[0] + list(ours[1]), plain[0] + list(plain[1])):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
def test_factored_projection_under_cpu_autocast_follows_autograd(recompute, x_dtype):
    """bfloat16 autocast (the CPU stand-in for CUDA fp16): matmuls in bf16, σ's gradient back in float32; x comes
    in float32 (after a LayerNorm) or already in bf16 (attention's output)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 32, generator=generator).to(x_dtype).requires_grad_()
    vh, us = torch.linalg.qr(torch.randn(96, 32, generator=generator))[0], [torch.randn(32, 32) / 6 for _ in "qkv"]
    sigma = torch.rand(96, generator=generator).add_(0.5).requires_grad_()
    results = []
    for outputs in (lambda: FactoredProjection.apply(x, vh, sigma, None, recompute, False, *us),
                    lambda: plain_factored(x, vh, sigma, None, us)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = sum(o.float().square().mean() for o in outputs())
        results.append(torch.autograd.grad(loss, (x, sigma)))
    for a, b in zip(*results):
        assert a.dtype == b.dtype
        assert relative(a.float(), b.float()) <= 2e-2


def test_evaluation_reuses_one_recomposition_and_matches_training(perturbed, images):
    training = logits_and_sigma_grads(perturbed, images, "factored")[0]
    with torch.no_grad():
        first = perturbed.logits(images, perturbed.class_weights(PROMPTS))
        cached = {name: svw._cache[1] for name, svw in perturbed.singular_value_weights().items()}
        second = perturbed.logits(images, perturbed.class_weights(PROMPTS))
    assert relative(first, training) <= 1e-5 and torch.equal(first, second)
    assert all(svw._cache[1] is cached[name] for name, svw in perturbed.singular_value_weights().items())


def test_attention_calls_outside_open_clips_own_fall_back_to_torch(perturbed):
    """need_weights or a padding mask go through nn.MultiheadAttention with the recomposed weights."""
    attn = perturbed.model.visual.transformer.resblocks[0].attn
    x = torch.randn(2, 5, attn.embed_dim)
    padding = torch.tensor([[False] * 5, [False] * 4 + [True]])
    with torch.no_grad():
        plain, _ = attn(x, x, x, need_weights=False)
        weighted, weights = attn(x, x, x, need_weights=True)
        masked, _ = attn(x, x, x, key_padding_mask=padding, need_weights=False)
        w_in = attn.in_proj_weight_svd()
        w_out = attn.out_proj.weight_svd()
        expected, _ = torch.nn.functional.multi_head_attention_forward(
            x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), attn.embed_dim, attn.num_heads, w_in,
            attn.in_proj_bias, None, None, False, 0.0, w_out, attn.out_proj.bias, training=False,
            need_weights=False)
    assert weights is not None and weights.shape == (2, 5, 5)
    assert relative(plain, expected.transpose(0, 1)) <= 1e-5 and relative(weighted, plain) <= 1e-5
    assert relative(masked[0], plain[0]) <= 1e-5 and relative(masked[1], plain[1]) > 1e-4  # only the padded one


def test_merge_restores_plain_modules(perturbed, images):
    with torch.no_grad():
        before = perturbed.logits(images, perturbed.class_weights(PROMPTS))
    model = perturbed.merge()
    assert not any("forward" in m.__dict__ for m in model.modules()) and not set(TRIMMED) & set(model.__dict__)
    with torch.no_grad():
        assert relative(perturbed.logits(images, perturbed.class_weights(PROMPTS)), before) <= 1e-5


def test_image_trimming_only_where_it_is_exact(tiny):
    assert trims_image_tokens(tiny.model)
    tiny.model.visual.pool_type = "avg"  # every token reaches the feature
    assert not trims_image_tokens(tiny.model)
    tiny.model.visual.pool_type = "tok"
    tiny.model.visual.output_tokens = True
    assert not trims_image_tokens(tiny.model)


def test_text_trimming_only_where_it_is_exact(tiny):
    assert trims_text_padding(tiny.model)
    tiny.model.attn_mask = torch.zeros_like(tiny.model.attn_mask)  # bidirectional: padding would matter
    assert not trims_text_padding(tiny.model)
    tiny.model.attn_mask = None
    assert not trims_text_padding(tiny.model)


def test_cost_model_picks_the_form_with_fewer_multiply_adds():
    d = 768
    factored, recomposed = training_costs(4 * d, d, d, 800, True)  # c_fc, ViT-B/32 batch 16
    assert factored < recomposed
    assert training_costs(4 * d, d, d, 6304, True)[0] < training_costs(4 * d, d, d, 6304, True)[1]  # B/16 b32
    assert training_costs(d, d, d, 800, True)[0] < training_costs(d, d, d, 800, True)[1]  # square, T < 2d
    assert training_costs(d, d, d, 6304, True)[0] > training_costs(d, d, d, 6304, True)[1]  # square, T > 2d


def test_umap_kernels_are_compiled_with_a_disk_cache(tmp_path, monkeypatch):
    """In a fresh process (umap must not be imported yet): its numba kernels get a cache in NUMBA_CACHE_DIR,
    which the dashboard's warm start then finds (it imports umap at server start only when they are cached)."""
    from clipsvd.analysis.embeddings import umap_kernels_cached

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert not umap_kernels_cached()
    code = ("import os; from clipsvd.analysis.embeddings import import_umap; u = import_umap(); "
            "import numba; assert numba.config.CACHE_DIR == os.environ['NUMBA_CACHE_DIR'], numba.config.CACHE_DIR; "
            "k = [u.umap_.smooth_knn_dist, u.layouts.optimize_layout_euclidean, u.spectral.component_layout]; "
            "print([type(f._cache).__name__ for f in k if hasattr(f, '_cache')])")
    env = {"CLIPSVD_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    kinds = eval(out.stdout.strip().splitlines()[-1])
    assert kinds and all(kind == "FunctionCache" for kind in kinds)
    assert umap_kernels_cached()


def test_corpus_text_embeddings_are_cached_without_an_images_key(monkeypatch, images):
    """explain_heads reads a corpus's embeddings back per model fingerprint and corpus, in any process."""
    from clipsvd.analysis import textspan

    loaded = load_model(TINY, "cpu")
    corpus = [f"a photo of thing {i}" for i in range(12)]
    first = textspan.explain_heads(loaded, [images], corpus, texts_per_head=2)
    monkeypatch.setattr(textspan, "encode_texts", lambda *a, **k: pytest.fail("text embeddings recomputed"))
    again = textspan.explain_heads(loaded, [images], corpus, texts_per_head=2)
    assert torch.equal(first.text_embeddings, again.text_embeddings)
    with pytest.raises(pytest.fail.Exception):
        textspan.explain_heads(loaded, [images], corpus[:-1], texts_per_head=2)  # another corpus: a miss


def test_benchmarks_official_form_is_built_on_the_factors_device():
    """bench_clip_svd_step's PerTokenSVDLinear builds its layers where U, σ, V live (on CUDA it built them on the
    CPU and copying the CUDA factors in failed); the meta device shows the same on a CPU-only machine."""
    sys.path.insert(0, "benchmarks")
    try:
        from bench_clip_svd_step import PerTokenSVDLinear
    finally:
        sys.path.remove("benchmarks")
    u, sigma, vh = (torch.empty(shape, device="meta") for shape in ((6, 4), (4,), (4, 5)))
    layer = PerTokenSVDLinear(u, sigma, vh, torch.empty(6, device="meta"))
    assert {p.device.type for p in layer.parameters()} == {"meta"}
