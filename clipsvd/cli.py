"""`clipsvd ...` (or `python -m clipsvd ...`): everything the dashboard does, headless, and the dashboard itself.

    python -m clipsvd train --method clip-svd --method clipfit --dataset world-shape-microscopy --shots 16 --seed 1 --seed 2
    python -m clipsvd sweep --method clip-svd --method clipfit --shots 1 --shots 4 --seed 1 --seed 2 --seed 3
    python -m clipsvd eval RUN_ID
    python -m clipsvd analyze RUN_ID --corpus biomedical --format html png
    python -m clipsvd report RUN_ID [--compare RUN_ID2] [--out report.html] [--pdf]
    python -m clipsvd ablate RUN_ID --heads L3.H2,L2.H1 | --top 5 | --match TEXT
    python -m clipsvd runs list | show RUN_ID | delete RUN_ID | export RUN_ID --out run.zip
    python -m clipsvd pretrain-world --out clipsvd-world.safetensors
    python -m clipsvd methods | datasets | models
    clipsvd dashboard --port 8501
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Sequence

from clipsvd.choices import (
    ACTIVATIONS,
    ANALYSES,
    BACKBONES,
    DATASET_KINDS,
    DEFAULT_DATASET,
    FIGURE_FORMATS,
    PROTOCOLS,
    RUN_ACTIONS,
)
from clipsvd.errors import ClipsvdError, ConfigError
from clipsvd.formatting import fraction_text



def _parse_assignment(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. lr=1e-3 or layers=[10,11]")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = dict(_parse_assignment(item) for item in args.set)
    for flag in ("epochs", "lr", "batch_size"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    return overrides


def _model_spec(args: argparse.Namespace):
    """The model of train/sweep: --arch may be left out for a checkpoint file (read off its tensors)."""
    from clipsvd.models import AUTO_ARCHITECTURE, DEFAULT_ARCHITECTURE, RANDOM_WEIGHTS, ModelSpec
    from clipsvd.models.loading import looks_like_path

    if args.arch is None and args.weights is None:
        return ModelSpec.default()
    weights = args.weights or RANDOM_WEIGHTS
    arch = args.arch or (AUTO_ARCHITECTURE if looks_like_path(weights) else DEFAULT_ARCHITECTURE)
    return ModelSpec(arch, weights, args.model_seed, args.activation)


def cmd_sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from clipsvd.data import DatasetSpec
    from clipsvd.runs import RunStatus, RunStore, aggregate
    from clipsvd.training.sweep import SweepSpec, run_sweep

    overrides = _overrides(args)
    spec = SweepSpec(
        methods=args.method,
        datasets=[DatasetSpec(args.dataset_kind, name, args.data_root) for name in args.dataset or [DEFAULT_DATASET]],
        shots=[s or None for s in args.shots or [16]],
        seeds=args.seed or [1, 2, 3],
        model=_model_spec(args),
        protocol=args.protocol,
        hyperparameters={method: overrides for method in args.method} if overrides else {},
        device=args.device,
        max_test_per_class=args.max_test_per_class,
        num_workers=args.num_workers,
    )

    table = _run_on_ray(args, "sweep", lambda launch: run_sweep(spec, RunStore(args.runs_dir), launch))
    if table is None:
        return 130
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(aggregate(table).to_string(index=False))
    return 1 if (table["status"] != RunStatus.COMPLETED).any() else 0


def _run_on_ray(args: argparse.Namespace, label: str, start):
    """`start(launch)` under one progress bar, with the Ray flags of `_add_ray_arguments`; None after Ctrl-C (its
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


def _progress_printer(every: int):
    def report(progress) -> None:
        if progress.phase == "train":
            if progress.step % every == 0 or progress.step == progress.total_steps:
                eta = progress.eta_s or 0.0
                print(f"  step {progress.step}/{progress.total_steps}  epoch {progress.epoch}/{progress.epochs}  "
                      f"loss {progress.loss:.4f}  lr {progress.lr:.2e}  eta {eta:.0f}s", flush=True)
        elif progress.phase == "load":
            print(f"  {progress.message}", flush=True)
    return report


def cmd_train(args: argparse.Namespace) -> int:
    from clipsvd.data import DatasetSpec
    from clipsvd.runs import RunStatus, RunStore
    from clipsvd.training import ExperimentConfig, run_experiment

    overrides = _overrides(args)
    store = RunStore(args.runs_dir)
    model = _model_spec(args)
    dataset = DatasetSpec(args.dataset_kind, args.dataset, args.data_root)
    failures = 0
    for method in args.method:
        for seed in args.seed:
            config = ExperimentConfig(method=method, model=model, dataset=dataset, shots=args.shots, seed=seed,
                                      protocol=args.protocol, backbone=args.backbone, hyperparameters=overrides,
                                      device=args.device,
                                      max_test_per_class=args.max_test_per_class, num_workers=args.num_workers)
            print(f"{method} · {dataset.name} · {args.shots or 'all'}-shot · seed {seed} · {model.label}", flush=True)
            print(f"  {_defaults_line(config)}", flush=True)
            run = run_experiment(config, store, on_progress=_progress_printer(args.log_every))
            failures += run.status != RunStatus.COMPLETED
            print(f"  {run.status}: {_score_line(run.metrics)}  → {run.path}", flush=True)
            if run.message:
                print(f"  {run.message}", flush=True)
    return 1 if failures else 0


def _defaults_line(config) -> str:
    """What a run starts from, said before it trains: its lr and length, and where the preset values came from."""
    method_config, preset = config.method_config(), config.preset()
    length = (f"{method_config.cached_views} cached views" if method_config.cached_views else
              f"{method_config.iterations} iterations" if method_config.iterations is not None else
              f"{method_config.epochs} epochs")
    given = sorted(config.hyperparameters)
    origin = "; ".join(sorted(set(preset.sources.values()))) or "none (the method's defaults)"
    return (f"lr {method_config.lr:g} · {length}" + (f" · given: {', '.join(given)}" if given else "")
            + f" · preset from {origin}")


def cmd_config(args: argparse.Namespace) -> int:
    """The resolved config of one run as JSON: official preset, overrides, sources and total steps."""
    from clipsvd.data import DatasetSpec, guess_kind, load_dataset
    from clipsvd.training import ExperimentConfig, resolved_config

    kind = args.dataset_kind or guess_kind(args.dataset)
    dataset = DatasetSpec(kind, args.dataset, args.data_root)
    config = ExperimentConfig(method=args.method, model=_model_spec(args), dataset=dataset, shots=args.shots or None,
                              seed=args.seed, protocol=args.protocol, backbone=args.backbone,
                              hyperparameters=_overrides(args))
    data = load_dataset(dataset) if args.data_root or kind == "builtin" else None
    print(json.dumps(resolved_config(config, data), indent=2))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """A published table's grid on Ray, resumed from the run store, then measured vs published as CSV + figures."""
    from pathlib import Path

    import pandas as pd

    from clipsvd.reproduce import (
        LAYOUT_HELP,
        available_tables,
        compare,
        dry_run,
        get_table,
        run_missing,
        write_outputs,
    )
    from clipsvd.runs import RunStatus, RunStore

    if args.list:
        for name in available_tables():
            table = get_table(name)
            print(f"{name}: {table.title}\n  {table.protocol} · {table.backbone} ({table.model}) · {table.layout} "
                  f"layout · {len(table.datasets)} datasets · K {', '.join(map(str, table.shots))} · seeds "
                  f"{', '.join(map(str, table.seeds))} · methods {', '.join(table.methods)}")
            for key in table.sources:
                print(f"  published: {table.source_text(key)}")
            print(f"  grid: {table.grid_source}")
        return 0
    if not args.table:
        raise ConfigError("reproduce: name a table (python -m clipsvd reproduce --list shows them)")
    table = get_table(args.table)
    if args.arch is None and args.weights is None:
        raise ConfigError(f"reproduce {table.name}: its numbers were measured with {table.model}: "
                          f"{table.expected_weights}. Nothing is downloaded. (For a dry run's timing any "
                          "architecture with --weights random will do.)")
    if not args.data_root and not args.dry_run:
        raise ConfigError(f"reproduce {table.name}: give --data-root, {LAYOUT_HELP[table.layout]}")
    model, store = _model_spec(args), RunStore(args.runs_dir)
    print(f"{table.title}\n  published with {table.model}; this run: {model.label}", flush=True)
    dry = dry_run(table, args.data_root, model, store, args.seed, args.shots, args.dataset, args.method,
                  timing=args.dry_run and not args.no_timing, device=args.device,
                  max_test_per_class=args.max_test_per_class)
    out = Path(args.out or f"reproduce-{table.name}")
    absent = sorted(set(dry.frame.loc[dry.frame["data"].str.startswith("not found"), "dataset"]))
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_colwidth", 60):
        if args.dry_run:
            print(dry.frame.drop(columns=["key"]).to_string(index=False))
            print("\nofficial values each cell uses (method · dataset · K):")
            for config in {(c.method, c.dataset.name, c.shots): c for c in dry.configs}.values():
                values = ", ".join(f"{k}={v}" for k, v in config.preset().values.items())
                print(f"  {config.method} · {config.dataset.name} · K={config.shots}: {values or 'the defaults'}")
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "resolved_configs.jsonl", "w") as fh:
                fh.writelines(json.dumps(record) + "\n" for record in dry.resolved_configs())
            print(f"\n{dry.summary()}\nresolved configs: {out / 'resolved_configs.jsonl'}")
            if not args.data_root:
                print(f"no --data-root: steps from the datasets' known class counts; the data goes in "
                      f"{LAYOUT_HELP[table.layout]}")
            elif absent:
                print(f"not found under {args.data_root}: {', '.join(absent)} ({LAYOUT_HELP[table.layout]})")
            return 0
        if absent:
            raise ConfigError(f"not found under {args.data_root}: {', '.join(absent)}; {LAYOUT_HELP[table.layout]}. "
                              "Pass --dataset to run the others.")
        print(dry.summary(), flush=True)
        ran = _run_on_ray(args, table.name, lambda launch: run_missing(dry.configs, store, table, launch))
        if ran is None:
            return 130
        comparison = compare(table, store, dry.configs)
        print(comparison.drop(columns=["published_source"]).to_string(index=False))
    written, notes = write_outputs(comparison, table, out)
    print("\n".join([*(f"wrote {path}" for path in written), *notes]))
    return 1 if len(ran) and (ran["status"] != RunStatus.COMPLETED).any() else 0


