"""Method registry (timm-style): adding a method is adding a module that calls `register_method`."""
from __future__ import annotations

from typing import TypeVar

from clipsvd.errors import ConfigError

_METHODS: dict[str, type] = {}
M = TypeVar("M", bound=type)


def register_method(cls: M) -> M:
    if cls.name in _METHODS:
        raise ValueError(f"method '{cls.name}' registered twice")
    _METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type:
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(f"method: '{name}' is unknown; available: {', '.join(_METHODS)}") from None


def available_methods() -> list[str]:
    """Methods one can train (those whose runs only an import makes, such as `imported`, are left out)."""
    return [name for name, cls in _METHODS.items() if getattr(cls, "runnable", True)]


def create_method(name: str, config=None):
    """Instantiate a registered method with its default (or given) hyperparameters."""
    return get_method(name)(config)
