"""What the commands print while they work: progress lines, a run's starting values and scores, a grid on Ray."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from clipsvd.formatting import fraction_text


def run_on_ray(args: argparse.Namespace, label: str, start: Callable[[Any], Any]):
    """`start(launch)` under one progress bar, with the Ray flags of `add_ray_arguments`; None after Ctrl-C (its
    tasks cancelled; the runs that came home are saved)."""
    from clipsvd.training.sweep import Launch, ProgressBar

    with ProgressBar(label) as bar:
        launch = Launch(args.address, args.workers, args.gpus_per_run, args.cpus_per_run, args.retries,
                        args.shared_store, on_result=bar.line, on_progress=bar)
        try:
            table = start(launch)
        except KeyboardInterrupt:
            table = None
    if table is None:
        print("cancelled: the runs that finished are in the store; run the same command again to go on",
              file=sys.stderr)
    elif "resumed" in table and table["resumed"].astype(bool).any():
        print(f"{int(table['resumed'].sum())} of {len(table)} runs were already in the store (not run again)")
    return table


def progress_printer(every: int) -> Callable[[Any], None]:
    def report(progress) -> None:
        if progress.phase == "train":
            if progress.step % every == 0 or progress.step == progress.total_steps:
                eta = progress.eta_s or 0.0
                print(f"  step {progress.step}/{progress.total_steps}  epoch {progress.epoch}/{progress.epochs}  "
                      f"loss {progress.loss:.4f}  lr {progress.lr:.2e}  eta {eta:.0f}s", flush=True)
        elif progress.phase == "load":
            print(f"  {progress.message}", flush=True)
    return report


def defaults_line(config) -> str:
    """What a run starts from, said before it trains: its lr and length, and where the preset values came from."""
    method_config, preset = config.method_config(), config.preset()
    length = (f"{method_config.cached_views} cached views" if method_config.cached_views else
              f"{method_config.iterations} iterations" if method_config.iterations is not None else
              f"{method_config.epochs} epochs")
    given = sorted(config.hyperparameters)
    origin = "; ".join(sorted(set(preset.sources.values()))) or "none (the method's defaults)"
    return (f"lr {method_config.lr:g} · {length}" + (f" · given: {', '.join(given)}" if given else "")
            + f" · preset from {origin}")


def score_line(metrics: dict) -> str:
    """A run's scores and its trainable share, on one line."""
    parts = [f"{k} {metrics[k]:.2f}" for k in ("accuracy", "base", "novel", "hm") if metrics.get(k) is not None]
    parts += [f"{t} {metrics[f'accuracy_{t}']:.2f}" for t in metrics.get("targets") or ()
              if metrics.get(f"accuracy_{t}") is not None]
    if metrics.get("target_average") is not None:
        parts.append(f"target average {metrics['target_average']:.2f}")
    parts.append(f"trainable {metrics.get('trainable', 0):,} ({fraction_text(metrics.get('trainable_fraction', 0))})")
    return "  ".join(parts)
