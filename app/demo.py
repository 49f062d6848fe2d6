"""``hes demo``: the whole daily job on one machine, as ``make run`` shows it.

It does what an operator does with two terminals: start a simulated fleet (``hes simulate``),
import its inventory (``hes meters import``), collect yesterday (``hes collect``) into the
embedded SQLite database, and print the day's report (``hes report``). Each step runs as its own
``hes`` process, so the demo exercises exactly the commands a utility would run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

SIMULATOR_START_TIMEOUT_S = 60.0


def _hes(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def _run(step: str, args: list[str], timeout: float) -> str:
    typer.echo(f"== {step}: hes {' '.join(args[3:])}", err=True)
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise typer.Exit(_report_failure(step, done.returncode, done.stderr))
    return done.stdout


def _report_failure(step: str, code: int, stderr: str) -> int:
    typer.echo(f"hes demo: {step} failed with exit code {code}\n{stderr}", err=True)
    return 1


def _start_simulator(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    typer.echo(f"== simulate: hes {' '.join(args[3:])}", err=True)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    # The simulator announces itself with one JSON line once it listens.
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(SIMULATOR_START_TIMEOUT_S):
        proc.kill()
        raise typer.Exit(_report_failure("simulate", -1, "no announcement in time"))
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr else ""
        raise typer.Exit(_report_failure("simulate", proc.wait(), err))
    return proc, json.loads(line)


def demo_command(
    db: Annotated[str, typer.Option(help="database URL or SQLite file")] = "hes.db",
    tcp_meters: Annotated[int, typer.Option(help="simulated GPRS meters")] = 500,
    buses: Annotated[int, typer.Option(help="simulated RS-485 buses")] = 2,
    meters_per_bus: Annotated[int, typer.Option(help="meters per bus")] = 10,
    faults: Annotated[float, typer.Option(help="share of sessions with a transient fault")] = 0.02,
    seed: Annotated[int, typer.Option(help="fleet seed")] = 1,
) -> None:
    """Simulate a fleet, import it, collect yesterday into SQLite and print the report."""
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    with tempfile.TemporaryDirectory(prefix="hes-demo-") as tmp:
        inventory = Path(tmp) / "fleet.csv"
        sim, where = _start_simulator(
            _hes(
                "simulate",
                "--tcp-meters",
                str(tcp_meters),
                "--buses",
                str(buses),
                "--meters-per-bus",
                str(meters_per_bus),
                "--seed",
                str(seed),
                "--faults",
                str(faults),
                "--baud",
                "0",
                "--port",
                "0",
                "--bus-port",
                "0",
                "--inventory",
                str(inventory),
            )
        )
        try:
            typer.echo(f"   fleet: {json.dumps(where)}", err=True)
            _run("import", _hes("meters", "import", str(inventory), "--db", db), 300)
            summary = _run(
                "collect",
                _hes("collect", "--db", db, "--day", day, "--no-progress", "--seed", str(seed)),
                1800,
            )
            typer.echo(f"   collect summary: {summary.strip()}", err=True)
            report = _run("report", _hes("report", "--db", db, "--date", day), 300)
            typer.echo(report)
        finally:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()
    typer.echo(f"hes demo: done; the data is in {os.path.abspath(db)}", err=True)
