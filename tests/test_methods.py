import pytest
import torch

from clipsvd.errors import CheckpointError, ConfigError
from clipsvd.methods import available_methods, create_method
from clipsvd.models import ModelSpec, load_model
from tests.conftest import PROMPTS, TINY


def reference_logits(loaded, images):
    with torch.no_grad():
        return loaded.logit_scale * loaded.encode_image(images) @ loaded.encode_text(PROMPTS).t()


@pytest.mark.parametrize("name", ["clip-svd", "clipfit", "prolip", "linear-probe", "zero-shot"])
def test_attached_method_equals_pretrained_model(name, images):
    reference = reference_logits(load_model(TINY, "cpu"), images)
    method = create_method(name).attach(load_model(TINY, "cpu"), PROMPTS)
    with torch.no_grad():
        logits = method.logits(images, method.class_weights(PROMPTS))
    assert (logits - reference).abs().max().item() <= 1e-4


def test_clip_svd_trains_only_sigma_and_every_sigma_gets_gradient(tiny, images):
    method = create_method("clip-svd").attach(tiny, PROMPTS)
    params = method.trainable_parameters()
    # 2 encoders × 2 layers × 6 matrix kinds, each σ of length 64 (square 64×64 or thin 256×64).
    assert len(params) == 24 and all(p.ndim == 1 and p.numel() == 64 for p in params)
    method.logits(images, method.class_weights(PROMPTS)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    frozen = [p for p in tiny.model.parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen)


def test_clip_svd_merge_matches_the_factorised_model(tiny, images):
    method = create_method("clip-svd").attach(tiny, PROMPTS)
    with torch.no_grad():
        for i, sigma in enumerate(method.trainable_parameters()):
            sigma.mul_(1 + 0.05 * (i % 3))
        before = method.logits(images, method.class_weights(PROMPTS))
    merged = method.merge()
    assert not method.singular_value_weights()
    assert sum(p.numel() for p in merged.parameters()) == method.original_parameter_count
    with torch.no_grad():
        after = method.logits(images, method.class_weights(PROMPTS))
    assert (before - after).abs().max().item() <= 1e-4
    assert (after - reference_logits(load_model(TINY, "cpu"), images)).abs().max().item() > 1e-2


def test_clip_svd_eval_cache_follows_a_dtype_or_device_move():
    """.to()/.double() keep σ's version counter: the cached recomposed weight must not outlive the move."""
    from clipsvd.methods.clip_svd import SingularValueWeight

    torch.manual_seed(0)
    weight = torch.randn(6, 4)
    svw = SingularValueWeight(weight, ["q", "k"], {"q"})
    with torch.no_grad():
        single = svw()  # cached in float32
        svw.double()
        double = svw()
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    assert (double.float() - weight).abs().max().item() <= 1e-5


def test_clip_svd_selection_by_encoder_layer_kind_and_path(tiny):
    method = create_method("clip-svd", {"encoders": ["visual"], "layers": [1], "matrix_kinds": ["v", "out"]})
    method.attach(tiny, PROMPTS)
    assert sorted(method.adapter_state()) == [
        "visual.transformer.resblocks.1.attn.in_proj_weight_svd.sigma.v",
        "visual.transformer.resblocks.1.attn.out_proj.weight_svd.sigma.out",
    ]
    explicit = create_method("clip-svd", {"module_paths": ["transformer.resblocks.0.mlp.fc"]})
    explicit.attach(load_model(TINY, "cpu"), PROMPTS)
    assert list(explicit.adapter_state()) == ["transformer.resblocks.0.mlp.c_fc.weight_svd.sigma.fc"]
    with pytest.raises(ConfigError, match="name no matrix"):
        create_method("clip-svd", {"module_paths": ["visual.nothing"]}).attach(load_model(TINY, "cpu"), PROMPTS)
    with pytest.raises(ConfigError, match="matrix_kinds"):
        create_method("clip-svd", {"matrix_kinds": ["qq"]})


def test_adapter_state_round_trip_and_mismatch(tiny, images):
    trained = create_method("clip-svd").attach(tiny, PROMPTS)
    with torch.no_grad():
        for sigma in trained.trainable_parameters():
            sigma.mul_(1.1)
        expected = trained.logits(images, trained.class_weights(PROMPTS))
    fresh = create_method("clip-svd").attach(load_model(TINY, "cpu"), PROMPTS)
    fresh.load_adapter_state(trained.adapter_state())
    with torch.no_grad():
        assert torch.allclose(fresh.logits(images, fresh.class_weights(PROMPTS)), expected, atol=1e-5)
    other_arch = create_method("clip-svd", {"encoders": ["visual"]}).attach(load_model(TINY, "cpu"), PROMPTS)
    with pytest.raises(CheckpointError, match="does not match clip-svd"):
        other_arch.load_adapter_state(trained.adapter_state(), source="ckpt.safetensors")
    bad_shape = {k: torch.ones(3) for k in trained.adapter_state()}
    with pytest.raises(CheckpointError, match="shape"):
        fresh.load_adapter_state(bad_shape)


def test_clipfit_regulariser_is_zero_at_start_and_grows(tiny):
    method = create_method("clipfit").attach(tiny, PROMPTS)
    weights = method.class_weights(PROMPTS)
    assert abs(float(method.regularizer(weights.detach()))) < 1e-5
    torch.manual_seed(0)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.add_(torch.randn_like(p))  # random: a constant shift of a bias would vanish in the next LayerNorm
        assert float(method.regularizer(method.class_weights(PROMPTS))) > 1e-3


def test_prolip_penalty_is_a_frobenius_sum(tiny):
    method = create_method("prolip", {"anchor_weight": 0.5}).attach(tiny, PROMPTS)
    with torch.no_grad():
        method.proj.add_(0.1)
    expected = 0.5 * 0.01 * method.proj.numel()
    assert method.regularizer(None).item() == pytest.approx(expected, rel=1e-4)


def test_unknown_method_and_hyperparameter():
    with pytest.raises(ConfigError, match="available"):
        create_method("lora-2000")
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        create_method("clipfit", {"learning_rate": 1})
    assert set(available_methods()) >= {"clip-svd", "clipfit", "prolip", "zero-shot", "linear-probe"}


@pytest.fixture(scope="module")
def vit_b16():
    """An un-weighted ViT-B/16 (random init): only counts and exactness matter here."""
    return load_model(ModelSpec("ViT-B-16"), "cpu")


def attached_copy(reference, name):
    import copy

    loaded = copy.copy(reference)
    loaded.model = copy.deepcopy(reference.model)
    return create_method(name).attach(loaded, PROMPTS)


@pytest.fixture(scope="module")
def vit_b16_svd(vit_b16):
    return attached_copy(vit_b16, "clip-svd")  # one SVD of all 144 matrices (~20 s) shared by two tests


def test_exact_trainable_counts_on_vit_b16(vit_b16, vit_b16_svd):
    svd = vit_b16_svd.parameter_report()
    assert svd["total"] == 149_620_737
    assert svd["trainable"] == 92_160  # 12×(4·768+768+768) + 12×(4·512+512+512)
    assert svd["paper_total"] == 211_054_593
    assert svd["fraction"] == pytest.approx(0.000616, abs=1e-6)
    assert svd["paper_fraction"] == pytest.approx(0.000437, abs=1e-6)
    assert attached_copy(vit_b16, "clipfit").parameter_report()["trainable"] == 46_080
    assert attached_copy(vit_b16, "prolip").parameter_report()["trainable"] == 393_216


def test_clip_svd_is_exact_at_sigma0_on_vit_b16(vit_b16, vit_b16_svd):
    loaded = vit_b16_svd.loaded
    torch.manual_seed(0)
    image = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = vit_b16.model.encode_image(image), vit_b16.model.encode_text(vit_b16.tokenize(PROMPTS))
        actual = loaded.model.encode_image(image), loaded.model.encode_text(loaded.tokenize(PROMPTS))
    for a, b in zip(actual, expected):
        assert (a - b).abs().max().item() <= 1e-4


def test_clip_svd_fast_paths_equal_the_recomposed_form_on_vit_b16(vit_b16_svd):
    """ViT-B/16 shapes (768/512 wide, 12 layers): logits and σ-gradients of the factored (also with lean_memory)
    and automatic forms (text padding dropped) against W recomposed on all 77 text positions, attention and MLP σ
    separately."""
    from tests.test_performance_paths import assert_same, logits_and_sigma_grads

    torch.manual_seed(0)
    image = torch.randn(1, 3, 224, 224)
    sigmas = vit_b16_svd.trainable_parameters()
    saved = [sigma.detach().clone() for sigma in sigmas]
    try:
        with torch.no_grad():
            for sigma in sigmas:
                sigma.mul_(1 + 0.05 * torch.randn(sigma.shape))
        reference = logits_and_sigma_grads(vit_b16_svd, image, "recomposed", untrimmed=True)
        for path in ("factored", "auto"):
            assert_same(reference, logits_and_sigma_grads(vit_b16_svd, image, path))
        for svw in vit_b16_svd.singular_value_weights().values():
            svw.lean_memory = True
        assert_same(reference, logits_and_sigma_grads(vit_b16_svd, image, "factored"))
    finally:
        for svw in vit_b16_svd.singular_value_weights().values():
            svw.lean_memory = False
        with torch.no_grad():
            for sigma, value in zip(sigmas, saved):
                sigma.copy_(value)
        vit_b16_svd.model.zero_grad(set_to_none=True)
