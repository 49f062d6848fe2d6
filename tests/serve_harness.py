"""What the end-to-end tests of ``hes serve`` share: a simulator on the real clock, the real
service in a subprocess, and the ground truth to hold the database against.

The simulator (``simulator.fleet.Fleet``) serves from a thread of the test process on real
time, so the service's schedules (which run on real time too) find in the meters what a
real night would: yesterday's load profile complete, today's up to now. Inventory rows
use the management client with LLS where a test sends commands (passwords in the
environment as ``HES_PASSWORD_<REF>``, as an operator would give them).
"""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from test_collector_fleet import CHANNELS, FleetThread

from contracts.meters import INVENTORY_COLUMNS
from simulator import model
from simulator.fleet import Fleet, FleetSpec, meter_number
from simulator.meter import SimulatedMeter
from storage.database import Database
from storage.gaps import day_window

ROOT = Path(__file__).resolve().parents[1]
SEED = 4242
TIMEOUT = 60.0


def _usable(number: int, instants: list[float], seed: int = SEED) -> bool:
    """Answers at every instant, and its clock is not behind true time: the service runs on
    true time, so a meter whose clock lags (the simulator drifts clocks by up to hours)
    would not yet hold the intervals a run expects, and the run would retry them until its
    window ends, far past a test's patience."""
    spec = model.meter_spec(number, seed)
    meter = SimulatedMeter(number, seed)
    return all(meter.online(t) and model.meter_clock(spec, t) >= t for t in instants)


def online_run(count: int, start: int, instants: list[float], seed: int = SEED) -> int:
    """First meter number n such that meters n .. n+count-1 are all :func:`_usable`."""
    n = start
    while True:
        bad = next((k for k in range(count) if not _usable(n + k, instants, seed)), None)
        if bad is None:
            return n
        n += bad + 1


class SimThread(FleetThread[Fleet]):
    """A simulator fleet on the real clock, serving from its own event loop in a thread."""

    def __init__(self, spec: FleetSpec) -> None:
        super().__init__(Fleet(spec, clock=time.time))

    def relay(self, meter_id: str) -> int:
        """The control state of the simulated meter itself (not what hes read of it)."""

        async def state() -> int:
            meter = self.fleet.pool.acquire(meter_number(meter_id))
            try:
                return meter.current_state().control_state
            finally:
                self.fleet.pool.release(meter)

        return asyncio.run_coroutine_threadsafe(state(), self.loop).result(timeout=10)


def password_ref(meter_id: str) -> str:
    return f"sim/{meter_id}"


def write_inventory(fleet: Fleet, path: Path, lls: bool = True) -> list[str]:
    """The fleet's inventory CSV (management client with LLS when ``lls``); the meter ids."""
    ids = []
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=INVENTORY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in fleet.inventory_rows():
            if lls:
                row.update(
                    client_sap="1", authentication="lls", password_ref=password_ref(row["meter_id"])
                )
            writer.writerow(row)
            ids.append(row["meter_id"])
    return ids


def service_env(meter_ids: list[str], home: Path) -> dict[str, str]:
    """The environment of the service: the meters' LLS passwords, a private HOME."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home)}
    for meter_id in meter_ids:
        secret = model.meter_spec(meter_number(meter_id), SEED).password
        env[f"HES_PASSWORD_SIM_{meter_id}"] = secret.decode()
    return env


@dataclass
class Service:
    """A running ``hes serve``."""

    proc: subprocess.Popen[str]
    url: str
    lines: list[str]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = TIMEOUT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def start_service(config: Path, env: dict[str, str]) -> Service:
    """``hes serve --config`` in a subprocess; returns once it says where it listens."""
    return start_process([sys.executable, "-m", "cli", "serve", "--config", str(config)], env)


def start_process(argv: list[str], env: dict[str, str]) -> Service:
    """A ``hes serve`` command line in a subprocess; returns once it says where it listens."""
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"hes serve ended: {proc.wait()} {''.join(lines)}")
        lines.append(line)
        if "listening on " in line:
            url = line.rsplit("listening on ", 1)[1].strip()
            threading.Thread(target=_drain, args=(proc, lines), daemon=True).start()
            return Service(proc, url, lines)
    proc.kill()
    raise AssertionError(f"hes serve did not start: {''.join(lines)}")


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)


@contextmanager
def service(config: Path, env: dict[str, str]) -> Iterator[Service]:
    """A service that is killed if the test leaves it running."""
    svc = start_service(config, env)
    try:
        yield svc
    finally:
        if svc.proc.poll() is None:
            svc.proc.kill()
            svc.proc.wait(timeout=TIMEOUT)


def config_file(tmp_path: Path, plan: str, **service: str | float | int | bool) -> Path:
    """A hes.toml with ``[service]`` settings (db in tmp_path, any free port) and the plan."""
    settings = {"db": str(tmp_path / "hes.db"), "http": "127.0.0.1:0", **service}
    lines = ["[service]"]
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {str(value).lower()}")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    path = tmp_path / "hes.toml"
    path.write_text("\n".join(lines) + "\n" + plan, encoding="utf-8")
    return path


def truth_count(meter_id: str, day: date, until: datetime | None = None, seed: int = SEED) -> int:
    """Interval values (every channel) the meter holds for ``day`` before ``until``."""
    start, end = day_window(day)
    if until is not None:
        end = min(end, until)
    rows = model.ground_truth(meter_number(meter_id), seed, start.timestamp(), end.timestamp())
    return len(rows.load_profile) * len(CHANNELS)


def stored_vs_truth(
    db: Database, meter_id: str, day: date, until: datetime | None = None, seed: int = SEED
) -> list[str]:
    """Every difference between the stored intervals of ``day`` (before ``until``) and the
    simulator's ground truth; empty when they are equal."""
    start, end = day_window(day)
    if until is not None:
        end = min(end, until)
    truth = model.ground_truth(
        meter_number(meter_id), seed, start.timestamp(), end.timestamp()
    ).load_profile
    problems = []
    for k, channel in enumerate(CHANNELS):
        want = [(datetime.fromtimestamp(r[0], UTC), r[2 + k], r[1]) for r in truth]
        got = [(r.ts, r.value, r.status) for r in db.interval_reads(meter_id, channel, start, end)]
        if got != want:
            problems.append(f"{meter_id} {channel}: {len(got)} stored, {len(want)} true")
    return problems
