"""`clipsvd ...` (or `python -m clipsvd ...`): everything the dashboard does, headless, and the dashboard itself.

    python -m clipsvd train --method clip-svd --method clipfit --dataset world-shape-microscopy --shots 16 --seed 1 --seed 2
    python -m clipsvd sweep --method clip-svd --method clipfit --shots 1 --shots 4 --seed 1 --seed 2 --seed 3
    python -m clipsvd import --base-arch ViT-B-32 --base-weights openai finetuned.pt [--strict false] [--label TEXT]
    python -m clipsvd eval RUN_ID [--dataset NAME]  (an imported run: on the dataset named)
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
import sys
from typing import Sequence

from clipsvd.cli.ablate import add_ablate
from clipsvd.cli.analyze import add_analyze, add_report
from clipsvd.cli.catalog import add_catalog
from clipsvd.cli.dashboard import add_dashboard
from clipsvd.cli.import_run import add_import
from clipsvd.cli.reproduce import add_reproduce
from clipsvd.cli.runs import add_runs
from clipsvd.cli.train import add_config, add_eval, add_sweep, add_train
from clipsvd.cli.world import add_pretrain_world
from clipsvd.errors import ClipsvdError


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; each command group adds its own subcommands (in the order --help lists them)."""
    parser = argparse.ArgumentParser(prog="clipsvd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default=None, help="run store folder (default $CLIPSVD_RUNS or ./runs)")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (add_train, add_sweep, add_config, add_reproduce, add_import, add_eval, add_analyze, add_report,
                add_ablate, add_pretrain_world, add_runs, add_dashboard, add_catalog):
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ClipsvdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def console() -> None:
    """The `clipsvd` console command."""
    sys.exit(main())
