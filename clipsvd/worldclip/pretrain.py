"""Pretrain the small world CLIP contrastively on an endless stream of captioned clean scenes.

nanoGPT-style: one loop on one screen. Each step draws fresh scenes from a seeded generator,
renders them, captions them and takes an AdamW step on open_clip's contrastive loss (ClipLoss),
with warm-up then cosine decay (the training loop's own schedule). A curriculum starts with single objects (one clear subject per
caption) and mixes in multi-object scenes. Zero-shot colour and shape accuracy on held-out clean
single objects are logged as it goes, so the learning curve is part of the result.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import open_clip
import torch

from clipsvd.models.world_weights import WORLD_MODEL_NAME, create_world_model
from clipsvd.training.loop import cosine_with_warmup
from clipsvd.world.captions import captions
from clipsvd.world.render import render
from clipsvd.world.scenes import sample_scenes
from clipsvd.worldclip.config import PretrainConfig
from clipsvd.worldclip.zeroshot import held_out_accuracy, normalise


def _single_prob(cfg: PretrainConfig, step: int) -> float:
    ramp = max(1, int(cfg.curriculum * cfg.steps))
    return 1.0 - 0.5 * min(1.0, step / ramp)


def pretrain_world(cfg: PretrainConfig, out: str | Path, progress: Callable[[int, dict], None] | None = None
                   ) -> tuple[torch.nn.Module, list[dict]]:
    """Train from scratch; writes `out` (fp16 safetensors) and `out`.jsonl (the learning curve)."""
    from clipsvd.models.device import resolve_device

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = create_world_model()
    if cfg.init_from:
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(cfg.init_from).items()})
    model = model.to(device)
    tokenizer = open_clip.get_tokenizer(WORLD_MODEL_NAME)
    loss_fn = open_clip.ClipLoss()
    decayed = {n: p.ndim >= 2 and "embedding" not in n for n, p in model.named_parameters()}  # matrices only
    opt = torch.optim.AdamW([
        {"params": [p for n, p in model.named_parameters() if decayed[n]], "weight_decay": cfg.weight_decay},
        {"params": [p for n, p in model.named_parameters() if not decayed[n]], "weight_decay": 0.0},
    ], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    schedule = cosine_with_warmup(opt, cfg.warmup, cfg.steps, min_lr=0.0)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict] = []
    start = time.time()
    for step in range(cfg.steps + 1):
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            record = {"step": step, "seconds": round(time.time() - start, 1),
                      **held_out_accuracy(model, tokenizer, device, cfg.image_size)}
            model.train()
            if history and "loss" in history[-1]:
                record["loss"] = history[-1]["loss"]
            history.append(record)
            if progress:
                progress(step, record)
            _save(model, cfg, history, out)  # a usable checkpoint at every evaluation
        if step == cfg.steps:
            break
        scenes = sample_scenes(rng, cfg.batch_size, _single_prob(cfg, step), cfg.shape_negatives)
        images = normalise(render(scenes, "clean", cfg.image_size, seed=int(rng.integers(2**31))), device)
        texts = tokenizer(captions(rng, scenes.groups)).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            image_features, text_features, logit_scale = model(images, texts)
            loss = loss_fn(image_features.float(), text_features.float(), logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lr = opt.param_groups[0]["lr"]
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0:
            history.append({"step": step, "loss": round(loss.item(), 4), "lr": lr})
            if progress:
                progress(step, history[-1])

    return model, history


def _save(model: torch.nn.Module, cfg: PretrainConfig, history: list[dict], out: str | Path) -> None:
    """fp16 safetensors at `out` and the learning curve beside it (`.jsonl`), each written atomically."""
    from safetensors.torch import save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata={"config": json.dumps(asdict(cfg))})
    tmp.replace(out)
    curve = out.with_suffix(".jsonl")
    curve.with_name(curve.name + ".tmp").write_text("".join(json.dumps(r) + "\n" for r in history))
    curve.with_name(curve.name + ".tmp").replace(curve)
