"""Device choice: CUDA when present, CPU otherwise; always overridable."""
from __future__ import annotations

import torch

from clipsvd.errors import ConfigError


def resolve_device(preference: str | torch.device | None = "auto") -> torch.device:
    """Turn 'auto' / 'cpu' / 'cuda' / 'cuda:1' into a device, refusing CUDA where there is none."""
    if isinstance(preference, torch.device):
        return preference
    if preference in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as exc:
        raise ConfigError(f"device: '{preference}' is not a device name (expected auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: '{preference}' was requested but this machine has no CUDA device")
    return device
