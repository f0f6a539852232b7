"""`--help` of the command and of every subcommand prints its help and exits 0 (argparse %-formats help strings,
so a literal "%" in a config field's help used to crash `pretrain-world --help`)."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipsvd.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_the_walk_finds_the_subcommands():
    assert {"train", "sweep", "analyze", "report", "pretrain-world", "runs", "dashboard"} <= set(subcommands())


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as finished:
        build_parser().parse_args([name, "--help"])
    assert finished.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and f" {name}" in out.splitlines()[0], out[:200]


def test_pretrain_world_help_shows_the_percent_signs(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain-world", "--help"])
    assert "40% to 77%" in " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_top_level_help_in_a_real_process():
    done = subprocess.run([sys.executable, "-m", "clipsvd", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and "pretrain-world" in done.stdout


# ----- one source for help and choice lists: the config field's metadata -------------------------------------------
def _action(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest)


@pytest.mark.parametrize("command", ["train", "sweep", "config", "reproduce", "eval"])
def test_flags_generated_from_experiment_config_show_the_fields_help(command):
    from clipsvd.choices import field_choices, field_helps
    from clipsvd.training.experiment import ExperimentConfig

    parser, helps = subcommands()[command], field_helps(ExperimentConfig)
    for dest in ("device", "max_test_per_class", "shots", "seed", "method", "protocol", "num_workers"):
        if any(a.dest == dest for a in parser._actions):
            assert _action(parser, dest).help.startswith(helps[dest].replace("%", "%%")), (command, dest)
    if command in ("train", "config"):
        assert _action(parser, "protocol").choices == field_choices(ExperimentConfig)["protocol"]
        assert _action(parser, "backbone").choices == field_choices(ExperimentConfig)["backbone"]


def _config_with_other_optimizers():
    from dataclasses import dataclass, field

    from clipsvd.choices import described
    from clipsvd.methods.base import MethodConfig

    @dataclass
    class OtherOptimizers(MethodConfig):
        optimizer: str = field(default="lion", metadata=described("the optimiser", choices=("lion", "sgd")))

    return OtherOptimizers


def test_a_choice_list_changed_on_the_field_reaches_validate_the_cli_and_the_form():
    from streamlit.testing.v1 import AppTest

    from clipsvd.cli.arguments import add_dataclass_arguments
    from clipsvd.errors import ConfigError

    config_class = _config_with_other_optimizers()
    config_class().validate()  # "lion" is on the field's list
    with pytest.raises(ConfigError, match="optimizer: expected one of lion, sgd, got 'adamw'"):
        config_class(optimizer="adamw").validate()
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, config_class)
    assert _action(parser, "optimizer").choices == ("lion", "sgd")

    def form() -> None:
        import typing
        from dataclasses import dataclass, field

        from clipsvd.app.widgets import field_widget
        from clipsvd.choices import described, field_choices
        from clipsvd.methods.base import MethodConfig

        @dataclass
        class OtherOptimizers(MethodConfig):  # the same change as above, inside the app script
            optimizer: str = field(default="lion", metadata=described("the optimiser", choices=("lion", "sgd")))

        cls = OtherOptimizers
        field_widget("optimizer", typing.get_type_hints(cls)["optimizer"], "lion", "k", "help",
                     field_choices(cls)["optimizer"])

    app = AppTest.from_function(form).run(timeout=60)
    assert not app.exception
    assert list(app.selectbox[0].options) == ["lion", "sgd"]


def test_experiment_config_checks_its_choice_fields_and_defaults_to_the_world_model():
    from clipsvd.errors import ConfigError
    from clipsvd.models import ModelSpec
    from clipsvd.training.experiment import ExperimentConfig

    with pytest.raises(ConfigError, match="backbone: expected one of natural, biomedical, world, got 'marine'"):
        ExperimentConfig(method="zero-shot", backbone="marine").validate()
    record = ExperimentConfig(method="zero-shot").to_dict()
    del record["model"]
    assert ExperimentConfig.from_dict(record).model == ModelSpec.default() == ExperimentConfig("zero-shot").model


def test_methods_command_lists_each_fields_choices(capsys):
    from clipsvd.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "optimizer = 'adamw'" in out and "(one of adamw, adam, sgd)" in out
    assert "precision = 'auto'" in out and "(one of auto, fp32, fp16, bf16)" in out


def test_one_title_for_a_run_everywhere():
    from clipsvd.formatting import config_title, seconds_text

    assert config_title("clip-svd", "world-shape-microscopy", 16, 1) == \
        "clip-svd · world-shape-microscopy · 16-shot · seed 1"
    assert config_title("clipfit", "DTD", None, 2) == "clipfit · DTD · all images · seed 2"
    assert [seconds_text(s) for s in (3.214, 30, 600, 9000, None)] == ["3.21 s", "30 s", "10.0 min", "2.5 h", "—"]
