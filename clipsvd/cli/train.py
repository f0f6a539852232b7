"""`train`, `sweep`, `config` and `eval`: runs from the command line, one at a time or as a grid on Ray.
Their flags come from ExperimentConfig's fields (clipsvd.cli.arguments)."""
from __future__ import annotations

import argparse
import dataclasses
import json

from clipsvd.choices import DEFAULT_DATASET
from clipsvd.cli.arguments import (
    add_data_arguments,
    add_field_argument,
    add_hyperparameter_arguments,
    add_model_arguments,
    add_protocol_arguments,
    add_ray_arguments,
    add_run_arguments,
    model_spec,
    overrides,
)
from clipsvd.cli.output import defaults_line, progress_printer, run_on_ray, score_line
from clipsvd.formatting import config_title

SWEEP_SEEDS = [1, 2, 3]


def _add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by `train` and `sweep`: methods, model, data kind, protocol, hyperparameters."""
    add_field_argument(parser, "method", repeat=True, required=True, note="repeat for several methods")
    add_data_arguments(parser)
    add_model_arguments(parser)
    add_protocol_arguments(parser)
    add_hyperparameter_arguments(parser)
    add_run_arguments(parser)


def add_train(commands) -> None:
    train = commands.add_parser("train", help="train and evaluate methods; each run lands in the run store")
    _add_experiment_arguments(train)
    train.add_argument("--dataset", default=DEFAULT_DATASET, help="builtin name, or a label for other kinds")
    add_field_argument(train, "shots")
    add_field_argument(train, "seed", repeat=True, note="repeat for several seeds (default 1)")
    train.add_argument("--log-every", type=int, default=10, help="print a progress line every this many steps")
    train.set_defaults(func=cmd_train)


def add_sweep(commands) -> None:
    sweep = commands.add_parser("sweep", help="run a grid datasets × shots × seeds × methods on Ray")
    _add_experiment_arguments(sweep)
    sweep.add_argument("--dataset", action="append", help=f"repeat for several datasets (default {DEFAULT_DATASET})")
    add_field_argument(sweep, "shots", repeat=True, note="repeat (default 16)")
    add_field_argument(sweep, "seed", repeat=True,
                       note=f"repeat (default {' '.join(map(str, SWEEP_SEEDS))})")
    add_ray_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep)


def add_config(commands) -> None:
    config = commands.add_parser("config", help="print the resolved config of one run as JSON (official preset, "
                                 "your overrides, where each value comes from, total optimiser steps)")
    add_field_argument(config, "method", required=True)
    config.add_argument("--dataset", required=True, help="a CoOp name (DTD, EuroSAT…), a BiomedCoOp name (BTMRI…) "
                        "or a built-in")
    add_data_arguments(config, kind_default=None, root_help="count the training images from the data instead of "
                       "the known class count")
    add_field_argument(config, "shots")
    add_field_argument(config, "seed")
    add_protocol_arguments(config)
    add_model_arguments(config)
    add_hyperparameter_arguments(config)
    config.set_defaults(func=cmd_config)


def add_eval(commands) -> None:
    evaluate = commands.add_parser("eval", help="re-evaluate a stored run from its adapter tensors; an imported run "
                                                "on the dataset --dataset names (saved into the run)")
    evaluate.add_argument("run_id")
    evaluate.add_argument("--dataset", default=None, help="an imported run's dataset (any loader: see --dataset-kind)")
    add_data_arguments(evaluate, kind_default=None)
    add_field_argument(evaluate, "protocol")
    add_field_argument(evaluate, "device")
    add_field_argument(evaluate, "max_test_per_class")
    evaluate.set_defaults(func=cmd_eval)


def cmd_sweep(args: argparse.Namespace) -> int:
    import pandas as pd

    from clipsvd.data import DatasetSpec
    from clipsvd.runs import RunStatus, RunStore, aggregate
    from clipsvd.training.sweep import SweepSpec, run_sweep

    hyperparameters = overrides(args)
    spec = SweepSpec(
        methods=args.method,
        datasets=[DatasetSpec(args.dataset_kind, name, args.data_root) for name in args.dataset or [DEFAULT_DATASET]],
        shots=[s or None for s in args.shots or [16]],
        seeds=args.seed or SWEEP_SEEDS,
        model=model_spec(args),
        protocol=args.protocol,
        targets=args.targets or [],
        hyperparameters={method: hyperparameters for method in args.method} if hyperparameters else {},
        device=args.device,
        max_test_per_class=args.max_test_per_class,
        num_workers=args.num_workers,
    )

    table = run_on_ray(args, "sweep", lambda launch: run_sweep(spec, RunStore(args.runs_dir), launch))
    if table is None:
        return 130
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(aggregate(table).to_string(index=False))
    return 1 if (table["status"] != RunStatus.COMPLETED).any() else 0


def cmd_train(args: argparse.Namespace) -> int:
    from clipsvd.data import DatasetSpec
    from clipsvd.runs import RunStatus, RunStore
    from clipsvd.training import ExperimentConfig, run_experiment
    from clipsvd.training.preflight import check_store

    hyperparameters = overrides(args)
    shots, seeds = args.shots or None, args.seed or [1]  # 0: the whole train split
    store = RunStore(args.runs_dir)
    model = model_spec(args)
    dataset = DatasetSpec(args.dataset_kind, args.dataset, args.data_root)
    failures = 0
    configs = [ExperimentConfig(method=method, model=model, dataset=dataset, shots=shots, seed=seed,
                                protocol=args.protocol, targets=args.targets or [], backbone=args.backbone,
                                hyperparameters=hyperparameters,
                                device=args.device, max_test_per_class=args.max_test_per_class,
                                num_workers=args.num_workers) for method in args.method for seed in seeds]
    check_store(store, configs)  # a store that cannot take the runs fails now, not after training
    for config in configs:
        print(f"{config_title(config.method, dataset.name, shots, config.seed)} · {model.label}", flush=True)
        print(f"  {defaults_line(config)}", flush=True)
        run = run_experiment(config, store, on_progress=progress_printer(args.log_every))
        failures += run.status != RunStatus.COMPLETED
        print(f"  {run.status}: {score_line(run.metrics)}  → {run.path}", flush=True)
        if run.message:
            print(f"  {run.message}", flush=True)
    return 1 if failures else 0


def cmd_config(args: argparse.Namespace) -> int:
    """The resolved config of one run as JSON: official preset, overrides, sources and total steps."""
    from clipsvd.data import DatasetSpec, guess_kind, load_dataset
    from clipsvd.training import ExperimentConfig, resolved_config

    kind = args.dataset_kind or guess_kind(args.dataset)
    dataset = DatasetSpec(kind, args.dataset, args.data_root)
    config = ExperimentConfig(method=args.method, model=model_spec(args), dataset=dataset, shots=args.shots or None,
                              seed=args.seed, protocol=args.protocol, targets=args.targets or [], backbone=args.backbone,
                              hyperparameters=overrides(args))
    data = load_dataset(dataset) if args.data_root or kind == "builtin" else None
    print(json.dumps(resolved_config(config, data), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from clipsvd.runs import RunStore
    from clipsvd.training import ExperimentConfig, evaluate_method, prepare_data, restore_run

    store = RunStore(args.runs_dir)
    run = store.load(args.run_id)
    if args.dataset is not None:
        from clipsvd.data import DatasetSpec, guess_kind
        from clipsvd.importing import evaluate_imported

        dataset = DatasetSpec(args.dataset_kind or guess_kind(args.dataset), args.dataset, args.data_root)
        run = evaluate_imported(store, run, dataset, args.protocol, args.device, args.max_test_per_class)
        print(json.dumps({k: v for k, v in run.metrics.items() if not k.startswith("per_class")}, indent=2))
        return 0
    if run.config.get("imported") and not run.config["imported"].get("evaluated_on"):
        from clipsvd.errors import ConfigError

        raise ConfigError(f"run {run.run_id} is imported and has no dataset yet: name one with --dataset")
    loaded, method = restore_run(run, args.device)
    config = dataclasses.replace(ExperimentConfig.from_dict(run.config), shots=None,
                                 max_test_per_class=args.max_test_per_class)
    metrics = evaluate_method(method, prepare_data(config, load_targets=True), config.eval_batch_size, lambda progress: None)
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("per_class")}, indent=2))
    return 0
