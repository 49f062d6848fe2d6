"""The simulator fleet: start/stop, loopback addressing, inventory round trip, `hes simulate`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from collector.inventory import parse_inventory
from collector.session import Session
from collector.transport import open_transport
from contracts.meters import MeterTarget
from protocols import axdr
from protocols.errors import LinkError
from simulator import model
from simulator.fleet import (
    Fleet,
    FleetSpec,
    LatencySpec,
    LoopbackRange,
    MeterPool,
    meter_id_text,
    meter_number,
)
from simulator.meter import SimulatedMeter
from simulator.server import WrapperServer
from storage.keystore import parse_key_file
from storage.records import MeterRecord

ROOT = Path(__file__).parents[1]
SEED = 11
#: A fixed true time (2026-03-20T10:00Z) so register values are known exactly.
NOW = 1773999600.0


def small_spec(**overrides: object) -> FleetSpec:
    args: dict[str, object] = {
        "seed": SEED,
        "tcp_meters": 4,
        "buses": 2,
        "meters_per_bus": 3,
        "tcp_port": 0,
        "baudrate": None,
    }
    args.update(overrides)
    return FleetSpec(**args)  # type: ignore[arg-type]


async def identity(target: MeterTarget) -> tuple[bytes, str, int]:
    """Logical device name, serial number and A+ register (Wh) as the meter tells them."""
    async with Session(open_transport(target), request_timeout=5) as s:
        name = await s.get(1, "0.0.42.0.0.255", 2)
        serial = await s.get(1, "0.0.96.1.0.255", 2)
        energy = await s.read_register("1.0.1.8.0.255")
    assert isinstance(name, bytes)
    serial_text = serial.decode() if isinstance(serial, bytes) else str(serial)
    assert isinstance(energy.raw, int)
    return name, serial_text, energy.raw


def test_meter_ids_map_back_to_numbers() -> None:
    assert meter_id_text(1234) == "SIM000001234" == model.meter_spec(1234, SEED).serial_number
    assert meter_number("SIM000001234") == 1234
    for bad in ("SIM1234", "XYZ000001234", "SIM0000012345", ""):
        with pytest.raises(ValueError, match="simulator id"):
            meter_number(bad)


def test_spec_numbering_and_validation() -> None:
    spec = small_spec(first_meter=100)
    assert spec.total_meters == 10
    assert spec.locate(100) == ("tcp", 0, 0)
    assert spec.locate(104) == ("bus", 0, 16)
    assert spec.locate(109) == ("bus", 1, 18)
    assert spec.bus_meter(1, 18) == 109
    assert spec.bus_meter(1, 19) is None
    with pytest.raises(ValueError, match="not in this fleet"):
        spec.locate(110)
    with pytest.raises(ValueError, match="physical addresses"):
        small_spec(meters_per_bus=20000)
    with pytest.raises(ValueError, match="do not fit"):
        small_spec(first_address="127.255.255.253")


def test_loopback_range() -> None:
    r = LoopbackRange("127.1.0.254", 4)
    assert list(r) == ["127.1.0.254", "127.1.0.255", "127.1.1.0", "127.1.1.1"]
    assert r[-1] == "127.1.1.1"
    assert r.position("127.1.1.0") == 2
    assert r.position("127.1.1.2") is None
    assert r.position("not an address") is None


def test_gprs_latency_is_seeded_and_gprs_like() -> None:
    spec = LatencySpec("gprs")
    medians = [spec.meter_median(SEED, n) for n in range(2000)]
    assert medians == [spec.meter_median(SEED, n) for n in range(2000)]
    inside = sum(0.5 <= m <= 3.0 for m in medians) / len(medians)
    assert inside > 0.85
    assert max(medians) <= spec.max_s
    with pytest.raises(ValueError, match="latency"):
        LatencySpec("satellite")  # type: ignore[arg-type]


async def test_meters_answer_as_themselves() -> None:
    spec = small_spec()
    async with Fleet(spec, clock=lambda: NOW) as fleet:
        assert fleet.tcp is not None and fleet.tcp.listen_mode == "device"
        for number in (1, 4, 5, 10):
            want = model.meter_spec(number, SEED)
            name, serial, energy = await identity(fleet.target(number))
            assert name == want.logical_device_name
            assert serial == want.serial_number
            meter_time = model.meter_clock(want, NOW)
            assert energy == model.registers(want, meter_time).active_import
        assert len(fleet.pool) == 0
        stats = fleet.stats()
        assert stats["tcp"]["connections"] == 2
        assert stats["buses"]["connections"] == 2


async def test_unknown_loopback_address_is_refused() -> None:
    async with Fleet(small_spec(), clock=lambda: NOW) as fleet:
        assert fleet.tcp is not None
        outside = MeterTarget("tcp", host="127.1.0.5", port=fleet.tcp.port)
        with pytest.raises(LinkError):
            await identity(outside)
        assert fleet.tcp.stats.refused == 1


async def test_per_address_listening_fallback() -> None:
    """Where SO_BINDTODEVICE is refused, one socket per address serves the same meters."""
    addresses = LoopbackRange("127.3.0.1", 3)
    pool = MeterPool(SEED)

    def resolve(ip: str, port: int) -> SimulatedMeter | None:
        index = addresses.position(ip)
        return None if index is None else pool.acquire(50 + index)

    server = WrapperServer(
        resolve,
        port=0,
        clock=lambda: NOW,
        hosts=addresses,
        release=pool.release,
        per_address=True,
    )
    await server.start()
    try:
        assert server.listen_mode == "per-address"
        for index in (0, 2):
            target = MeterTarget("tcp", host=addresses[index], port=server.port)
            name, _, _ = await identity(target)
            assert name == model.meter_spec(50 + index, SEED).logical_device_name
    finally:
        await server.close()


async def test_state_changed_by_action_persists_across_sessions() -> None:
    """The pool forgets idle meters but keeps one whose relay a manager opened."""
    async with Fleet(small_spec(tcp_meters=1, buses=0, meters_per_bus=0)) as fleet:
        target = fleet.target(1)
        async with Session(open_transport(target), request_timeout=5) as s:
            assert await s.get(70, "0.0.96.3.10.255", 2) is True
        assert len(fleet.pool) == 0
        mgmt = MeterTarget(
            "tcp", host=target.host, port=target.port, client_sap=1, authentication="lls"
        )
        password = model.meter_spec(1, SEED).password
        async with Session(
            open_transport(mgmt), authentication="lls", password=password, request_timeout=5
        ) as s:
            await s.action(70, "0.0.96.3.10.255", 1, axdr.i8(0))  # remote_disconnect
        assert len(fleet.pool) == 1
        async with Session(open_transport(target), request_timeout=5) as s:
            assert await s.get(70, "0.0.96.3.10.255", 2) is False


async def test_inventory_round_trip(tmp_path: Path) -> None:
    spec = small_spec(first_meter=500)
    async with Fleet(spec) as fleet:
        path = tmp_path / "fleet.csv"
        assert fleet.write_inventory(path) == spec.total_meters
        records = parse_inventory(path)
    assert len(records) == spec.total_meters
    by_id = {r.meter_id: r for r in records}
    tcp = by_id[meter_id_text(500)]
    assert (tcp.transport, tcp.host, tcp.port) == ("tcp", "127.1.0.1", fleet_port(records))
    last = by_id[meter_id_text(509)]
    assert (last.transport, last.physical_address, last.link_id) == ("hdlc-tcp", 18, "bus001")
    assert sorted(meter_number(r.meter_id) for r in records) == list(range(500, 510))
    assert len({r.link_id for r in records if r.transport == "hdlc-tcp"}) == 2


def fleet_port(records: list[MeterRecord]) -> int:
    ports = {r.port for r in records if r.transport == "tcp"}
    assert len(ports) == 1
    port = ports.pop()
    assert port is not None
    return port


def test_simulate_command_runs_until_sigterm(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.csv"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli",
            "simulate",
            "--tcp-meters",
            "3",
            "--buses",
            "1",
            "--meters-per-bus",
            "2",
            "--seed",
            str(SEED),
            "--port",
            "0",
            "--baud",
            "0",
            "--inventory",
            str(inventory),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["meters"] == 5
        assert info["inventory_rows"] == 5
        assert info["buses"][0]["port"] > 0
        records = parse_inventory(inventory)
        assert {r.meter_id for r in records} == {meter_id_text(n) for n in range(1, 6)}
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    stopped = json.loads(out.splitlines()[-1])
    assert stopped["stopped"] is True
    lines = stopped["stats"]["bus_lines"]
    assert lines == [{"link_id": "bus000", "connections": 0, "peak_clients": 0, "overlaps": 0}]


def test_simulate_command_rejects_bad_options() -> None:
    for args, message in (
        (["--tcp-meters", "2", "--faults", "1.5"], "--faults"),
        (["--tcp-meters", "2", "--latency", "fast"], "--latency"),
        ([], "no meters"),
        (["--buses", "1", "--meters-per-bus", "20000"], "physical addresses"),
        (["--tcp-meters", "2", "--area-size", "-1"], "--area-size -1 must not be negative"),
        (["--tcp-meters", "2", "--area-size", "2", "--under-share", "2"], "--under-share"),
        (["--tcp-meters", "1", "--gbt-window", "64"], "--gbt-window: gbt_window 64 outside"),
        (["--buses", "1", "--meters-per-bus", "1", "--hdlc-window", "8"], "window_tx must be"),
        (["--buses", "1", "--meters-per-bus", "1", "--hdlc-max-info", "0"], "--hdlc-max-info"),
        (["--tcp-meters", "1", "--quirk", "short-names", "--gbt-window", "2"], "for LN meters"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "cli", "simulate", "--port", "0", "--duration", "0", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr


async def test_lls_and_secured_shares_are_disjoint_and_the_key_file_holds_theirs(
    tmp_path: Path,
) -> None:
    """Exact seeded shares, never both for one meter; the inventory names an LLS meter's
    password by reference only, the key file (owner-only) holds each one's own password and
    each secured meter's keys, and the key store parser takes it as it is."""
    spec = small_spec(first_meter=700, secure_share=0.3, lls_share=0.5)
    assert (
        spec.lls_meters()
        == small_spec(first_meter=700, secure_share=0.3, lls_share=0.5).lls_meters()
    )  # seeded
    with pytest.raises(ValueError, match="lls_share"):
        small_spec(secure_share=0.6, lls_share=0.5)
    async with Fleet(spec) as fleet:
        assert (len(fleet.secured), len(fleet.lls)) == (3, 5)
        assert not fleet.secured & fleet.lls
        inventory, keys = tmp_path / "fleet.csv", tmp_path / "keys.csv"
        fleet.write_inventory(inventory)
        assert fleet.write_keys(keys) == 8
    assert keys.stat().st_mode & 0o777 == 0o600
    by_number = {meter_number(r.meter_id): r for r in parse_inventory(inventory)}
    for number in fleet.lls:
        row = by_number[number]
        assert (row.client_sap, row.authentication) == (1, "lls")
        assert row.password_ref == meter_id_text(number)
    rows = {meter_number(r.meter_id): r for r in parse_key_file(keys)}
    assert set(rows) == fleet.secured | fleet.lls
    for number in fleet.lls:
        assert rows[number].keys is None
        assert rows[number].lls_password == model.meter_spec(number, spec.seed).password
    for number in fleet.secured:
        truth = model.keys(number, spec.seed)
        got = rows[number].keys
        assert got is not None and rows[number].lls_password is None
        assert (got.encryption_key, got.authentication_key) == (
            truth.encryption_key,
            truth.authentication_key,
        )
        assert rows[number].system_title == truth.system_title
    assert password_not_in(inventory.read_bytes(), fleet.lls, spec.seed)


def password_not_in(blob: bytes, numbers: set[int] | frozenset[int], seed: int) -> bool:
    return all(b"," + model.password(n, seed) + b"," not in blob + b"," for n in numbers)
