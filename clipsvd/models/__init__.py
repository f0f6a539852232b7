"""Models: the spec (spec), building one (loading), checkpoint files (checkpoints), extension points (registry),
the shipped world CLIP's weights (world_weights), block layouts (layout), device choice (device)."""
from clipsvd.models.device import resolve_device
from clipsvd.models.loading import LoadedModel, list_architectures, list_pretrained_tags, load_model, save_checkpoint
from clipsvd.models.registry import register_post_build, register_weights_source
from clipsvd.models.spec import (
    AUTO_ARCHITECTURE,
    DEFAULT_ARCHITECTURE,
    RANDOM_WEIGHTS,
    UNTRAINED_LABEL,
    ModelSpec,
    WeightsInfo,
)
from clipsvd.models.tiny import TINY_MODEL_NAME, register_model_config, register_tiny_model
from clipsvd.models.world_weights import WORLD_LABEL, WORLD_MODEL_NAME, WORLD_WEIGHTS, register_world_model

register_world_model()

__all__ = [
    "AUTO_ARCHITECTURE", "WeightsInfo", "register_model_config", "register_post_build", "register_weights_source",
    "DEFAULT_ARCHITECTURE", "RANDOM_WEIGHTS", "UNTRAINED_LABEL", "LoadedModel", "ModelSpec", "TINY_MODEL_NAME",
    "list_architectures", "list_pretrained_tags", "load_model", "register_tiny_model", "resolve_device",
    "save_checkpoint", "WORLD_LABEL", "WORLD_MODEL_NAME", "WORLD_WEIGHTS", "register_world_model",
]
