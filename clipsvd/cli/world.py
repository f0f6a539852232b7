"""`pretrain-world`: reproduce the shipped world CLIP from a seed."""
from __future__ import annotations

import argparse
import dataclasses

from clipsvd.cli.arguments import add_dataclass_arguments


def add_pretrain_world(commands) -> None:
    pretrain = commands.add_parser("pretrain-world", help="reproduce the shipped world CLIP from a seed "
                                   "(about an hour on 2 CPU cores, minutes on a GPU)")
    from clipsvd.worldclip.config import PretrainConfig  # torch-free

    add_dataclass_arguments(pretrain, PretrainConfig)
    pretrain.add_argument("--out", default="clipsvd-world.safetensors",
                          help="checkpoint to write (fp16 safetensors; the learning curve goes beside it as .jsonl)")
    pretrain.set_defaults(func=cmd_pretrain_world)


def cmd_pretrain_world(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clipsvd.checksums import sha256_of
    from clipsvd.worldclip.config import PretrainConfig
    from clipsvd.worldclip.pretrain import pretrain_world

    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PretrainConfig)})
    with tqdm(total=cfg.steps, unit="step", desc="pretraining the world CLIP") as bar:
        def progress(step: int, record: dict) -> None:
            bar.n = step
            bar.set_postfix({k: v for k, v in record.items() if k in ("loss", "shape_acc", "colour_acc")})
            if "shape_acc" in record:
                bar.write(f"step {step}: zero-shot shape {record['shape_acc']:.1%}, colour {record['colour_acc']:.1%}")
        pretrain_world(cfg, args.out, progress)
    print(f"wrote {args.out} (sha256 {sha256_of(args.out)}) and its learning curve")
    return 0
