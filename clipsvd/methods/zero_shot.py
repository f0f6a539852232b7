"""Zero-shot CLIP: the pretrained model with its class prompts, nothing trained. The baseline row."""
from __future__ import annotations

from clipsvd.methods.base import Method, MethodConfig
from clipsvd.methods.presets import Setting
from clipsvd.methods.registry import register_method


@register_method
class ZeroShot(Method):
    name = "zero-shot"
    display_name = "Zero-shot CLIP"
    summary = "The model as loaded, classifying by cosine similarity to the class prompts."
    Config = MethodConfig
    trains = False
    changes_weights = False

    @classmethod
    def default_config(cls, setting: Setting = Setting()) -> MethodConfig:
        """Nothing trains, whatever the setting: no preset applies."""
        return MethodConfig(epochs=0)
