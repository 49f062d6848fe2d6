"""The ``hes`` command line: every command of ``app/`` assembled into one typer app.

A command's module is imported only when that command runs (``hes report`` does not load the
simulator, the service or the benchmark): :func:`main` builds the app from the one command
named on the command line, and the whole app (``hes --help``, tests) from all of them.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterable
from typing import cast

import typer

#: Command name -> (module, attribute, whether the attribute is a sub-app of commands).
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "read": ("app.read", "read_command", False),
    "scan": ("app.scan", "scan_command", False),
    "simulate": ("app.simulate", "simulate_command", False),
    "meters": ("app.meters", "meters_app", True),
    "collect": ("app.collect", "collect_command", False),
    "report": ("app.report", "report_command", False),
    "export": ("app.export", "export_command", False),
    "retention": ("app.retention", "retention_command", False),
    "demo": ("app.demo", "demo_command", False),
    "bench": ("app.bench", "bench_command", False),
    "keys": ("app.security", "keys_app", True),
    "disconnect": ("app.ops", "disconnect_command", False),
    "reconnect": ("app.ops", "reconnect_command", False),
    "listen": ("app.ops", "listen_command", False),
    "firmware": ("app.firmware", "firmware_app", True),
    "push": ("app.push", "push_app", True),
    "serve": ("app.serve", "serve_command", False),
    "token": ("app.tokens", "tokens_app", True),
    "nodes": ("app.nodes", "nodes_app", True),
}

#: The bench tools, whose every error is one JSON object on stdout (a script reads it): click's
#: own parse errors (``hes read --baud abc``) too, not only the command's.
JSON_ERRORS = frozenset({"read", "scan"})

#: click's UsageError, the base of every parse error: typer 0.29 carries its own click, older
#: releases use click's, and either way it is the base of the BadParameter typer exports.
UsageError = cast("type[Exception]", typer.BadParameter.__base__)

HELP = "Smart-meter head-end system: DLMS/COSEM collector and meter simulator."


def build(names: Iterable[str] = COMMANDS) -> typer.Typer:
    """The ``hes`` app holding the commands ``names`` (all by default)."""
    hes = typer.Typer(name="hes", help=HELP, no_args_is_help=True, add_completion=False)

    @hes.callback()
    def _group() -> None:
        """Keeps ``hes NAME`` a group of commands when only one command is built."""

    for name in names:
        module, attribute, is_group = COMMANDS[name]
        target = getattr(importlib.import_module(module), attribute)
        if is_group:
            hes.add_typer(target, name=name)
        else:
            hes.command(name)(target)
    return hes


def __getattr__(name: str) -> typer.Typer:
    """``cli.app``: the whole app, built when first asked for."""
    if name == "app":
        return build()
    raise AttributeError(f"module 'cli' has no attribute {name!r}")


def main() -> None:
    """The ``hes`` entry point: only the command named on the command line is imported."""
    args = sys.argv[1:]
    name = args[0] if args and args[0] in COMMANDS else None
    hes = build([name] if name else COMMANDS)
    if name not in JSON_ERRORS:
        hes()
        return
    try:
        code = hes(standalone_mode=False)
    except UsageError as exc:
        message = exc.format_message()  # type: ignore[attr-defined]
        typer.echo(json.dumps({"error": "usage", "detail": message}))
        typer.echo(f"hes {name}: {message}", err=True)
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:
        typer.echo(json.dumps({"error": "aborted", "detail": "interrupted"}))
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
