"""Serial end to end: the simulator on a pty, read through a serial transport and `hes read`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from collector.profile_reader import read_profile
from collector.session import Session
from collector.transport import serial_hdlc_transport
from protocols.errors import LinkError
from simulator import model
from simulator.bus_server import HdlcBus, PtyBus
from simulator.faults import FaultPlan, FaultSpec, SessionFault
from simulator.fleet import Fleet, FleetSpec
from simulator.meter import SimulatedMeter

ROOT = Path(__file__).parents[1]
SEED = 23
NOW = 1773999600.0  # 2026-03-20T10:00Z


def powered_meter(numbers: range, now: float) -> int:
    return next(n for n in numbers if SimulatedMeter(n, SEED).online(now))


@pytest.mark.parametrize("baud", [None, 9600])
async def test_pty_bus_profile_and_register(baud: int | None) -> None:
    """A bus on a pty read like an RS-485 adapter; at 9600 baud the wire time is real."""
    numbers = {17: 301, 18: 302}
    bus = HdlcBus({p: SimulatedMeter(n, SEED) for p, n in numbers.items()})
    pty = PtyBus(bus, baudrate=baud, clock=lambda: NOW)
    await pty.start()
    try:
        physical = next(p for p, n in numbers.items() if SimulatedMeter(n, SEED).online(NOW))
        spec = model.meter_spec(numbers[physical], SEED)
        hours = 2 if baud else 24
        start = datetime(2026, 3, 19, 0, 0, tzinfo=UTC)
        end = start + timedelta(hours=hours)
        transport = serial_hdlc_transport(
            pty.device, baud or 9600, physical_address=physical, frame_timeout=5.0
        )
        async with Session(transport, request_timeout=30) as s:
            name = await s.get(1, "0.0.42.0.0.255", 2)
            energy = await s.read_register("1.0.1.8.0.255")
            profile = await read_profile(s, "1.0.99.1.0.255", start, end)
        assert name == spec.logical_device_name
        assert energy.raw == model.registers(spec, model.meter_clock(spec, NOW)).active_import
        truth = model.load_profile(spec, start.timestamp(), end.timestamp() + 1)
        assert len(truth) > hours * 4 - 4
        got = [(int(r.timestamp.timestamp()), *r.values[1:]) for r in profile.rows]
        assert got == truth
        assert transport.stats.retransmissions == 0
        assert pty.stats.bytes_tx == transport.stats.bytes_rx
    finally:
        await pty.close()


async def test_pty_dropped_link_is_a_link_error_then_retry_reads() -> None:
    """On a serial line a dropped link shows as DM (no connection to close)."""
    faults = FaultSpec(drop=0.5)
    plan = FaultPlan(faults, SEED)
    spec = FleetSpec(
        seed=SEED, buses=1, meters_per_bus=40, baudrate=None, faults=faults, bus_endpoint="pty"
    )
    physical = next(
        16 + k
        for k in range(40)
        if plan.session_fault(1 + k, 0) is SessionFault.DROP
        and plan.session_fault(1 + k, 1) is SessionFault.NONE
        and SimulatedMeter(1 + k, SEED).online(NOW)
    )
    async with Fleet(spec, clock=lambda: NOW) as fleet:
        target = fleet.target(physical - 15)
        assert (
            target.transport == "serial" and target.device == fleet.describe()["buses"][0]["device"]
        )

        async def read() -> int:
            transport = serial_hdlc_transport(
                str(target.device), 9600, physical_address=physical, frame_timeout=1.0
            )
            async with Session(transport, request_timeout=5) as s:
                for _ in range(4):
                    value = (await s.read_register("1.0.1.8.0.255")).raw
            assert isinstance(value, int)
            return value

        with pytest.raises(LinkError, match="DM"):
            await read()
        meter = model.meter_spec(physical - 15, SEED)
        assert await read() == model.registers(meter, model.meter_clock(meter, NOW)).active_import


def _simulate(
    tmp_path: Path, baud: int, *extra: str
) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "simulate",
            "--pty",
            "--buses",
            "1",
            "--meters-per-bus",
            "3",
            "--seed",
            str(SEED),
            "--baud",
            str(baud),
            "--inventory",
            str(tmp_path / "bus.csv"),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        pytest.fail(f"hes simulate printed nothing: {proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line)


@pytest.mark.parametrize(
    ("baud", "hours", "simulate", "read"),
    [
        (0, 24, (), ()),
        (9600, 1, (), ()),
        # General block transfer in HDLC windows of 4 with 64-byte information fields: the
        # day's profile comes in GBT blocks of 256 bytes, three at a time.
        (
            0,
            24,
            ("--gbt-window", "2", "--hdlc-window", "4", "--hdlc-max-info", "64"),
            ("--gbt-window", "3", "--window", "7", "--max-pdu-size", "256"),
        ),
    ],
)
def test_hes_read_serial_against_hes_simulate_pty(
    tmp_path: Path, baud: int, hours: int, simulate: tuple[str, ...], read: tuple[str, ...]
) -> None:
    proc, info = _simulate(tmp_path, baud, *simulate)
    try:
        device = info["buses"][0]["device"]
        assert info["buses"][0]["baud"] == (baud or None)
        before = time.time()
        number = powered_meter(range(1, 4), before)
        spec = model.meter_spec(number, SEED)
        day = datetime.fromtimestamp(before, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=1)
        end = start + timedelta(hours=hours)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "read",
                "--serial",
                device,
                "--baud",
                str(baud or 9600),
                "--physical-address",
                str(15 + number),
                "--obis",
                "1.0.1.8.0.255",
                "--profile",
                "1.0.99.1.0.255",
                "--from",
                start.isoformat(),
                "--to",
                end.isoformat(),
                *read,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        after = time.time()
        assert result.returncode == 0, result.stdout + result.stderr
        out = json.loads(result.stdout)
        if simulate:
            negotiated = out["negotiated"]
            assert negotiated["general_block_transfer"] is True
            assert (negotiated["window_tx"], negotiated["max_info_rx"]) == (4, 64)
        (register,) = out["registers"]
        low = model.registers(spec, model.meter_clock(spec, before)).active_import
        high = model.registers(spec, model.meter_clock(spec, after)).active_import
        assert low <= register["raw"] <= high
        assert register["unit"] == "Wh"
        (profile,) = out["profiles"]
        truth = model.load_profile(spec, start.timestamp(), end.timestamp() + 1)
        got = [
            (int(datetime.fromisoformat(row["timestamp"]).timestamp()), *row["values"][1:])
            for row in profile["rows"]
        ]
        assert got == truth
        assert out["link"]["retransmissions"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
