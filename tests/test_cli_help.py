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
