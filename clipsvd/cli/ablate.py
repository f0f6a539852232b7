"""`ablate`: mean-ablate image heads of a run, pretrained and fine-tuned side by side — the check that a head's
explanation is true (if its words are right, removing it costs what they describe)."""
from __future__ import annotations

import argparse

from clipsvd.cli.arguments import add_field_argument


def add_ablate(commands) -> None:
    ablate = commands.add_parser("ablate", help="mean-ablate image heads of a run (pretrained vs fine-tuned): "
                                 "accuracy overall and per class, similarity to the heads' texts → CSV + LaTeX")
    ablate.add_argument("run_id")
    which = ablate.add_mutually_exclusive_group(required=True)
    which.add_argument("--heads", help="L<layer>.H<head> list, e.g. L3.H2,L2.H1; L3: every head of layer 3; "
                       "L3.MLP: its MLP")
    which.add_argument("--top", type=int, help="the N most-changed heads of the Heads ranking (ov_change)")
    which.add_argument("--match", help="heads whose top TextSpan texts contain this text (or carry it as their "
                       "corpus tag, e.g. shape)")
    ablate.add_argument("--top-k", type=int, default=5, help="TextSpan texts per head matched and scored")
    ablate.add_argument("--corpus", default=None, help="world, general, biomedical or a text file (default: the "
                        "one that suits the run's model)")
    ablate.add_argument("--images-per-class", type=int, default=20)
    ablate.add_argument("--out", default=None, help="output folder (default ablation-RUN_ID)")
    ablate.add_argument("--no-cache", action="store_true", help="recompute instead of reading the run's cache")
    add_field_argument(ablate, "device")
    ablate.set_defaults(func=cmd_ablate)


def cmd_ablate(args: argparse.Namespace) -> int:
    """Mean-ablate image heads of a run (pretrained and fine-tuned side by side): accuracy overall and per class,
    similarity to the heads' top TextSpan texts; tables printed and written as CSV and LaTeX."""
    from pathlib import Path

    import pandas as pd

    from clipsvd.analysis import head_changes
    from clipsvd.analysis.ablation import (
        check_evaluation_data,
        effects_latex,
        matching_heads,
        parse_heads,
        run_ablation,
        top_ranked,
        tower_shape,
    )
    from clipsvd.analysis.capabilities import model_skeleton
    from clipsvd.analysis.corpus import corpus_tags, default_corpus_for
    from clipsvd.analysis.run_pair import analysis_images, load_run_pair, run_model_spec, run_textspan
    from clipsvd.runs import RunStore

    run = RunStore(args.runs_dir).load(args.run_id)
    check_evaluation_data(run)
    n_layers, n_heads = tower_shape(model_skeleton(run_model_spec(run)))  # refuses unsupported towers, no loading
    chosen = parse_heads(args.heads, n_layers, n_heads) if args.heads else None
    pair = load_run_pair(run, args.device)
    images = analysis_images(run, args.images_per_class)
    corpus = args.corpus or default_corpus_for(run_model_spec(run))
    tags = corpus_tags(corpus)
    if args.top is not None:
        chosen = top_ranked(head_changes(pair.before, pair.method, "visual"), args.top)
    layers = sorted({layer for layer, _ in chosen.heads}) if chosen is not None else list(range(n_layers))
    results = run_textspan(pair, images, list(tags), layers, args.top_k) if layers else ()
    if chosen is None:
        chosen = matching_heads(results, args.match, args.top_k, tags)
        if chosen.empty:
            print(chosen.how, flush=True)
            return 1
    print(f"ablating {chosen.text()} on {len(images.test)} test images", flush=True)
    result = run_ablation(pair, images, chosen, results, top_k=args.top_k, use_cache=not args.no_cache,
                          progress=lambda message: print(f"  {message}", flush=True))
    for note in result.notes:
        print(f"  {note}", flush=True)
    out = Path(args.out or f"ablation-{args.run_id}")
    out.mkdir(parents=True, exist_ok=True)
    from clipsvd.report.verification import wide_tables

    wide = wide_tables(result)  # overall, per class, texts; on world runs also per factor and the pointing game
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        for name, table in wide.items():
            print(f"\n{name}\n{table.to_string(index=False)}")
            table.to_csv(out / f"ablation_{name}.csv", index=False)
            (out / f"ablation_{name}.tex").write_text(
                effects_latex(table, f"Mean ablation of {chosen.text()}: {name.replace('_', ' ')}"), encoding="utf-8")
    print(f"\nwrote {out}/ablation_{{{','.join(wide)}}}.csv and .tex", flush=True)
    return 0
