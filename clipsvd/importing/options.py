"""What an import is asked for besides the base model, with each field's help written once: `clipsvd import`'s
arguments and the dashboard's "Import a fine-tuned model" form both read it (clipsvd.choices.field_helps)."""
from __future__ import annotations

from dataclasses import dataclass, field

from clipsvd.choices import described


@dataclass
class ImportOptions:
    """The fine-tuned source and how strictly its keys must match the base's."""

    finetuned: str = field(default="", metadata=described(
        "the fine-tuned checkpoint: any file the model loader reads (open_clip, OpenAI TorchScript, safetensors, "
        "transformers CLIPModel, open_clip training checkpoint), an official CLIP-SVD checkpoint, a CLIP-LoRA "
        "save_lora file, or a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)"))
    strict: bool = field(default=True, metadata=described(
        "refuse checkpoints with missing or extra tensors (default true); false: missing tensors keep the base's "
        "values, extra ones are dropped, and the run's label says so"))
    label: str | None = field(default=None, metadata=described(
        "the run's label (default: 'imported from FILE')"))
