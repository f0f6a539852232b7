"""Settings of the world CLIP's pretraining (torch-free, so the CLI builds its --help without torch)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PretrainConfig:
    steps: int = field(default=2400, metadata={"help": "optimizer steps (each on a fresh batch of scenes)"})
    batch_size: int = field(default=128, metadata={"help": "image-caption pairs per step"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate of AdamW"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    warmup: int = field(default=200, metadata={"help": "linear warm-up steps before the cosine decay"})
    curriculum: float = field(default=0.3, metadata={
        "help": "fraction of training over which scenes go from single objects only to half multi-object"})
    shape_negatives: float = field(default=0.5, metadata={
        "help": "fraction of each batch that comes as pairs of scenes differing only in their shapes, so the "
                "contrastive loss cannot be solved by colour alone (0.5 took clean zero-shot shape from 40% to "
                "77% at step 1400 of 2400)"})
    init_from: str | None = field(default=None, metadata={
        "help": "start from this world-CLIP checkpoint instead of random weights (a second, shape-focused stage)"})
    seed: int = field(default=0, metadata={"help": "seed of the scene stream and the initial weights"})
    image_size: int = field(default=64, metadata={"help": "rendered image side in pixels"})
    bf16: bool = field(default=True, metadata={"help": "bfloat16 autocast (faster on CPUs with AVX512-BF16 and GPUs)"})
    eval_every: int = field(default=200, metadata={"help": "steps between zero-shot evaluations"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
