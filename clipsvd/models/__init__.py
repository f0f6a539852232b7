"""Model loading: open_clip architectures, weight sources, device choice."""
from clipsvd.models.device import resolve_device
from clipsvd.models.loading import (
    DEFAULT_ARCHITECTURE,
    RANDOM_WEIGHTS,
    UNTRAINED_LABEL,
    LoadedModel,
    ModelSpec,
    list_architectures,
    list_pretrained_tags,
    load_model,
    save_checkpoint,
)
from clipsvd.models.tiny import TINY_MODEL_NAME, register_tiny_model

__all__ = [
    "DEFAULT_ARCHITECTURE", "RANDOM_WEIGHTS", "UNTRAINED_LABEL", "LoadedModel", "ModelSpec", "TINY_MODEL_NAME",
    "list_architectures", "list_pretrained_tags", "load_model", "register_tiny_model", "resolve_device",
    "save_checkpoint",
]