def _score_line(metrics: dict) -> str:
    parts = [f"{k} {metrics[k]:.2f}" for k in ("accuracy", "base", "novel", "hm") if metrics.get(k) is not None]
    parts.append(f"trainable {metrics.get('trainable', 0):,} ({fraction_text(metrics.get('trainable_fraction', 0))})")
    return "  ".join(parts)


def cmd_eval(args: argparse.Namespace) -> int:
    from clipsvd.runs import RunStore
    from clipsvd.training import ExperimentConfig, evaluate_method, prepare_data, restore_run

    run = RunStore(args.runs_dir).load(args.run_id)
    loaded, method = restore_run(run, args.device)
    config = dataclasses.replace(ExperimentConfig.from_dict(run.config), shots=None,
                                 max_test_per_class=args.max_test_per_class)
    metrics = evaluate_method(method, prepare_data(config), config.eval_batch_size, lambda progress: None)
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("per_class")}, indent=2))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    """Write the dashboard's analyses of one run as CSV tables and figures into a folder."""
    from pathlib import Path

    from clipsvd.analysis import head_changes, legacy_sigma_block_scores, load_corpus
    from clipsvd.analysis.heads import head_change, head_change_note
    from clipsvd.analysis.capabilities import unsupported_analyses
    from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT, resolve_ln_post_split
    from clipsvd.analysis.run_pair import (
        analysis_images,
        load_run_pair,
        run_model_spec,
        run_sv_shifts,
        run_textspan,
        run_umap,
    )
    from clipsvd.analysis.textspan import DEFAULT_RANK, check_rank
    from clipsvd.errors import ClipsvdError
    from clipsvd.plots import (
        export_figure,
        head_heatmap,
        head_ranking_bar,
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
        shifts = run_sv_shifts(pair)
        save("sv_shifts", shifts, sv_shift_heatmap(shifts) if len(shifts) else None)

    def heads() -> None:
        for encoder in ("visual", "text"):
            table = head_changes(pair.before, pair.method, encoder)
            suffix = "" if encoder == "visual" else "_text"
            note = head_change_note(head_change(table, "ov_change", pair.method.trains), f"{encoder} attention heads",
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
    for name, step in (("sv", sv), ("heads", heads), ("textspan", textspan), ("umap", umap)):
        if name in what:
            try:
                step()
            except ClipsvdError as exc:  # one analysis failing does not cost the others
                failed.append(name)
                print(f"  {name} failed: {exc}", flush=True)
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """One self-contained HTML report of a run (two side by side with --compare), a PDF beside it on request,
    and each run's explanation-shift table as CSV and LaTeX."""
    from pathlib import Path

    from clipsvd.analysis.decomposition import DEFAULT_LN_POST_SPLIT, resolve_ln_post_split
    from clipsvd.analysis.heads import RANKING_MEASURES
    from clipsvd.analysis.run_pair import analysis_images, load_run_pair
    from clipsvd.analysis.textspan import DEFAULT_RANK, check_rank
    from clipsvd.report import analyse_run, explanation_latex, html_to_pdf, report_html
    from clipsvd.runs import RunStore

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
        analyses.append(analysis)
    out.write_text(report_html(analyses), encoding="utf-8")
    print(f"wrote {out}", flush=True)
    if args.pdf:
        print(f"wrote {html_to_pdf(out, out.with_suffix('.pdf'))}", flush=True)
    return 1 if any(a.failures for a in analyses) else 0


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


def cmd_runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from clipsvd.runs import RunStore

    store = RunStore(args.runs_dir)
    if args.action == "list":
        table = store.table()
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.drop(columns=["sweep"]).to_string(index=False) if len(table) else f"no runs in {store.root}")
    elif args.action == "show":
        run = store.load(_require_id(args))
        print(json.dumps({"run_id": run.run_id, "status": run.status, "message": run.message, "config": run.config,
                          "metrics": run.metrics}, indent=2))
    elif args.action == "delete":
        store.delete(_require_id(args))
        print(f"deleted {args.run_id}")
    elif args.action == "export":
        out = args.out or f"{_require_id(args)}.zip"
        with open(out, "wb") as fh:
            fh.write(store.bundle(_require_id(args)))
        print(f"wrote {out}")
    return 0


def _require_id(args: argparse.Namespace) -> str:
    if not args.run_id:
        raise ConfigError(f"runs {args.action}: give a run id (see `python -m clipsvd runs list`)")
    return args.run_id


def cmd_methods(args: argparse.Namespace) -> int:
    from clipsvd.methods import available_methods, get_method
    from clipsvd.methods.base import config_help

    for name in available_methods():
        cls = get_method(name)
        print(f"{name} — {cls.display_name}: {cls.summary}")
        defaults, helps = cls.default_config(), config_help(cls.Config)
        for key, value in defaults.to_dict().items():
            print(f"    {key} = {value!r}" + (f"  — {helps[key]}" if key in helps else ""))
        print("    (official presets per dataset and K: python -m clipsvd config --method "
              f"{name} --dataset DTD --shots 16)")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from clipsvd.data import builtin_datasets

    for name, description in builtin_datasets().items():
        print(f"{name:24s} {description}")
    print("\nOther kinds: --dataset-kind imagefolder|coop|biomedcoop|medmnist --data-root PATH --dataset NAME")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from clipsvd.models import list_architectures

    print("\n".join(list_architectures()))
    return 0


def cmd_pretrain_world(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from clipsvd.checksums import sha256_of
    from clipsvd.world.config import PretrainConfig
    from clipsvd.world.pretrain import pretrain_world

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


def _add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per field of a config dataclass, its help text taken from the field's metadata."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        # argparse %-formats help strings (for %(default)s); a literal "40%" in the field's help must reach it as "%%".
        help_text = f"{f.metadata.get('help', '')} (default {f.default})".replace("%", "%%")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, dest=f.name, type=kind, default=f.default, help=help_text)


def _add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", default="few-shot", choices=PROTOCOLS)
    parser.add_argument("--backbone", default=None, choices=BACKBONES,
                        help="whose preset applies: natural (CLIP ViT-B/16), biomedical (BiomedCLIP) or world (README's "
                             "search with the world CLIP); default: natural for CoOp data, biomedical for BiomedCoOp "
                             "data, world for the world-* built-ins, none otherwise")


def _add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by `train` and `sweep`: methods, model, data kind, protocol, hyperparameters."""
    parser.add_argument("--method", action="append", required=True, help="repeat for several methods")
    parser.add_argument("--dataset-kind", default="builtin", choices=DATASET_KINDS)
    parser.add_argument("--data-root", default=None, help="folder or file for non-builtin kinds")
    parser.add_argument("--arch", default=None,
                        help="open_clip architecture, or an hf-hub:/local-dir: id (default: clipsvd-world with its shipped "
                             "weights, a small CLIP pretrained on the generated world; with a checkpoint file: read "
                             "from its tensors)")
    parser.add_argument("--weights", default=None,
                        help="'random' (the default once --arch is given), a pretrained tag, 'world' (clipsvd-world's "
                             "shipped weights), or a checkpoint: OpenAI .pt archive, state dict .pt/.bin, "
                             "safetensors, open_clip training checkpoint, transformers CLIPModel file or folder")
    parser.add_argument("--activation", default="auto", choices=ACTIVATIONS,
                        help="MLP activation; quickgelu for OpenAI / LAION-400M weights in a plain file "
                             "(tags and OpenAI archives choose it themselves)")
    parser.add_argument("--model-seed", type=int, default=0, help="seed of random weights")
    _add_protocol_arguments(parser)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any method hyperparameter")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-test-per-class", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None, help=_field_help("num_workers"))


def _field_help(name: str) -> str:
    """An ExperimentConfig field's help text, written once on the field."""
    from clipsvd.training.experiment import ExperimentConfig

    return next(f.metadata.get("help", "") for f in dataclasses.fields(ExperimentConfig) if f.name == name)


def _add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """Where `sweep` and `reproduce` run their grid and what each run gets (clipsvd.training.sweep.Launch)."""
    parser.add_argument("--address", default=None, help="Ray cluster: 'auto' (this node belongs to one started "
                        "with `ray start`) or ray://HEAD:10001; default: a local in-process Ray")
    parser.add_argument("--workers", type=int, default=None, help="most runs at once (default: as many as the "
                        "cluster's CPUs and GPUs fit)")
    parser.add_argument("--gpus-per-run", type=float, default=None, help="GPUs Ray gives each run; fractions share "
                        "one (0.5: two runs per GPU); default 1 when the cluster has GPUs, else 0")
    parser.add_argument("--cpus-per-run", type=float, default=None, help="CPUs Ray gives each run (torch's "
                        "threads); default: a node's CPUs shared among the runs it fits")
    parser.add_argument("--retries", type=int, default=1, help="further attempts of a run that raised or whose "
                        "worker died (OOM, lost node) before it is recorded as failed (default 1)")
    parser.add_argument("--shared-store", action="store_true", help="workers write runs into --runs-dir "
                        "themselves (it must be a folder every node sees); default: runs come home through Ray")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipsvd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default=None, help="run store folder (default $CLIPSVD_RUNS or ./runs)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train and evaluate methods; each run lands in the run store")
    _add_experiment_arguments(train)
    train.add_argument("--dataset", default=DEFAULT_DATASET, help="builtin name, or a label for other kinds")
    train.add_argument("--shots", type=int, default=16, help="images per class (0: the whole train split)")
    train.add_argument("--seed", type=int, action="append", help="repeat for several seeds (default 1)")
    train.add_argument("--log-every", type=int, default=10)
    train.set_defaults(func=cmd_train)

    sweep = commands.add_parser("sweep", help="run a grid datasets × shots × seeds × methods on Ray")
    _add_experiment_arguments(sweep)
    sweep.add_argument("--dataset", action="append", help=f"repeat for several datasets (default {DEFAULT_DATASET})")
    sweep.add_argument("--shots", type=int, action="append", help="repeat (default 16; 0: whole train split)")
    sweep.add_argument("--seed", type=int, action="append", help="repeat (default 1 2 3)")
    _add_ray_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)

    config = commands.add_parser("config", help="print the resolved config of one run as JSON (official preset, "
                                 "your overrides, where each value comes from, total optimiser steps)")
    config.add_argument("--method", required=True)
    config.add_argument("--dataset", required=True, help="a CoOp name (DTD, EuroSAT…), a BiomedCoOp name (BTMRI…) "
                        "or a built-in")
    config.add_argument("--dataset-kind", default=None, choices=DATASET_KINDS, help="default: guessed from the name")
    config.add_argument("--data-root", default=None, help="count the training images from the data instead of the "
                        "known class count")
    config.add_argument("--shots", type=int, default=16, help="images per class (0: the whole train split)")
    config.add_argument("--seed", type=int, default=1)
    _add_protocol_arguments(config)
    config.add_argument("--arch", default=None)
    config.add_argument("--weights", default=None)
    config.add_argument("--activation", default="auto", choices=ACTIVATIONS)
    config.add_argument("--model-seed", type=int, default=0)
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any method hyperparameter")
    config.add_argument("--epochs", type=int, help="override the preset's epochs")
    config.add_argument("--lr", type=float, help="override the preset's learning rate")
    config.add_argument("--batch-size", dest="batch_size", type=int, help="override the preset's batch size")
    config.set_defaults(func=cmd_config)

    reproduce = commands.add_parser("reproduce", help="run a published table's grid on Ray (resuming: finished "
                                    "cells never run again) and write measured vs published as CSV + figures")
    reproduce.add_argument("table", nargs="?", help="a shipped table (see --list) or a table JSON file")
    reproduce.add_argument("--list", action="store_true", help="list the shipped tables and their sources")
    reproduce.add_argument("--data-root", default=None, help="the folder in the table's layout (CoOp's DATA folder "
                           "or BiomedCoOp's root)")
    reproduce.add_argument("--arch", default=None, help="open_clip architecture or hf-hub:/local-dir: id")
    reproduce.add_argument("--weights", default=None, help="checkpoint file, pretrained tag, or 'random'")
    reproduce.add_argument("--activation", default="auto", choices=ACTIVATIONS)
    reproduce.add_argument("--model-seed", type=int, default=0)
    reproduce.add_argument("--dataset", action="append", help="repeat: a subset of the table's datasets")
    reproduce.add_argument("--shots", type=int, action="append", help="repeat (default: the table's K)")
    reproduce.add_argument("--seed", type=int, action="append", help="repeat (default: the table's seeds)")
    reproduce.add_argument("--method", action="append", help="repeat (default: the table's methods)")
    reproduce.add_argument("--dry-run", action="store_true", help="print the grid, the official values, each "
                           "cell's steps and status, and the estimated cost; run nothing")
    reproduce.add_argument("--no-timing", action="store_true", help="dry run without measuring time per step")
    _add_ray_arguments(reproduce)
    reproduce.add_argument("--out", default=None, help="output folder (default reproduce-TABLE)")
    reproduce.add_argument("--device", default="auto")
    reproduce.add_argument("--max-test-per-class", type=int, default=None,
                           help="a seeded test subset (quick looks; not comparable with the published numbers)")
    reproduce.set_defaults(func=cmd_reproduce)

    evaluate = commands.add_parser("eval", help="re-evaluate a stored run from its adapter tensors")
    evaluate.add_argument("run_id")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--max-test-per-class", type=int, default=None)
    evaluate.set_defaults(func=cmd_eval)

    analyze = commands.add_parser("analyze", help="what a run changed: σ shifts, heads, TextSpan, UMAP → CSV + figures")
    analyze.add_argument("run_id")
    analyze.add_argument("--out", help="output folder (default analysis-RUN_ID)")
    analyze.add_argument("--what", nargs="+", default=list(ANALYSES), choices=ANALYSES)
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
    analyze.add_argument("--device", default="auto")
    analyze.set_defaults(func=cmd_analyze)

    report = commands.add_parser("report", help="one self-contained HTML report of a run (config, metrics, σ shifts, "
                                 "head ranking, explanations before vs after, UMAP), optionally a PDF and a second "
                                 "run side by side")
    report.add_argument("run_id")
    report.add_argument("--compare", metavar="RUN_ID2", default=None, help="a second run, side by side (e.g. "
                        "CLIPFit on the same data)")
    report.add_argument("--out", default=None, help="HTML file (default report-RUN_ID[-vs-RUN_ID2].html); the "
                        "explanation tables go beside it as CSV and LaTeX")
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
    report.add_argument("--device", default="auto")
    report.set_defaults(func=cmd_report)

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
    ablate.add_argument("--device", default="auto")
    ablate.set_defaults(func=cmd_ablate)

    pretrain = commands.add_parser("pretrain-world", help="reproduce the shipped world CLIP from a seed "
                                   "(about an hour on 2 CPU cores, minutes on a GPU)")
    from clipsvd.world.config import PretrainConfig  # torch-free

    _add_dataclass_arguments(pretrain, PretrainConfig)
    pretrain.add_argument("--out", default="clipsvd-world.safetensors",
                          help="checkpoint to write (fp16 safetensors; the learning curve goes beside it as .jsonl)")
    pretrain.set_defaults(func=cmd_pretrain_world)

    runs = commands.add_parser("runs", help="list, show, delete or export stored runs")
    runs.add_argument("action", choices=RUN_ACTIONS)
    runs.add_argument("run_id", nargs="?")
    runs.add_argument("--out", help="zip path for export")
    runs.set_defaults(func=cmd_runs)

    dashboard = commands.add_parser("dashboard", help="start the dashboard (Streamlit) on the default model and dataset")
    dashboard.add_argument("--port", type=int, default=None, help="default: Streamlit's 8501, or the next free one")
    dashboard.add_argument("--address", default="localhost", help="0.0.0.0 to serve other machines (e.g. a cluster "
                           "node reached through an SSH tunnel)")
    dashboard.add_argument("--headless", action=argparse.BooleanOptionalAction, default=True,
                           help="print the URL to open and ask nothing (the default; works without a terminal, e.g. "
                                "under nohup); --no-headless also opens a browser, and Streamlit then first asks for "
                                "an e-mail address where ~/.streamlit/credentials.toml is missing")
    dashboard.set_defaults(func=cmd_dashboard)

    for name, func, text in (("methods", cmd_methods, "list methods and their default hyperparameters"),
                             ("datasets", cmd_datasets, "list built-in datasets present on this machine"),
                             ("models", cmd_models, "list open_clip architectures")):
        commands.add_parser(name, help=text).set_defaults(func=func)
    return parser


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Start the Streamlit app the package carries (the clone's app.py in an editable install)."""
    import os

    from clipsvd.resources import dashboard_script, streamlit_flags

    # developmentMode off: Streamlit turns it on (and refuses --server.port) when it is not installed under a
    # folder named site-packages, as in PYTHONPATH or .pth-linked environments.
    overrides = {"global.developmentMode": False, "server.headless": args.headless, "server.address": args.address}
    if args.port:
        overrides["server.port"] = args.port
    command = [sys.executable, "-m", "streamlit", "run", str(dashboard_script()), *streamlit_flags(overrides)]
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")  # no downloads behind the user's back; weights come from local paths
    env.setdefault("PYTHONUNBUFFERED", "1")  # the URL line reaches a log file (nohup) or a pipe at once
    if args.runs_dir:
        env["CLIPSVD_RUNS"] = os.path.abspath(args.runs_dir)
    # Become the Streamlit server (no child process): a signal sent to `clipsvd dashboard` reaches the server.
    os.execve(sys.executable, command, env)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seed", None) is None and args.command == "train":
        args.seed = [1]
    if args.command == "train" and args.shots == 0:
        args.shots = None
    try:
        return args.func(args)
    except ClipsvdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def console() -> None:
    """The `clipsvd` console command."""
    sys.exit(main())
