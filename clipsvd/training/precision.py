"""Mixed precision for one training run: autocast in fp16/bf16, and fp16's loss scaler with its skipped steps.

The training loop and the cached-view features share it (features are kept in the autocast dtype)."""
from __future__ import annotations

import math

import torch

from clipsvd.errors import ConfigError


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> fp16 autocast on CUDA (the official trainers' amp), fp32 elsewhere."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision fp16: autocast in float16 needs a CUDA device, this run is on {device}; "
                          "use fp32 or bf16")
    return precision


MAX_SKIPPED_STEPS = 20  # fp16: consecutive steps the loss scaler may skip before the run counts as diverged


class MixedPrecision:
    """autocast + a loss scaler (fp16 only) for one training run; a no-op in fp32.

    The fp16 scaler skips a step whose gradients overflow and halves its scale; a loss that overflows in the
    forward pass is skipped at every scale, so after MAX_SKIPPED_STEPS skips in a row the run is stopped
    (`diverged`) instead of "completing" without a single update."""

    def __init__(self, precision: str, device: torch.device):
        self.precision = precision
        self.device_type = device.type
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=precision == "fp16")
        self.skipped_in_a_row = 0

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def tolerates(self, loss_value: float) -> bool:
        """Whether training may go on after this loss: a finite one, or (fp16) a non-finite one the scaler
        will skip, unless it already skipped MAX_SKIPPED_STEPS steps in a row."""
        if math.isfinite(loss_value):
            return True
        return self.scaler.is_enabled() and self.skipped_in_a_row + 1 < MAX_SKIPPED_STEPS

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> bool:
        """One optimiser step; False when the fp16 scaler skipped it (gradients not finite)."""
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(optimizer)
        self.scaler.update()
        applied = scale is None or self.scaler.get_scale() >= scale  # the scaler lowers its scale when it skips
        self.skipped_in_a_row = 0 if applied else self.skipped_in_a_row + 1
        return applied

    def divergence_message(self, loss_value: float, step: int, lr: float) -> str:
        """Why the run stopped, for the run store, the CLI and the dashboard."""
        if self.scaler.is_enabled() and not math.isfinite(loss_value):
            return (f"loss became {loss_value} at step {step} after the fp16 loss scaler skipped "
                    f"{self.skipped_in_a_row} steps in a row: the loss overflows float16. Stopped and restored the "
                    f"last parameters with a finite loss. Use precision bf16 or fp32, or lower the learning rate "
                    f"(now {lr:g}).")
        return (f"loss became {loss_value} at step {step}; stopped and restored the last parameters with a finite "
                f"loss. Lower the learning rate (now {lr:g}).")


__all__ = ["MAX_SKIPPED_STEPS", "MixedPrecision", "resolve_precision"]
