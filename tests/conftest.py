import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# CLIP-SVD's decomposition cache: a fresh folder per test session, never the user's ~/.cache.
os.environ.setdefault("CLIPSVD_CACHE", tempfile.mkdtemp(prefix="clipsvd-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from clipsvd.models import TINY_MODEL_NAME, ModelSpec, load_model  # noqa: E402

TINY = ModelSpec(TINY_MODEL_NAME)
PROMPTS = ["a photo of a cat.", "a photo of a dog.", "a photo of a cow."]


@pytest.fixture
def tiny():
    """A fresh tiny CLIP (2 layers, width 64) on CPU."""
    return load_model(TINY, "cpu")


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.randn(4, 3, 64, 64)


def tiny_hf_clip(seed: int = 2):
    """A tiny transformers CLIPModel (2 layers of width 64 per tower, 32 px) in eval mode, for the loaders and
    importers of Hugging Face checkpoints."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 16},
        vision_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        projection_dim=32)
    torch.manual_seed(seed)
    return CLIPModel(config).eval()
