"""The layout's import rules fail the build when an arrow points back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
PACKAGES = ["settings", "devservers", "adminkit", "orchestration", "orders", "agents", "operations", "loadlab", "api"]


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=tree,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the project's packages and its import rules."""
    for package in PACKAGES:
        shutil.copytree(PROJECT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_layout_keeps_its_import_rules(tree):
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("orchestration/work/forbidden.py", "from orders.models import Order", "The kernel imports none"),
        ("orders/forbidden.py", "import celery", "The domain imports neither Celery"),
        ("orders/forbidden_kernel.py", "from orchestration.models import AgentTask", "The domain imports neither"),
        ("agents/forbidden.py", "from operations import dashboard", "Nothing imports the edges"),
        ("api/forbidden.py", "from loadlab import workload", "The edges do not import each other"),
    ],
)
def test_a_forbidden_import_breaks_the_lint(tree, module, line, contract):
    (tree / module).write_text(f"{line}\n")

    result = lint_imports(tree)

    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout, result.stdout
