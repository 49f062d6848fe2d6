"""Serial meters that need the IEC 62056-21 mode E sign-on: the simulator's side
(``simulator.sign_on``) on its own, then the client (``collector.sign_on``) and ``hes read``
against it over a real pty.

The byte sequence checked (request at 300 baud, identification with ``\\2``, ``ACK 2 Z 2``,
then HDLC at baud Z) is the one published summaries of IEC 62056-21 give; see the sources
in ``protocols/iec62056_21.py``. A pty accepts the 300 baud 7E1 and 9600 8N1 settings
without enforcing them, so the tests check bytes and order, not the UART.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_collector_fleet import plan_text
from test_e2e_read import _Loop, hes
from test_security_collect import stored_vs_truth

from app.collect import CollectOptions, collect_async
from collector.inventory import import_inventory
from collector.plan import PlanError, load_plan, parse_plan
from collector.session import Session
from collector.transport import open_transport, serial_hdlc_transport
from protocols.errors import DecodeError, DlmsTimeout, SignOnError
from protocols.hdlc import HdlcAddress
from protocols.hdlc_link import Connected, Disconnected, HdlcConnection, HdlcSettings, Role
from protocols.iec62056_21 import Identification
from protocols.iec62056_21 import with_even_parity as P
from simulator import model
from simulator.bus_server import HdlcBus
from simulator.fleet import FIRST_PHYSICAL, Fleet, FleetSpec, meter_id_text
from simulator.meter import SimulatedMeter
from simulator.quirks import named
from simulator.sign_on import SignOnBus
from storage.database import open_database

ROOT = Path(__file__).parents[1]
SEED = 31
NOW = 1773999600.0  # 2026-03-20T10:00Z
ENERGY = "1.0.1.8.0.255"


def _powered(first: int, count: int) -> list[int]:
    return [n for n in range(first, first + count) if SimulatedMeter(n, SEED).online(NOW)]


def _line(meters: dict[int, int]) -> SignOnBus:
    """A sign-on line in front of a bus (physical address -> meter number), addressed by
    meter id, as ``Fleet`` builds it."""
    bus = HdlcBus({p: SimulatedMeter(n, SEED) for p, n in meters.items()})
    by_id = {meter_id_text(n): p for p, n in meters.items()}
    if len(meters) == 1:  # as through an optical probe: a request without address is its
        by_id[""] = next(iter(meters))
    return SignOnBus(
        bus,
        lambda address: by_id.get(address),
        lambda meter: Identification("SIM", "5", meter_id_text(meter.meter_id)),
        idle_s=60.0,
    )


def _client(physical: int) -> HdlcConnection:
    return HdlcConnection(Role.CLIENT, HdlcAddress(16), HdlcAddress(1, physical, 0), HdlcSettings())


def _feed(conn: HdlcConnection, data: bytes) -> list[object]:
    return list(conn.receive_data(data))


def test_sign_on_line_ignores_hdlc_until_signed_on() -> None:
    a, b = _powered(1, 10)[:2]
    line = _line({17: a, 18: b})
    conn = _client(17)
    snrm = conn.connect()
    assert line.respond(snrm, NOW, 0.0).data == b""  # no sign-on yet: HDLC gets nothing
    assert line.line_baud(9600) == 300
    assert line.respond(P(b"/?!\r\n"), NOW, 0.1).data == b""  # two meters: nobody answers
    assert line.respond(P(b"/?SIM999999999!\r\n"), NOW, 0.2).data == b""  # not on this line
    # A request without its parity bits is lost on the 7E1 line ("/" has odd weight).
    assert line.respond(f"/?{meter_id_text(a)}!\r\n".encode(), NOW, 0.25).data == b""
    reply = line.respond(P(f"/?{meter_id_text(a)}!\r\n".encode()), NOW, 0.3)
    assert reply.data == P(f"/SIM5\\2{meter_id_text(a)}\r\n".encode()) and reply.delay > 0
    assert reply.data[:1] == b"\xaf"  # "/" 0x2F with its even parity bit
    assert line.respond(bytes.fromhex("06 B2 35 B2 8D 0A"), NOW, 0.4).data == b""
    assert line.line_baud(9600) == 9600 and line.sign_ons == 1
    # Signed on: meter 17 listens at 9600; meter 18 is still at 300 baud and hears nothing.
    assert line.respond(_client(18).connect(), NOW, 0.5).data == b""
    events = _feed(conn, line.respond(snrm, NOW, 0.6).data)
    assert any(isinstance(e, Connected) for e in events)
    events = _feed(conn, line.respond(conn.disconnect(), NOW, 0.7).data)
    assert any(isinstance(e, Disconnected) for e in events)
    # DISC ended the link: back at 300 baud, HDLC ignored again.
    assert line.line_baud(9600) == 300
    assert line.respond(_client(17).connect(), NOW, 0.8).data == b""


def test_sign_on_line_returns_to_300_baud_when_idle() -> None:
    (a,) = _powered(1, 10)[:1]
    line = _line({17: a})
    assert line.respond(P(b"/?!\r\n"), NOW, 0.0).data.startswith(P(b"/SIM5\\2"))  # one meter
    line.respond(P(b"\x06252\r\n"), NOW, 0.1)
    conn = _client(17)
    assert any(
        isinstance(e, Connected) for e in _feed(conn, line.respond(conn.connect(), NOW, 1).data)
    )
    # The head-end vanished without DISC: after idle_s of silence the meter is at 300 again.
    assert line.respond(_client(17).connect(), NOW, 100.0).data == b""
    assert line.respond(P(b"/?!\r\n"), NOW, 100.1).data.startswith(P(b"/SIM5\\2"))


def test_sign_on_refused_option_keeps_the_meter_at_300_baud() -> None:
    (a,) = _powered(1, 10)[:1]
    line = _line({17: a})
    line.respond(P(b"/?!\r\n"), NOW, 0.0)
    line.respond(P(b"\x06050\r\n"), NOW, 0.1)  # data readout (mode C): not for this meter
    assert line.line_baud(9600) == 300 and line.sign_ons == 0
    assert line.respond(_client(17).connect(), NOW, 0.2).data == b""


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[Fleet, _Loop]]:
    background = _Loop()
    spec = FleetSpec(
        seed=SEED, buses=1, meters_per_bus=3, baudrate=None, bus_endpoint="pty", mode_e=True
    )
    fleet = Fleet(spec, clock=lambda: NOW)
    background.run(fleet.start())
    try:
        yield fleet, background
    finally:
        background.run(fleet.close())
        background.stop()


def _number(fleet: Fleet) -> int:
    return _powered(fleet.spec.bus_meter(0, FIRST_PHYSICAL) or 1, 3)[0]


async def _energy(fleet: Fleet, number: int) -> tuple[int, object]:
    transport = open_transport(fleet.target(number))
    async with Session(transport, request_timeout=5) as s:
        energy = (await s.read_register(ENERGY)).raw
    assert isinstance(energy, int)
    return energy, transport


async def test_mode_e_session_over_a_pty_twice(fleet: tuple[Fleet, _Loop]) -> None:
    sim, _ = fleet
    number = _number(sim)
    target = sim.target(number)
    assert (target.startup, target.device_address) == ("iec62056-21", meter_id_text(number))
    spec = model.meter_spec(number, SEED)
    truth = model.registers(spec, model.meter_clock(spec, NOW)).active_import
    for _ in range(2):  # the DISC of the first session brings the meter back to the sign-on
        energy, transport = await _energy(sim, number)
        assert energy == truth
        signed = transport.signed_on  # type: ignore[attr-defined]
        assert signed.identification.identification == meter_id_text(number)
        assert signed.identification.mode_e and signed.baudrate == 9600


async def test_client_that_skips_the_sign_on_gets_nothing(fleet: tuple[Fleet, _Loop]) -> None:
    sim, _ = fleet
    number = _number(sim)
    target = sim.target(number)
    plain = serial_hdlc_transport(
        str(target.device), physical_address=target.physical_address, frame_timeout=0.3, retries=1
    )
    with pytest.raises(DlmsTimeout, match="mode E sign-on"):
        async with Session(plain, request_timeout=2):
            pass
    assert plain.stats.bytes_rx == 0
    wrong = serial_hdlc_transport(
        str(target.device),
        physical_address=target.physical_address,
        startup="iec62056-21",
        device_address="SIM999999999",
        sign_on_timeout=0.5,
        retries=1,
    )
    with pytest.raises(
        DlmsTimeout,
        match=r"identification for device address 'SIM999999999' after 2 requests of 0.5 s",
    ):
        async with Session(wrong, request_timeout=2):
            pass
    assert (await _energy(sim, number))[0] > 0  # the line is still good for a right sign-on


@pytest.mark.parametrize(
    ("quirk", "error", "detail"),
    [
        ("identification-without-cr", DecodeError, "does not end with CR LF"),
        ("identification-mode-c", SignOnError, "does not offer mode E"),
    ],
)
async def test_bad_identification_is_a_clear_error(
    quirk: str, error: type[Exception], detail: str
) -> None:
    spec = FleetSpec(
        seed=SEED,
        buses=1,
        meters_per_bus=1,
        baudrate=None,
        bus_endpoint="pty",
        mode_e=True,
        quirks=named([quirk]),
    )
    async with Fleet(spec, clock=lambda: NOW) as sim:
        transport = serial_hdlc_transport(
            str(sim.target(spec.bus_meter(0, FIRST_PHYSICAL) or 0).device),
            physical_address=FIRST_PHYSICAL,
            startup="iec62056-21",
        )
        with pytest.raises(error, match=detail):
            await transport.open()


def test_mode_e_is_for_serial_buses() -> None:
    with pytest.raises(ValueError, match="pty"):
        FleetSpec(buses=1, meters_per_bus=1, mode_e=True)
    with pytest.raises(ValueError, match="38400"):
        FleetSpec(buses=1, meters_per_bus=1, mode_e=True, bus_endpoint="pty", baudrate=38400)
    with pytest.raises(ValueError, match="startup"):
        serial_hdlc_transport("/dev/null", startup="iec62056-99")


def test_hes_read_mode_e_over_a_pty(fleet: tuple[Fleet, _Loop]) -> None:
    sim, _ = fleet
    number = _number(sim)
    target = sim.target(number)
    base = ["read", "--serial", str(target.device), "--physical-address"]
    base += [str(target.physical_address), "--obis", ENERGY, "--timeout", "5"]
    result = hes(*base, "--mode-e", "--device-address", meter_id_text(number))
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    spec = model.meter_spec(number, SEED)
    clock = datetime.fromisoformat(out["clock"]["datetime"]).timestamp()
    assert clock == pytest.approx(model.meter_clock(spec, NOW), abs=1.0)
    (register,) = out["registers"]
    assert register["raw"] == model.registers(spec, model.meter_clock(spec, NOW)).active_import
    assert out["link"]["sign_on"] == {
        "startup": "iec62056-21",
        "manufacturer": "SIM",
        "identification": meter_id_text(number),
        "baud": 9600,
    }
    # Without the sign-on the meter stays silent, and the error says what it may need.
    silent = hes(*base, "--frame-timeout", "0.3", "--retries", "1")
    assert silent.returncode == 1
    error = json.loads(silent.stdout)
    assert error["error"] == "timeout" and "mode E" in error["detail"]
    usage = hes(*base, "--device-address", "SIM1")
    assert usage.returncode == 2 and "--mode-e" in json.loads(usage.stdout)["detail"]


def test_hes_read_takes_the_mode_e_start_up_from_the_shipped_profile(
    fleet: tuple[Fleet, _Loop],
) -> None:
    """``--meter-profile sim-mode-e`` signs on without ``--mode-e``; ``--no-mode-e`` overrides."""
    sim, _ = fleet
    number = _number(sim)
    target = sim.target(number)
    base = ["read", "--serial", str(target.device), "--physical-address"]
    base += [str(target.physical_address), "--obis", ENERGY, "--timeout", "5"]
    base += ["--meter-profile", "sim-mode-e"]
    result = hes(*base, "--device-address", meter_id_text(number))
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    spec = model.meter_spec(number, SEED)
    (register,) = out["registers"]
    assert register["raw"] == model.registers(spec, model.meter_clock(spec, NOW)).active_import
    assert out["link"]["sign_on"]["identification"] == meter_id_text(number)
    assert out["meter_profile"]["name"] == "sim-mode-e"
    silent = hes(*base, "--no-mode-e", "--frame-timeout", "0.3", "--retries", "1")
    assert silent.returncode == 1 and json.loads(silent.stdout)["error"] == "timeout"


def test_hes_simulate_mode_e_with_a_garbled_identification() -> None:
    """``hes simulate --pty --mode-e``: a meter whose identification lacks its CR makes
    ``hes read --mode-e`` fail with a decode error naming what was wrong."""
    now = time.time()
    first = next(
        n for n in range(1, 100) if all(SimulatedMeter(n, SEED).online(now + d) for d in (0, 60))
    )
    args = [sys.executable, "-m", "cli", "simulate", "--pty", "--mode-e", "--buses", "1"]
    args += ["--meters-per-bus", "1", "--seed", str(SEED), "--baud", "0"]
    args += ["--first-meter", str(first)]
    args += ["--quirk", "identification-without-cr"]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline() or "{}")
        (bus,) = info["buses"]
        assert bus["startup"] == "iec62056-21"
        result = hes("read", "--serial", bus["device"], "--physical-address", "16", "--mode-e")
        assert result.returncode == 1, result.stdout + result.stderr
        error = json.loads(result.stdout)
        assert error["error"] == "decode" and "does not end with CR LF" in error["detail"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0
    bad = hes("simulate", "--mode-e", "--buses", "1", "--meters-per-bus", "1")
    assert bad.returncode != 0 and "--pty" in bad.stdout + bad.stderr


@pytest.mark.parametrize("source", ["plan", "meter-profile"])
async def test_collect_a_mode_e_bus_through_the_plan(tmp_path: Path, source: str) -> None:
    """``hes collect``'s path: a plan group with ``startup = "iec62056-21"``, or inventory
    rows naming the shipped ``sim-mode-e`` profile under a plain plan (whose channel map the
    meters then read), signs on to each meter of a mode E bus (device address = meter id) and
    stores the true day."""
    now = time.time()
    first = next(
        n
        for n in range(1, 1000)
        if all(SimulatedMeter(k, SEED).online(now + d) for k in (n, n + 1) for d in (0, 300))
    )
    spec = FleetSpec(
        seed=SEED,
        buses=1,
        meters_per_bus=2,
        baudrate=None,
        bus_endpoint="pty",
        mode_e=True,
        first_meter=first,
    )
    day = datetime.now(UTC).date() - timedelta(days=2)
    db_path, plan = tmp_path / "hes.db", tmp_path / "plan.toml"
    text = plan_text(concurrency=2)
    if source == "plan":
        text = text.replace('name = "all"\n', MODE_E_GROUP)
    else:
        # The group maps one column; the profile's channel map (all four) is what is stored.
        for column in (3, 4, 5):
            text = text.replace(f'{column} = "1.0.{column - 1}.8.0.255"\n', "")
        assert len(parse_plan(text).groups[0].profile.channels) == 1
    plan.write_text(text, encoding="utf-8")
    async with Fleet(spec) as fleet:
        fleet.write_inventory(tmp_path / "fleet.csv")
        if source == "meter-profile":
            _name_profile(tmp_path / "fleet.csv", "sim-mode-e")
        database = open_database(db_path)
        import_inventory(database, tmp_path / "fleet.csv")
        database.close()
        opts = CollectOptions(
            db=str(db_path),
            config=str(plan),
            day=day,
            run_id="mode-e",
            concurrency=None,
            once=False,
            seed=1,
            log_file=None,
        )
        summary, _ = await collect_async(opts, load_plan(plan))
        signed = sum(s.bus.sign_ons for s in fleet.bus_servers if isinstance(s.bus, SignOnBus))
    assert summary.stats.complete == 2, summary.incomplete
    assert signed >= 2
    database = open_database(db_path)
    try:
        for number in (first, first + 1):
            assert stored_vs_truth(database, number, SEED, day) == []
    finally:
        database.close()


def _name_profile(path: Path, profile: str) -> None:
    """Every row of an inventory names ``profile``."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows({**row, "profile": profile} for row in rows)


MODE_E_GROUP = 'name = "all"\nstartup = "iec62056-21"\ndevice_address = "meter_id"\n'


def test_plan_startup_is_checked() -> None:
    good = parse_plan(plan_text().replace('name = "all"\n', MODE_E_GROUP))
    assert (good.groups[0].startup, good.groups[0].device_address) == ("iec62056-21", "meter_id")
    with pytest.raises(PlanError, match=r"group\[0\].startup: 'mode-e': use one of"):
        parse_plan(plan_text().replace('name = "all"\n', 'startup = "mode-e"\n'))
    with pytest.raises(PlanError, match=r"group\[0\].device_address"):
        parse_plan(plan_text().replace('name = "all"\n', 'device_address = "serial"\n'))
