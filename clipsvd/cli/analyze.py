"""`analyze` and `report`: what a run changed (σ shifts, heads, TextSpan, UMAP) as CSV + figures, or one HTML
report."""
from __future__ import annotations

import argparse

from clipsvd.choices import ANALYSES, FIGURE_FORMATS
from clipsvd.cli.arguments import add_field_argument
from clipsvd.errors import ClipsvdError, ConfigError


def add_analyze(commands) -> None:
    analyze = commands.add_parser("analyze", help="what a run changed: σ shifts and singular-vector turns, heads, "
                                  "TextSpan, UMAP, a learned prompt's nearest words → CSV + figures")
    analyze.add_argument("run_id")
    analyze.add_argument("--out", help="output folder (default analysis-RUN_ID)")
    analyze.add_argument("--what", nargs="+", default=list(ANALYSES), choices=ANALYSES,
                         help="sv: σ shifts and how far the top singular vectors turned; heads; textspan; umap; "
                              "words: the nearest vocabulary words of a learned prompt (CoOp)")
    analyze.add_argument("--format", nargs="+", default=["html"], choices=FIGURE_FORMATS,
                         help="figure formats (png/svg/pdf need chromium for kaleido)")
    analyze.add_argument("--corpus", default="general", help="general, biomedical, or a text file (one per line)")
    analyze.add_argument("--layers", type=int, nargs="+", default=None, help="TextSpan layers (default: last 4)")
    analyze.add_argument("--texts-per-head", type=int, default=20)
    analyze.add_argument("--rank", type=int, default=None,
                         help="TextSpan: rank of the span texts are projected onto, capped by images and embedding "
                              "size (default: clip_text_span's --w_ov_rank, 80)")
    analyze.add_argument("--ln-post-split", default=None, metavar="{official,even}",
                         help="TextSpan: how ln_post's mean and bias are shared among terms: 'official' (the "
                              "default; clip_text_span: μ/((2L+1)H) per head, each head 1/H of the out_proj bias) "
                              "or 'even' (μ/K for each of K = 1+L(H+2) terms, the bias in the rest)")
    analyze.add_argument("--top-heads", type=int, default=3, help="TextSpan figures for the most important heads")
    analyze.add_argument("--images-per-class", type=int, default=20)
    add_field_argument(analyze, "device")
    analyze.set_defaults(func=cmd_analyze)



def add_report(commands) -> None:
    report = commands.add_parser("report", help="one self-contained HTML report of a run (config, metrics, σ shifts, "
                                 "head ranking, explanations before vs after, UMAP), optionally a PDF and a second "
                                 "run side by side")
    report.add_argument("run_id")
    report.add_argument("--compare", metavar="RUN_ID2", default=None, help="a second run, side by side (e.g. "
                        "CLIPFit on the same data); of the same base, also the first run measured against it directly "
                        "(σ shifts, head ranking and explanation shift of the two fine-tunes' difference)")
    report.add_argument("--out", default=None, help="HTML file (default report-RUN_ID[-vs-RUN_ID2].html); the "
                        "explanation tables (and a transfer run's targets table) go beside it as CSV and LaTeX")
    report.add_argument("--pdf", action="store_true", help="also print it to PDF beside the HTML (needs chromium)")
    report.add_argument("--measure", default="ov_change",
                        help="rank heads by ov_change, value_change, qk_change or out_change (default ov_change)")
    report.add_argument("--corpus", default=None, help="world, general, biomedical or a text file (default: the one "
                        "that suits the run's model)")
    report.add_argument("--layers", type=int, nargs="+", default=None,
                        help="TextSpan layers (default: the last 4 plus those of the most-changed heads)")
    report.add_argument("--top-heads", type=int, default=3, help="most-changed heads shown in detail")
    report.add_argument("--top-k", type=int, default=5, help="texts per head compared before vs after")
    report.add_argument("--texts-per-head", type=int, default=20)
    report.add_argument("--rank", type=int, default=None, help="TextSpan rank (default 80, as clip_text_span)")
    report.add_argument("--ln-post-split", default=None, metavar="{official,even}", help="TextSpan ln_post split")
    report.add_argument("--images-per-class", type=int, default=10)
    add_field_argument(report, "device")
    report.set_defaults(func=cmd_report)


