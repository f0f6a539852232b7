"""Adaptation methods, one module each behind `Method`; importing a module registers it."""
from clipsvd.methods import clip_lora, clip_svd, clipfit, coop, imported, linear_probe, peft_lora, prolip, zero_shot  # noqa: F401,E501
from clipsvd.methods.base import Method, MethodConfig, count_parameters
from clipsvd.methods.presets import PROTOCOLS
from clipsvd.methods.registry import available_methods, create_method, get_method, register_method

__all__ = [
    "PROTOCOLS", "Method", "MethodConfig", "available_methods", "count_parameters", "create_method", "get_method",
    "register_method",
]
