"""Model loading: open_clip architectures, weight sources, device choice."""
from clipsvd.models.device import resolve_device
from clipsvd.models.loading import (
    AUTO_ARCHITECTURE,
    DEFAULT_ARCHITECTURE,
    RANDOM_WEIGHTS,
    UNTRAINED_LABEL,
    LoadedModel,
    ModelSpec,
    WeightsInfo,
    list_architectures,
    list_pretrained_tags,
    load_model,
    register_post_build,
    register_weights_source,
    save_checkpoint,
)
from clipsvd.models.tiny import TINY_MODEL_NAME, register_model_config, register_tiny_model
from clipsvd.models.world import WORLD_LABEL, WORLD_MODEL_NAME, WORLD_WEIGHTS, register_world_model

register_world_model()

__all__ = [
    "AUTO_ARCHITECTURE", "WeightsInfo", "register_model_config", "register_post_build", "register_weights_source",
    "DEFAULT_ARCHITECTURE", "RANDOM_WEIGHTS", "UNTRAINED_LABEL", "LoadedModel", "ModelSpec", "TINY_MODEL_NAME",
    "list_architectures", "list_pretrained_tags", "load_model", "register_tiny_model", "resolve_device",
    "save_checkpoint", "WORLD_LABEL", "WORLD_MODEL_NAME", "WORLD_WEIGHTS", "register_world_model",
]
