"""`reproduce`: a published table's grid on Ray, resumed from the run store, measured vs published."""
from __future__ import annotations

import argparse
import json

from clipsvd.cli.arguments import add_field_argument, add_model_arguments, add_ray_arguments, model_spec
from clipsvd.cli.output import run_on_ray
from clipsvd.errors import ConfigError


def add_reproduce(commands) -> None:
    reproduce = commands.add_parser("reproduce", help="run a published table's grid on Ray (resuming: finished "
                                    "cells never run again) and write measured vs published as CSV + figures")
    reproduce.add_argument("table", nargs="?", help="a shipped table (see --list) or a table JSON file")
    reproduce.add_argument("--list", action="store_true", help="list the shipped tables and their sources")
    reproduce.add_argument("--data-root", default=None, help="the folder in the table's layout (CoOp's DATA folder "
                           "or BiomedCoOp's root)")
    add_model_arguments(reproduce, default="required: --arch and/or --weights of the table's model; nothing is downloaded")
    reproduce.add_argument("--dataset", action="append", help="repeat: a subset of the table's datasets")
    add_field_argument(reproduce, "shots", repeat=True, note="repeat (default: the table's K)")
    add_field_argument(reproduce, "seed", repeat=True, note="repeat (default: the table's seeds)")
    add_field_argument(reproduce, "method", repeat=True, note="repeat (default: the table's methods)")
    reproduce.add_argument("--dry-run", action="store_true", help="print the grid, the official values, each "
                           "cell's steps and status, and the estimated cost; run nothing")
    reproduce.add_argument("--no-timing", action="store_true", help="dry run without measuring time per step")
    add_ray_arguments(reproduce)
    reproduce.add_argument("--out", default=None, help="output folder (default reproduce-TABLE)")
    add_field_argument(reproduce, "device")
    add_field_argument(reproduce, "max_test_per_class")
    reproduce.set_defaults(func=cmd_reproduce)


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
    model, store = model_spec(args), RunStore(args.runs_dir)
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
        ran = run_on_ray(args, table.name, lambda launch: run_missing(dry.configs, store, table, launch))
        if ran is None:
            return 130
        comparison = compare(table, store, dry.configs)
        print(comparison.drop(columns=["published_source"]).to_string(index=False))
    written, notes = write_outputs(comparison, table, out)
    print("\n".join([*(f"wrote {path}" for path in written), *notes]))
    return 1 if len(ran) and (ran["status"] != RunStatus.COMPLETED).any() else 0
