"""`runs list | show | delete | export`: the run store from the command line."""
from __future__ import annotations

import argparse
import json
import sys

from clipsvd.choices import RUN_ACTIONS
from clipsvd.errors import ConfigError


def add_runs(commands) -> None:
    runs = commands.add_parser("runs", help="list, show, delete or export stored runs; show prints the run as JSON, "
                               "and a transfer run's source, targets and target average as a table on stderr")
    runs.add_argument("action", choices=RUN_ACTIONS)
    runs.add_argument("run_id", nargs="?")
    runs.add_argument("--out", help="zip path for export")
    runs.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from clipsvd.runs import RunStatus, RunStore

    store = RunStore(args.runs_dir)
    if args.action == "list":
        table = store.table()
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.drop(columns=["sweep"]).to_string(index=False) if len(table) else f"no runs in {store.root}")
        for run in store.list():
            if run.status == RunStatus.DAMAGED:  # listed above; here with the file and the reason
                print(f"damaged: {run.run_id}: {run.message}")
    elif args.action == "show":
        run = store.load(_require_id(args))
        print(json.dumps({"run_id": run.run_id, "status": run.status, "message": run.message, "config": run.config,
                          "metrics": run.metrics}, indent=2))
        transfer = transfer_text(run)
        if transfer:  # for a person reading; stdout stays one JSON document for scripts
            print(transfer, file=sys.stderr)
    elif args.action == "delete":
        store.delete(_require_id(args))
        print(f"deleted {args.run_id}")
    elif args.action == "export":
        out = args.out or f"{_require_id(args)}.zip"
        with open(out, "wb") as fh:
            fh.write(store.bundle(_require_id(args)))
        print(f"wrote {out}")
    return 0


def transfer_text(run) -> str:
    """A cross-dataset / domain-generalization run's source, targets and target average as a text table with a
    heading naming the protocol; "" for any other run."""
    from clipsvd.formatting import number_text
    from clipsvd.runs import run_transfer_table

    table = run_transfer_table(run)
    if table.empty:
        return ""
    shown = table.assign(accuracy=[number_text(a, 2) for a in table["accuracy"]]).rename(
        columns={"accuracy": "accuracy (%)", "test_images": "test images"})
    return (f"{run.config.get('protocol')}: trained on {table['dataset'].iloc[0]}, scored unchanged on each target\n"
            + shown.to_string(index=False))


def _require_id(args: argparse.Namespace) -> str:
    if not args.run_id:
        raise ConfigError(f"runs {args.action}: give a run id (see `python -m clipsvd runs list`)")
    return args.run_id
