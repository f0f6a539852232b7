"""The arguments several commands share, declared once: the model, the data, the protocol, hyperparameter overrides,
Ray placement, and flags generated from a config dataclass's fields (their help and choices come from the field)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from clipsvd.choices import ACTIVATIONS, DATASET_KINDS, field_choices
from clipsvd.errors import ConfigError
from clipsvd.training.experiment import ExperimentConfig

_NUMBER_TYPES = {"int": int, "float": float}


def _field_type(f: dataclasses.Field) -> type:
    """int, float or str from a field's annotation ("int | None" is int; the module uses postponed annotations)."""
    text = str(getattr(f.type, "__name__", f.type))
    return next((kind for name, kind in _NUMBER_TYPES.items() if text.split(" | ")[0] == name), str)


def _escaped(text: str) -> str:
    # argparse %-formats help strings (for %(default)s); a literal "40%" in a field's help must reach it as "%%".
    return text.replace("%", "%%")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One --flag per field of a config dataclass, its help text and choices taken from the field's metadata."""
    choices = field_choices(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = _escaped(f"{f.metadata.get('help', '')} (default {f.default})")
        if f.type in ("bool", bool):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=_field_type(f), default=f.default, choices=choices.get(f.name),
                                help=help_text)


def add_field_argument(parser: argparse.ArgumentParser, name: str, *, repeat: bool = False, required: bool = False,
                       default: Any = dataclasses.MISSING, note: str = "", cls: type = ExperimentConfig,
                       flag: str | None = None) -> None:
    """The --flag of one field of `cls` (ExperimentConfig unless told): its type, choices and help from the field;
    `repeat` makes it a list (one run per value, or the list a list field holds), `note` adds what this command
    does with it, `flag` names a repeated list field in the singular (--target for `targets`)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if default is dataclasses.MISSING:
        default = None if repeat or f.default is dataclasses.MISSING else f.default
    help_text = f.metadata.get("help", "") + (f"; {note}" if note else "")
    parser.add_argument(flag or "--" + name.replace("_", "-"), dest=name, type=_field_type(f), default=default,
                        required=required, choices=field_choices(cls).get(name),
                        action="append" if repeat else "store", help=_escaped(help_text))


WORLD_DEFAULT = ("default: clipsvd-world with its shipped weights, a small CLIP pretrained on the generated world; "
                 "with a checkpoint file: read from its tensors")


def add_model_arguments(parser: argparse.ArgumentParser, default: str = WORLD_DEFAULT, prefix: str = "") -> None:
    """The model a command starts from (see `model_spec`); `default` says what leaving --arch out means, `prefix`
    names a second model's flags (`import`: --base-arch, --base-weights, …)."""
    flag, dest = f"--{prefix}", prefix.replace("-", "_")
    parser.add_argument(f"{flag}arch", dest=f"{dest}arch", default=None,
                        help=f"open_clip architecture, or an hf-hub:/local-dir: id ({default})")
    parser.add_argument(f"{flag}weights", dest=f"{dest}weights", default=None,
                        help="'random' (the default once --arch is given), a pretrained tag, 'world' (clipsvd-world's "
                             "shipped weights), or a checkpoint: OpenAI .pt archive, state dict .pt/.bin, "
                             "safetensors, open_clip training checkpoint, transformers CLIPModel file or folder")
    parser.add_argument(f"{flag}activation", dest=f"{dest}activation", default="auto", choices=ACTIVATIONS,
                        help="MLP activation; quickgelu for OpenAI / LAION-400M weights in a plain file "
                             "(tags and OpenAI archives choose it themselves)")
    parser.add_argument(f"{flag}model-seed", dest=f"{dest}model_seed", type=int, default=0,
                        help="seed of random weights")


def add_data_arguments(parser: argparse.ArgumentParser, kind_default: str | None = "builtin",
                       root_help: str = "folder or file for non-builtin kinds") -> None:
    """Where the data comes from: its kind and its folder or file (the dataset's name is each command's own)."""
    parser.add_argument("--dataset-kind", default=kind_default, choices=DATASET_KINDS,
                        help="how the data is laid out" + ("" if kind_default else "; default: guessed from the name"))
    parser.add_argument("--data-root", default=None, help=root_help)


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    add_field_argument(parser, "protocol")
    add_field_argument(parser, "targets", repeat=True, flag="--target", note="repeat for several targets")
    add_field_argument(parser, "backbone")


def add_hyperparameter_arguments(parser: argparse.ArgumentParser) -> None:
    """Overrides of a method's defaults and its official preset (see `overrides`)."""
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    parser.add_argument("--lr", type=float, help="override the preset's learning rate")
    parser.add_argument("--batch-size", dest="batch_size", type=int, help="override the preset's batch size")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any method hyperparameter (python -m clipsvd methods lists them)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and on how much of the test split each run is evaluated, and its loader processes."""
    add_field_argument(parser, "device")
    add_field_argument(parser, "max_test_per_class")
    add_field_argument(parser, "num_workers")


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
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


def _parse_assignment(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set '{text}': expected KEY=VALUE, e.g. lr=1e-3 or layers=[10,11]")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The hyperparameters of `add_hyperparameter_arguments` as a dict of overrides."""
    values = dict(_parse_assignment(item) for item in args.set)
    for flag in ("epochs", "lr", "batch_size"):
        if getattr(args, flag) is not None:
            values[flag] = getattr(args, flag)
    return values


def model_spec(args: argparse.Namespace, prefix: str = ""):
    """The model of `add_model_arguments` (with the same `prefix`): --arch may be left out for a checkpoint file
    (read off its tensors)."""
    from clipsvd.models import AUTO_ARCHITECTURE, DEFAULT_ARCHITECTURE, RANDOM_WEIGHTS, ModelSpec
    from clipsvd.models.spec import looks_like_path

    dest = prefix.replace("-", "_")
    arch, weights = getattr(args, f"{dest}arch"), getattr(args, f"{dest}weights")
    if arch is None and weights is None:
        return ModelSpec.default()
    weights = weights or RANDOM_WEIGHTS
    arch = arch or (AUTO_ARCHITECTURE if looks_like_path(weights) else DEFAULT_ARCHITECTURE)
    return ModelSpec(arch, weights, getattr(args, f"{dest}model_seed"), getattr(args, f"{dest}activation"))
