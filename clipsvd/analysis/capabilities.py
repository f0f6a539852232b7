"""Which run analyses a model supports, decided on a weightless skeleton before any heavy loading.

`analyze` on BiomedCLIP used to load for minutes and then stop at an unsupported step; building
the architecture on the meta device (no weights, no memory) answers the question in a second.
"""
from __future__ import annotations

import torch

from clipsvd.choices import ANALYSES
from clipsvd.errors import ClipsvdError
from clipsvd.models import AUTO_ARCHITECTURE, ModelSpec
from clipsvd.models.layout import attention_heads, encoder_blocks
from clipsvd.models.checkpoints.loaders import create_model_for_weights



def model_skeleton(spec: ModelSpec) -> torch.nn.Module:
    """The architecture of `spec` on the meta device: shapes and module types, no weights read."""
    from clipsvd.models.tiny import register_tiny_model

    register_tiny_model()
    if spec.is_hub_model:
        from clipsvd.models.hub import check_hub_model

        check_hub_model(spec.architecture)
        with torch.device("meta"):
            return create_model_for_weights(spec.architecture, device="meta", load_weights=False,
                                            pretrained_text=False)
    # Checkpoint files without a named architecture always become open_clip ViT CLIPs.
    name = "ViT-B-16" if spec.architecture == AUTO_ARCHITECTURE else spec.architecture
    with torch.device("meta"):
        return create_model_for_weights(name, device="meta")  # shapes only: no "initialized randomly"


def unsupported_analyses(spec: ModelSpec, wanted: list[str] | tuple[str, ...] = ANALYSES) -> dict[str, str]:
    """{analysis: why it cannot run} for the analyses of `wanted` this model does not support."""
    from clipsvd.analysis.decomposition import vision_tower

    model = model_skeleton(spec)
    skipped: dict[str, str] = {}
    if "heads" in wanted:
        try:
            for encoder in ("visual", "text"):
                encoder_blocks(model, encoder)
                attention_heads(model, encoder)
        except ClipsvdError as exc:
            skipped["heads"] = str(exc)
    if "sv" in wanted:
        try:
            encoder_blocks(model, "visual")
        except ClipsvdError as exc:
            skipped["sv"] = str(exc)
    if "textspan" in wanted:
        try:
            vision_tower(model)
        except ClipsvdError as exc:
            skipped["textspan"] = str(exc)
    return skipped
