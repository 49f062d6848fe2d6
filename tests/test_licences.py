"""The licence check of ``make lint``: the runtime is open, and a non-open package fails it.

The deliberate violations are real installed packages: dlms-cosem (Business Source
License 1.1, a dev-only oracle) and gurux-dlms (GPL-2.0, a dev-only peer).
"""

from __future__ import annotations

from importlib import metadata

import pytest

from tools import licence_check


def test_runtime_dependencies_are_all_open(capsys: pytest.CaptureFixture[str]) -> None:
    assert licence_check.main([]) == 0
    out = capsys.readouterr().out
    names = {dist.metadata["Name"].lower() for dist in licence_check.runtime_closure()}
    assert {"sqlalchemy", "cryptography", "pyserial", "typer"} <= names
    assert "dlms-cosem" not in names and "gurux-dlms" not in names
    assert "0 not open" in out


def test_the_runtime_closure_follows_requirements_but_not_extras() -> None:
    names = {dist.metadata["Name"].lower() for dist in licence_check.runtime_closure()}
    assert "pytest" not in names and "hypothesis" not in names  # dev extra
    assert "cffi" in names  # needed by cryptography, two levels down


def test_business_source_licence_fails_even_where_metadata_says_mit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dist = metadata.distribution("dlms-cosem")
    assert dist.metadata["License"] == "MIT"  # the metadata claims MIT ...
    finding = licence_check.check(dist)
    assert finding.problem is not None  # ... the classifier and LICENSE file say otherwise
    assert licence_check.main(["dlms-cosem"]) == 1
    assert "dlms-cosem" in capsys.readouterr().out


def test_gpl_fails() -> None:
    finding = licence_check.check(metadata.distribution("gurux-dlms"))
    assert finding.problem is not None and "General Public" in finding.problem


@pytest.mark.parametrize(
    ("text", "opened", "closed"),
    [
        ("MIT", "MIT", None),
        ("EPL-2.0 OR BSD-3-Clause", "EPL-2.0", None),
        ("FTL OR GPL-2.0-or-later", None, "GPL-2.0"),
        ("LGPL-3.0-only", "LGPL-3.0-only", None),
        ("Business Source License 1.1", None, "Business Source License"),
        ("SSPL-1.0", None, "SSPL"),
        ("Apache-2.0 with Commons Clause", None, "Commons Clause"),
        ("All rights reserved", None, None),
    ],
)
def test_verdict_of_one_licence_text(text: str, opened: str | None, closed: str | None) -> None:
    assert licence_check._verdict(text) == (opened, closed)
