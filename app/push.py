"""``hes push show|set|trigger``: the meters' push setups (Blue Book class 40).

``show`` reads a push setup back from each meter (object list, destination, windows, retry
settings) and stores it (``push_setups``), so the push listener can decode the meter's
notifications that carry only values. ``set`` writes a destination (``--destination
HOST:PORT``), communication windows (``--window START/END``, ISO date-times, repeatable;
``--no-windows`` clears them) and an object list (``--object CLASS/OBIS/ATTRIBUTE``,
repeatable), then reads the setup back and stores what the meter holds. ``trigger`` invokes
the setup's ``push`` method. Meters by id (arguments), ``--file``, ``--area`` or ``--all``.

Prints one JSON object: per meter the push setup read back or the error class; then the
totals. Exit 0 when every meter answered, 1 when any failed, 2 for bad arguments (nothing is
sent to any meter then), with the error as JSON on stdout and as text on stderr.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from app.firmware import (
    AllOption,
    AreaOption,
    ConcurrencyOption,
    FileOption,
    TimeoutOption,
    choose_meters,
)
from app.support import DbOption
from collector.plan import Plan, PlanError, load_plan
from collector.push_setup import PushChange, run_many
from collector.service import env_secret, session_options
from contracts.meters import parse_host_port
from protocols import push_setup as ps
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.push_setups import obis_bytes

T = TypeVar("T")
push_app = typer.Typer(
    help="Push setups (class 40): destinations, windows, objects.", no_args_is_help=True
)

MetersArgument = Annotated[list[str] | None, typer.Argument(help="inventory meter ids")]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", help="reading plan (TOML) whose meter profiles apply; default: built-in"
    ),
]
SetupOption = Annotated[
    str, typer.Option("--setup", help="logical name of the push setup (0.0.25.9.0.255: alarms)")
]


def _bad(message: str) -> typer.Exit:
    typer.echo(json.dumps({"error": message, "error_class": "bad_argument"}))
    typer.echo(f"hes: {message}", err=True)
    return typer.Exit(2)


def _setup_name(text: str) -> bytes:
    try:
        name = obis_bytes(text)
    except ValueError as exc:
        raise _bad(f"--setup: {exc}") from None
    if name[2:4] != bytes((25, 9)):
        raise _bad(f"--setup {text}: a push setup's logical name is 0.b.25.9.0.255")
    return name


def _parsed(parse: Callable[[str], T], texts: list[str] | None, what: str) -> tuple[T, ...] | None:
    if not texts:
        return None
    try:
        return tuple(parse(t) for t in texts)
    except ValueError as exc:
        raise _bad(f"{what}: {exc}") from None


def _plan(path: Path | None) -> Plan:
    try:
        return load_plan(path)
    except (PlanError, OSError) as exc:
        raise _bad(f"--plan: {exc}") from None


def _open(db: str | None) -> Database:
    try:
        return open_database(db)
    except StorageError as exc:
        raise _bad(str(exc)) from None


@dataclass(slots=True, frozen=True)
class _Selection:
    """Which meters, from which database, with which plan, how fast: every command's part."""

    meters: list[str] | None
    file: Path | None
    area: str | None
    every: bool
    db: str | None
    config: Path | None
    concurrency: int
    timeout: float


def _run(command: str, sel: _Selection, name: bytes, change: PushChange, trigger: bool) -> None:
    plan = _plan(sel.config)
    database = _open(sel.db)
    try:
        chosen, security_for = choose_meters(database, sel.meters, sel.file, sel.area, sel.every)
        results = asyncio.run(
            run_many(
                chosen,
                name,
                change,
                secrets=env_secret,
                db=database,
                trigger=trigger,
                security_for=security_for,
                concurrency=sel.concurrency,
                request_timeout=sel.timeout,
                options_for=lambda meter: session_options(meter, plan),
            )
        )
    finally:
        database.close()
    failed = [r for r in results if r["outcome"] != "ok"]
    out: dict[str, Any] = {
        "command": f"push {command}",
        "push_setup": ".".join(str(b) for b in name),
        "meters": len(results),
        "ok": len(results) - len(failed),
        "failed": len(failed),
        "results": results,
    }
    typer.echo(json.dumps(out))
    if failed:
        raise typer.Exit(1)


@push_app.command("show")
def show_command(
    meters: MetersArgument = None,
    file: FileOption = None,
    area: AreaOption = None,
    every: AllOption = False,
    setup: SetupOption = "0.0.25.9.0.255",
    db: DbOption = None,
    config: ConfigOption = None,
    concurrency: ConcurrencyOption = 10,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Read each meter's push setup and store it (what the listener decodes pushes by)."""
    name = _setup_name(setup)
    sel = _Selection(meters, file, area, every, db, config, concurrency, timeout)
    _run("show", sel, name, PushChange(), False)


@push_app.command("set")
def set_command(
    meters: MetersArgument = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="where to push: HOST:PORT (TCP)")
    ] = None,
    window: Annotated[
        list[str] | None,
        typer.Option("--window", help="communication window START/END, ISO (repeatable)"),
    ] = None,
    no_windows: Annotated[
        bool, typer.Option("--no-windows", help="clear the windows: push at any time")
    ] = False,
    objects: Annotated[
        list[str] | None,
        typer.Option("--object", help="push object CLASS/OBIS/ATTRIBUTE, in order (repeatable)"),
    ] = None,
    trigger: Annotated[bool, typer.Option("--trigger", help="then invoke push")] = False,
    file: FileOption = None,
    area: AreaOption = None,
    every: AllOption = False,
    setup: SetupOption = "0.0.25.9.0.255",
    db: DbOption = None,
    config: ConfigOption = None,
    concurrency: ConcurrencyOption = 10,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Write a push setup's destination, windows and/or object list, then read it back."""
    name = _setup_name(setup)
    dest = None
    if destination is not None:
        try:
            host, port = parse_host_port(destination, default_port=4060)
        except ValueError as exc:
            raise _bad(f"--destination: {exc}") from None
        dest = ps.tcp_destination(host, port)
    if window and no_windows:
        raise _bad("--window and --no-windows together")
    windows = () if no_windows else _parsed(ps.parse_window, window, "--window")
    entries = _parsed(ps.parse_object, objects, "--object")
    change = PushChange(entries, dest, windows)
    if not change:
        raise _bad("nothing to set: give --destination, --window, --no-windows or --object")
    sel = _Selection(meters, file, area, every, db, config, concurrency, timeout)
    _run("set", sel, name, change, trigger)


@push_app.command("trigger")
def trigger_command(
    meters: MetersArgument = None,
    file: FileOption = None,
    area: AreaOption = None,
    every: AllOption = False,
    setup: SetupOption = "0.0.25.9.0.255",
    db: DbOption = None,
    config: ConfigOption = None,
    concurrency: ConcurrencyOption = 10,
    timeout: TimeoutOption = 10.0,
) -> None:
    """Invoke the push setup's push method (the meter sends its data now)."""
    name = _setup_name(setup)
    sel = _Selection(meters, file, area, every, db, config, concurrency, timeout)
    _run("trigger", sel, name, PushChange(), True)
