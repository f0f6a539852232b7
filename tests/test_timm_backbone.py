"""The timm image-tower family (BiomedCLIP's) works with every method, on a small timm ViT built offline."""
import copy

import open_clip
import pytest
import torch

from clipsvd.methods import create_method
from clipsvd.models import ModelSpec, load_model
from clipsvd.models.tiny import TINY_MODEL_CONFIG

TIMM_TEST_MODEL = "clipsvd-timm-test"
PROMPTS = ["a photo of a cat.", "a photo of a dog."]


@pytest.fixture(scope="module")
def timm_spec():
    open_clip.factory._MODEL_CONFIGS[TIMM_TEST_MODEL] = {
        "embed_dim": 64,
        "vision_cfg": {"timm_model_name": "vit_tiny_patch16_224", "timm_model_pretrained": False,
                       "timm_pool": "token", "timm_proj": "linear", "image_size": 224},
        "text_cfg": copy.deepcopy(TINY_MODEL_CONFIG["text_cfg"]),
    }
    return ModelSpec(TIMM_TEST_MODEL)


@pytest.mark.parametrize("name, trainable", [("clip-svd", 12 * 6 * 192 + 2 * 6 * 64), ("clipfit", 9_728),
                                             ("prolip", 192 * 64)])
def test_methods_on_a_timm_image_tower(timm_spec, name, trainable):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    reference = load_model(timm_spec, "cpu")
    with torch.no_grad():
        expected = reference.logit_scale * reference.encode_image(images) @ reference.encode_text(PROMPTS).t()
    method = create_method(name).attach(load_model(timm_spec, "cpu"), PROMPTS)
    assert method.parameter_report()["trainable"] == trainable
    logits = method.logits(images, method.class_weights(PROMPTS))
    assert (logits.detach() - expected).abs().max().item() <= 1e-4
    logits.sum().backward()
    assert all(p.grad is not None for p in method.trainable_parameters())


def test_spatial_terms_on_a_timm_tower_sum_to_the_per_head_terms(timm_spec):
    from clipsvd.analysis.decomposition import direct_contributions

    torch.manual_seed(0)
    loaded = load_model(timm_spec, "cpu")
    loaded.model.eval()
    images = torch.randn(2, 3, 224, 224)
    per_head = direct_contributions(loaded, images, [10, 11])
    spatial = direct_contributions(loaded, images, [10, 11], spatial=True)
    assert spatial.grid == (14, 14) and spatial.heads.shape[2] == 197
    assert (spatial.heads.sum(2) - per_head.heads).abs().max() <= 1e-5
