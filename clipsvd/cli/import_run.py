"""`import`: a model fine-tuned elsewhere becomes a run of the store (method `imported`), analysed like any run and
evaluated on demand with `eval RUN_ID --dataset NAME`."""
from __future__ import annotations

import argparse

from clipsvd.choices import field_helps
from clipsvd.cli.arguments import add_model_arguments, model_spec
from clipsvd.importing.options import ImportOptions

BASE_DEFAULT = "the base the fine-tune started from; default: clipsvd-world with its shipped weights"


def _boolean(text: str) -> bool:
    value = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")
    return value


def add_import(commands) -> None:
    parser = commands.add_parser(
        "import", help="import a fine-tuned model (full weights, official CLIP-SVD, CLIP-LoRA or PEFT LoRA "
                       "checkpoint) against its base as a run; evaluate it with eval RUN_ID --dataset NAME")
    helps = {name: text.replace("%", "%%") for name, text in field_helps(ImportOptions).items()}
    parser.add_argument("finetuned", help=helps["finetuned"])
    add_model_arguments(parser, BASE_DEFAULT, prefix="base-")
    parser.add_argument("--strict", type=_boolean, default=True, metavar="true|false", help=helps["strict"])
    parser.add_argument("--label", default=None, help=helps["label"])
    parser.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    from clipsvd.importing import import_checkpoint
    from clipsvd.runs import RunStore

    run = import_checkpoint(RunStore(args.runs_dir), model_spec(args, prefix="base-"), args.finetuned,
                            strict=args.strict, label=args.label)
    record = run.config["imported"]
    print(f"{run.run_id}: {run.message}")
    print(f"  {record['finetuned']['format']}; {len(record['changed_tensors'])} tensors changed "
          f"({run.metrics['trainable']:,} values), stored as their difference: {run.metrics['checkpoint_bytes']:,} "
          f"bytes → {run.path}")
    if record["finetuned"]["note"]:
        print(f"  {record['finetuned']['note']}")
    print(f"  evaluate it: clipsvd eval {run.run_id} --dataset NAME")
    return 0
