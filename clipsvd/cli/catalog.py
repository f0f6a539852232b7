"""`methods`, `datasets`, `models`: what this installation offers."""
from __future__ import annotations

import argparse

from clipsvd.choices import DATASET_KINDS, field_choices, field_helps


def add_catalog(commands) -> None:
    for name, func, text in (("methods", cmd_methods, "list methods and their default hyperparameters"),
                             ("datasets", cmd_datasets, "list built-in datasets present on this machine"),
                             ("models", cmd_models, "list open_clip architectures")):
        commands.add_parser(name, help=text).set_defaults(func=func)


def cmd_methods(args: argparse.Namespace) -> int:
    """Each method, its default hyperparameters with their help and choice lists (from the config's fields)."""
    from clipsvd.methods import available_methods, get_method

    for name in available_methods():
        cls = get_method(name)
        print(f"{name} — {cls.display_name}: {cls.summary}")
        defaults, helps, choices = cls.default_config(), field_helps(cls.Config), field_choices(cls.Config)
        for key, value in defaults.to_dict().items():
            print(f"    {key} = {value!r}" + (f"  — {helps[key]}" if key in helps else "")
                  + (f" (one of {', '.join(choices[key])})" if key in choices else ""))
        print("    (official presets per dataset and K: python -m clipsvd config --method "
              f"{name} --dataset DTD --shots 16)")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from clipsvd.data import builtin_datasets

    for name, description in builtin_datasets().items():
        print(f"{name:24s} {description}")
    others = "|".join(kind for kind in DATASET_KINDS if kind != "builtin")
    print(f"\nOther kinds: --dataset-kind {others} --data-root PATH --dataset NAME")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from clipsvd.models import list_architectures

    print("\n".join(list_architectures()))
    return 0
