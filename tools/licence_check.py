"""List the licence of every runtime dependency of hes and fail on one that is not open.

hes is Apache-2.0, and whoever ships it ships its runtime dependencies too, so each one
must carry an OSI licence compatible with it. The check walks the installed dependency
closure of the ``hes`` distribution (no extras: test oracles and benchmark peers such as
dlms-cosem are dev-only and may be source-available), reads each package's
License-Expression, License field, licence classifiers and licence files, and fails when
any of them names a non-open licence (Business Source, SSPL, Commons Clause, proprietary,
GPL) or when none names an open one. Run by ``make lint``: ``python -m tools.licence_check``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: Licences that an Apache-2.0 product may depend on (SPDX ids and the words PyPI uses).
OPEN = re.compile(
    r"\b(MIT(-0|-CMU)?|0?BSD(-[234]-Clause)?|BSD License|Apache(-2\.0| Software License| 2\.0)"
    r"|ISC|PSF(-2\.0)?|Python Software Foundation|Zlib|CC0-1\.0|Unlicense|MPL-2\.0"
    r"|LGPL(-[23]\.[01](-only|-or-later)?)?|GNU Lesser General Public|EPL-2\.0"
    r"|HPND|Historical Permission Notice)\b",
    re.IGNORECASE,
)
#: Licences that are not open source, or whose terms an Apache-2.0 product cannot pass on.
CLOSED = re.compile(
    r"Business Source License|\bBSL-1\.1\b|\bBUSL\b|Server Side Public License|\bSSPL\b"
    r"|Commons Clause|Elastic License|source[- ]available|Proprietary"
    r"|(?<!Lesser )(?<!L)\bGPL(-[23]\.0)?\b(?!-with)|GNU General Public License|\bAGPL",
    re.IGNORECASE,
)
#: How much of a licence file to read: the name of a licence is in its first lines.
LICENCE_FILE_HEAD = 600


@dataclass(frozen=True, slots=True)
class Finding:
    """One runtime dependency, the licence evidence found and the verdict."""

    name: str
    version: str
    licence: str
    problem: str | None


def runtime_closure(root: str = "hes") -> list[metadata.Distribution]:
    """The installed distributions ``root`` needs at runtime (extras not followed)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"licence check: {name} is required but not installed") from None
        seen[name] = dist
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return [dist for name, dist in sorted(seen.items()) if name != canonicalize_name(root)]


def _evidence(dist: metadata.Distribution) -> list[tuple[str, str]]:
    meta = dist.metadata
    found: list[tuple[str, str]] = []
    for field in ("License-Expression", "License"):
        value = meta.get_all(field) or []
        if value and value[0]:
            found.append((field, value[0][:LICENCE_FILE_HEAD]))
    for classifier in meta.get_all("Classifier") or ():
        if classifier.startswith("License ::"):
            found.append(("classifier", classifier.removeprefix("License :: ")))
    for path in dist.files or ():
        if re.search(r"(LICEN[CS]E|COPYING|NOTICE)", path.name, re.IGNORECASE):
            try:
                text = Path(path.locate()).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            found.append((f"file {path.name}", text[:LICENCE_FILE_HEAD]))
    return found


def _verdict(text: str) -> tuple[str | None, str | None]:
    """(open licence named, closed licence named) for one piece of evidence.

    An SPDX ``A OR B`` offers a choice, so one open alternative makes it open (paho-mqtt's
    ``EPL-2.0 OR BSD-3-Clause``, matplotlib's bundled ``FTL OR GPL-2.0-or-later``).
    """
    alternatives = re.split(r"\s+OR\s+", text.strip("() \n")) if " OR " in text else [text]
    closed_name: str | None = None
    for alternative in alternatives:
        closed = CLOSED.search(alternative)
        opened = OPEN.search(alternative)
        if closed is None and opened is not None:
            return opened.group(0), None
        if closed is not None and closed_name is None:
            closed_name = closed.group(0)
    return None, closed_name


def check(dist: metadata.Distribution) -> Finding:
    """The verdict on one distribution: closed evidence anywhere fails it.

    Metadata can disagree with the licence file (dlms-cosem 25.1.0 says "MIT" in its
    License field and ships the Business Source License), so every source is read.
    """
    name, version = dist.metadata["Name"], dist.version
    licence: str | None = None
    for source, text in _evidence(dist):
        opened, closed = _verdict(text)
        if closed is not None:
            return Finding(name, version, text.strip()[:40], f"{source} names {closed!r}")
        licence = licence or opened
    if licence is None:
        return Finding(name, version, "?", "no open-source licence found in its metadata")
    return Finding(name, version, licence, None)


def report(findings: Iterable[Finding]) -> tuple[list[str], int]:
    """The table lines and the number of failures."""
    lines, failures = [], 0
    for f in findings:
        verdict = "ok" if f.problem is None else f"NOT OPEN: {f.problem}"
        failures += f.problem is not None
        lines.append(f"{f.name:<24} {f.version:<12} {f.licence[:40]:<40} {verdict}")
    return lines, failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "packages",
        nargs="*",
        help="check these distributions (and what they need) instead of hes's runtime",
    )
    args = parser.parse_args(argv)
    if args.packages:
        closure: dict[str, metadata.Distribution] = {}
        for package in args.packages:
            closure[canonicalize_name(package)] = metadata.distribution(package)
            closure.update(
                {canonicalize_name(d.metadata["Name"]): d for d in runtime_closure(package)}
            )
        dists = [closure[name] for name in sorted(closure)]
    else:
        dists = runtime_closure()
    lines, failures = report(check(dist) for dist in dists)
    print("\n".join(lines))
    print(f"licence check: {len(lines)} runtime dependencies, {failures} not open")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
