"""The house stays as ARCHITECTURE.md draws it: layers only point down and nothing imports in circles.

The layer order is declared once, as import-linter contracts in pyproject.toml; these tests run them (lazy imports
inside functions count: grimp reads every import statement).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                "sys.exit(lint_imports_command())", "--no-cache"]


def lint_imports(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT_IMPORTS, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"})


def test_clipsvd_layers_point_down_and_no_package_imports_in_a_circle() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "Layers point down KEPT" in result.stdout and "No import circles KEPT" in result.stdout


def test_the_contracts_catch_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    """The same contract types on a three-module house that breaks both: the check above can fail."""
    house = tmp_path / "house"
    (house / "low").mkdir(parents=True)
    (house / "high").mkdir()
    (house / "__init__.py").write_text("")
    (house / "low" / "__init__.py").write_text("")
    (house / "low" / "a.py").write_text("def f():\n    from house.high import b  # lazy, still an arrow up\n")
    (house / "high" / "__init__.py").write_text("")
    (house / "high" / "b.py").write_text("from house.low import a\n")
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "house"
        [[tool.importlinter.contracts]]
        name = "Layers point down"
        type = "layers"
        layers = ["house.high", "house.low"]
        [[tool.importlinter.contracts]]
        name = "No import circles"
        type = "acyclic_siblings"
        ancestors = ["house"]
    """))
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Layers point down BROKEN" in result.stdout and "No import circles BROKEN" in result.stdout
    assert "house.low.a -> house.high.b" in result.stdout
