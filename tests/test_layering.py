"""The import contracts of `make lint` hold on the tree and break on a deliberate violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "bench", "protocols", "contracts", "collector", "simulator", "storage")
MODULES = ("cli.py",)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_tree(dest: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in MODULES:
        shutil.copy(ROOT / name, dest / name)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    # Wide enough that no contract name wraps: a broken contract is one row saying BROKEN.
    env = {**os.environ, "PYTHONPATH": str(where), "COLUMNS": "200"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=where, env=env, capture_output=True, text=True
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"lint-imports is not installed next to {sys.executable}")
    _copy_tree(tmp_path)
    return tmp_path


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("storage/gaps.py", "import collector.plan", "storage imports neither"),
        ("simulator/faults.py", "import collector.session", "simulator imports no collector"),
        ("protocols/crc.py", "import time", "protocols is sans-IO"),
        ("contracts/meters.py", "import storage.records", "Layers point one way"),
        ("collector/plan.py", "import simulator.model", "collector imports no simulator"),
        ("protocols/crc.py", "import dlms_cosem", "The runtime imports no dlms-cosem"),
        ("collector/plan.py", "import app.support", "The libraries import no command layer"),
        ("collector/plan.py", "import app.support", "Layers point one way"),
        ("storage/gaps.py", "import bench.harness", "The libraries import no command layer"),
        ("protocols/crc.py", "import cli", "cli.py is the entry point"),
        ("app/read.py", "import cli", "cli.py is the entry point"),
        ("bench/harness.py", "import app.run", "Layers point one way"),
        ("app/support.py", "import app.collect", "No import cycles"),
        (
            "storage/report.py",
            "import typing\nif typing.TYPE_CHECKING:\n    from storage.database import Database",
            "No import cycles",  # annotations count too
        ),
    ],
)
def test_a_deliberate_violation_breaks_its_contract(
    tree: Path, module: str, line: str, contract: str
) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")
    result = _lint(tree)
    assert result.returncode != 0
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(contract in row for row in broken), result.stdout
