"""docs/architecture.md names every module of the packages, so the map stays whole."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocols", "contracts", "collector", "simulator", "storage", "app")
MODULES = sorted(
    path.relative_to(ROOT).as_posix()
    for package in PACKAGES
    if (ROOT / package).is_dir()
    for path in (ROOT / package).rglob("*.py")
    if path.name != "__init__.py" and "__pycache__" not in path.parts
)


def test_there_are_modules_to_check() -> None:
    assert len(MODULES) > 40


@pytest.mark.parametrize("module", MODULES)
def test_architecture_doc_names_the_module(module: str) -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    package_relative = module.split("/", 1)[1]
    assert module in text or f"`{package_relative}`" in text, (
        f"docs/architecture.md does not mention {module}"
    )