def cmd_analyze(args: argparse.Namespace) -> int:
    """Write the dashboard's analyses of one run as CSV tables and figures into a folder."""
    from pathlib import Path

    from clipsvd.analysis import head_changes, legacy_sigma_block_scores, load_corpus
    from clipsvd.analysis.heads import head_change, head_change_note, unchanged_weights_note
    from clipsvd.analysis.prompts import nearest_words
    from clipsvd.analysis.capabilities import unsupported_analyses
    from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT, resolve_ln_post_split
    from clipsvd.analysis.run_pair import (
        analysis_images,
        load_run_pair,
        run_model_spec,
        run_sv_rotation,
        run_sv_shifts,
        run_textspan,
        run_umap,
    )
    from clipsvd.analysis.textspan import DEFAULT_RANK, check_rank
    from clipsvd.plots import (
        export_figure,
        head_heatmap,
        head_ranking_bar,
        sv_rotation_heatmap,
        sv_shift_heatmap,
        textspan_figure,
        umap_figure,
    )
    from clipsvd.runs import RunStore

    # TextSpan settings are checked before minutes of loading.
    split = resolve_ln_post_split(args.ln_post_split or DEFAULT_LN_POST_SPLIT)
    rank = check_rank(DEFAULT_RANK if args.rank is None else args.rank)
    run = RunStore(args.runs_dir).load(args.run_id)
    # Decide what this model supports on a weightless skeleton, before minutes of loading.
    skipped = unsupported_analyses(run_model_spec(run), args.what)
    for name, reason in skipped.items():
        print(f"  skipping {name}: {reason}", flush=True)
    what = [name for name in args.what if name not in skipped]
    if not what:
        print("nothing to analyse for this model", flush=True)
        return 1
    out = Path(args.out or f"analysis-{args.run_id}")
    out.mkdir(parents=True, exist_ok=True)
    pair = load_run_pair(run, args.device)

    def save(name: str, table=None, figure=None) -> None:
        if table is not None:
            table.to_csv(out / f"{name}.csv", index=False)
        for fmt in args.format if figure is not None else ():
            (out / f"{name}.{fmt}").write_bytes(export_figure(figure, fmt))
        print(f"  wrote {out / name}.*", flush=True)

    def sv() -> None:
        note = unchanged_weights_note(pair.method, "attention or MLP matrices")
        if note:
            print(f"  {note}", flush=True)
            return
        shifts = run_sv_shifts(pair)
        save("sv_shifts", shifts, sv_shift_heatmap(shifts) if len(shifts) else None)
        rotation = run_sv_rotation(pair)
        save("sv_rotation", rotation, sv_rotation_heatmap(rotation) if len(rotation) else None)

    def words() -> None:
        if not pair.method.learns_context:
            print(f"  words: {pair.method.display_name} learns no prompt context; nothing to read", flush=True)
            return
        save("prompt_nearest_words", nearest_words(pair.method))

    def heads() -> None:
        for encoder in ("visual", "text"):
            table = head_changes(pair.before, pair.method, encoder)
            suffix = "" if encoder == "visual" else "_text"
            state = head_change(table, "ov_change", pair.trains, pair.changes_weights)
            note = head_change_note(state, f"{encoder} attention heads",
                                    pair.method.display_name, pair.method.summary, "ov_change")
            if note:  # nothing to rank: the table (all zeros) but no "most changed" chart of zeros
                print(f"  {note}", flush=True)
                save(f"heads{suffix}", table)
                continue
            save(f"heads{suffix}", table, head_ranking_bar(table))
            save(f"heads{suffix}_heatmap", None, head_heatmap(table))
        if pair.method.singular_value_weights():
            save("heads_legacy_sigma_blocks", legacy_sigma_block_scores(pair.method))

    def textspan() -> None:
        before, after = run_textspan(pair, images, load_corpus(args.corpus), args.layers, args.texts_per_head,
                                     rank=rank, ln_post_split=split.value)
        save("textspan_before", before.frame())
        save("textspan_after", after.frame())
        save("textspan_head_importance", after.importance())
        for _, row in after.importance().head(args.top_heads).iterrows():
            layer, head = int(row["layer"]), int(row["head"])
            save(f"textspan_L{layer}H{head}", None, textspan_figure(before.head(layer, head), after.head(layer, head)))

    def umap() -> None:
        layout = run_umap(pair, images)
        save("umap", layout, umap_figure(layout))

    images = analysis_images(pair.run, args.images_per_class) if {"textspan", "umap"} & set(what) else None
    failed = []
    for name, step in (("sv", sv), ("heads", heads), ("textspan", textspan), ("umap", umap), ("words", words)):
        if name in what:
            try:
                step()
            except ClipsvdError as exc:  # one analysis failing does not cost the others
                failed.append(name)
                print(f"  {name} failed: {exc}", flush=True)
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """One self-contained HTML report of a run (two side by side with --compare), a PDF beside it on request,
    and each run's explanation-shift table (and a transfer run's source/targets/average table) as CSV and LaTeX."""
    from pathlib import Path

    from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT, resolve_ln_post_split
    from clipsvd.analysis.heads import RANKING_MEASURES
    from clipsvd.analysis.run_pair import analysis_images, check_same_base, load_run_pair
    from clipsvd.analysis.textspan import DEFAULT_RANK, check_rank
    from clipsvd.report import analyse_run, explanation_latex, html_to_pdf, report_html, transfer_latex
    from clipsvd.runs import RunStore, run_transfer_table

    if args.measure not in RANKING_MEASURES:
        raise ConfigError(f"--measure: expected one of {', '.join(RANKING_MEASURES)}, got '{args.measure}'")
    split = resolve_ln_post_split(args.ln_post_split or DEFAULT_LN_POST_SPLIT).value
    rank = check_rank(DEFAULT_RANK if args.rank is None else args.rank)
    if args.compare == args.run_id:
        raise ConfigError("report --compare: give a second, different run")
    store = RunStore(args.runs_dir)
    runs = [store.load(run_id) for run_id in (args.run_id, args.compare) if run_id]
    out = Path(args.out or f"report-{'-vs-'.join(run.run_id for run in runs)}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    analyses = []
    for run in runs:
        analysis = analyse_run(load_run_pair(run, args.device), analysis_images(run, args.images_per_class),
                               args.corpus, args.measure, args.layers, args.texts_per_head, args.top_k,
                               args.top_heads, rank=rank, ln_post_split=split,
                               progress=lambda message: print(f"  {message}", flush=True))
        for name, reason in analysis.failures.items():
            print(f"  {name} failed: {reason}", flush=True)
        if analysis.explanations is not None:
            stem = out.parent / (f"{out.stem}-explanations" if len(runs) == 1 else f"{out.stem}-{run.run_id}")
            analysis.explanations.to_csv(f"{stem}.csv", index=False)
            Path(f"{stem}.tex").write_text(explanation_latex(analysis.explanations, args.measure), encoding="utf-8")
            print(f"  wrote {stem}.csv and {stem}.tex", flush=True)
        transfer = run_transfer_table(run)
        if not transfer.empty:  # cross-dataset / domain generalization: the paper's transfer table too
            stem = out.parent / (f"{out.stem}-targets" if len(runs) == 1 else f"{out.stem}-{run.run_id}-targets")
            transfer.to_csv(f"{stem}.csv", index=False)
            Path(f"{stem}.tex").write_text(transfer_latex(run), encoding="utf-8")
            print(f"  wrote {stem}.csv and {stem}.tex", flush=True)
        analyses.append(analysis)
    difference, difference_note = None, None
    if len(runs) == 2:
        try:
            check_same_base(*runs)
        except ConfigError as exc:
            difference_note = str(exc)
            print(f"  no direct comparison: {exc}", flush=True)
        else:
            difference = analyse_run(load_run_pair(runs[0], args.device, reference=runs[1]),
                                     analysis_images(runs[0], args.images_per_class), args.corpus, args.measure,
                                     args.layers, args.texts_per_head, args.top_k, args.top_heads, rank=rank,
                                     ln_post_split=split, with_umap=False,
                                     progress=lambda message: print(f"  vs {runs[1].run_id}: {message}", flush=True))
            for name, reason in difference.failures.items():
                print(f"  {runs[0].run_id} vs {runs[1].run_id}: {name} failed: {reason}", flush=True)
    out.write_text(report_html(analyses, difference=difference, difference_note=difference_note), encoding="utf-8")
    print(f"wrote {out}", flush=True)
    if args.pdf:
        print(f"wrote {html_to_pdf(out, out.with_suffix('.pdf'))}", flush=True)
    return 1 if any(a.failures for a in analyses) or (difference is not None and difference.failures) else 0
