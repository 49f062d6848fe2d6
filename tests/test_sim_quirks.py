"""Meters that behave like the independent implementations hes was tried against.

Each test switches one quirk on in the simulator (``simulator.quirks``) and reads the meter
with the project's client over the TCP wrapper and, where the quirk is HDLC's, over a real pty.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from test_e2e_read import _Loop, hes

from collector.session import Session
from collector.transport import (
    HdlcTransport,
    TcpWrapperTransport,
    hdlc_tcp_transport,
    serial_hdlc_transport,
)
from protocols.enums import DataAccessResult
from protocols.errors import (
    DecodeError,
    DlmsError,
    InvocationCounterRejected,
    KeyRejected,
    SystemTitleMismatch,
    TemporaryFailure,
)
from simulator.bus_server import HdlcBus, HdlcTcpServer, PtyBus
from simulator.fleet import Fleet, FleetSpec
from simulator.meter import SimulatedMeter
from simulator.quirks import Quirks, named
from simulator.server import WrapperServer
from storage.database import open_database
from storage.keystore import DatabaseCounterStore, KeyStore, MasterKey, security_context

SEED = 7
NOW = 1773999600.0  # 2026-03-20T10:00Z
PHYSICAL = 17

# ExceptionResponse ::= SEQUENCE { state-error, service-error } with tag [216] = 0xD8, and
# for service-error invocation-counter-error (6) the counter the server expects as an
# Unsigned32 (DLMS UA 1000-2 "Green Book", xDLMS APDUs; the same layout is decoded by the
# dlms-cosem package, dlms_cosem ExceptionResponse.from_bytes). state-error 1 is
# service-not-allowed; service-error 5 is deciphering-error.
DECIPHERING_ERROR = bytes.fromhex("D80105")
COUNTER_ERROR = bytes.fromhex("D8 01 06 00 00 07 D7")
EXPECTED_COUNTER = 0x07D7


def powered(quirks: Quirks, start: int = 1) -> SimulatedMeter:
    """A meter with ``quirks`` that is not in a simulated outage at NOW."""
    meter_id = start
    while not SimulatedMeter(meter_id, SEED).online(NOW):
        meter_id += 1
    return SimulatedMeter(meter_id, SEED, quirks=quirks)


@asynccontextmanager
async def wrapper(
    meter: SimulatedMeter, sap: int = 16
) -> AsyncIterator[Callable[[], TcpWrapperTransport]]:
    server = WrapperServer(lambda _ip, _port: meter, "127.0.0.1", 0, clock=lambda: NOW)
    await server.start()
    try:
        yield lambda: TcpWrapperTransport("127.0.0.1", server.port, client_wport=sap)
    finally:
        await server.close()


@asynccontextmanager
async def pty(meter: SimulatedMeter) -> AsyncIterator[Callable[[], HdlcTransport]]:
    bus = PtyBus(HdlcBus({PHYSICAL: meter}), clock=lambda: NOW)
    await bus.start()
    try:
        yield lambda: serial_hdlc_transport(bus.device, physical_address=PHYSICAL)
    finally:
        await bus.close()


@asynccontextmanager
async def hdlc_tcp(meter: SimulatedMeter) -> AsyncIterator[Callable[[], HdlcTransport]]:
    server = HdlcTcpServer(HdlcBus({PHYSICAL: meter}), "127.0.0.1", 0, clock=lambda: NOW)
    await server.start()
    try:
        yield lambda: hdlc_tcp_transport("127.0.0.1", server.port, physical_address=PHYSICAL)
    finally:
        await server.close()


# ------------------------------------------------------- association refused, no AARE


@pytest.mark.parametrize(
    ("exception", "error", "expected"),
    [
        (DECIPHERING_ERROR, KeyRejected, None),
        (COUNTER_ERROR, InvocationCounterRejected, EXPECTED_COUNTER),
    ],
    ids=["deciphering-error", "invocation-counter-error"],
)
async def test_bare_exception_response_to_the_aarq_is_classified(
    exception: bytes, error: type[DlmsError], expected: int | None
) -> None:
    meter = powered(Quirks(association_exception=exception))
    async with wrapper(meter) as transport:
        with pytest.raises(error) as failure:
            async with Session(transport()):
                pass
    assert not failure.value.transient
    if expected is not None:
        assert isinstance(failure.value, InvocationCounterRejected)
        assert failure.value.expected == expected
        assert f"expects at least {expected}" in str(failure.value)


async def test_advancing_the_stored_counter_recovers_a_refused_association(
    tmp_path: Path,
) -> None:
    """The recovery the error offers, end to end: a meter that saw counters up to 2006 from
    an earlier head-end refuses ours, the key-store step moves it up, the next session
    associates."""
    meter = SimulatedMeter(powered(Quirks()).meter_id, SEED, require_security=True)
    meter.state.client_invocation_counter = EXPECTED_COUNTER - 1
    database = open_database(str(tmp_path / "hes.db"))
    try:
        store = KeyStore(database, MasterKey(bytes(range(32))))
        store.put("m-1", meter.security_keys)
        async with wrapper(meter, sap=1) as transport:
            with pytest.raises(InvocationCounterRejected) as failure:
                async with Session(
                    transport(), authentication="hls-gmac", security=security_context(store, "m-1")
                ):
                    pass
            expected = failure.value.expected
            assert expected == EXPECTED_COUNTER
            assert DatabaseCounterStore(database, "m-1").advance_to(expected) == expected
            async with Session(
                transport(), authentication="hls-gmac", security=security_context(store, "m-1")
            ) as session:
                await session.read_clock()
    finally:
        database.close()


# ------------------------------------------------------- AARE without the meter's system title


@pytest.mark.parametrize("stored_title", [True, False], ids=["title-in-key-store", "no-title"])
async def test_an_aare_without_the_system_title_takes_the_key_stores(
    tmp_path: Path, stored_title: bool
) -> None:
    """``--quirk omit-system-title``: the responding-AP-title is left out of the AARE. With
    the meter's title in the key store the ciphered session reads on; without, the error
    names what is missing instead of failing on the first ciphered answer."""
    meter = SimulatedMeter(
        powered(Quirks()).meter_id, SEED, require_security=True, quirks=named(["omit-system-title"])
    )
    database = open_database(str(tmp_path / "hes.db"))
    try:
        store = KeyStore(database, MasterKey(bytes(range(32))))
        store.put("m-1", meter.security_keys, meter.keys.system_title if stored_title else None)
        async with wrapper(meter, sap=1) as transport:
            session = Session(
                transport(), authentication="hls-gmac", security=security_context(store, "m-1")
            )
            if not stored_title:
                with pytest.raises(SystemTitleMismatch, match="none is configured for this meter"):
                    async with session:
                        pass
                return
            async with session:
                assert session.association is not None
                assert session.association.responding_system_title is None
                clock = await session.read_clock()
        assert clock.to_datetime().timestamp() == pytest.approx(meter.meter_time(NOW), abs=0.011)
    finally:
        database.close()


# ------------------------------------------------------- RLRE without an LLC header


@pytest.mark.parametrize("bus", [pty, hdlc_tcp], ids=["pty", "hdlc-tcp"])
async def test_rlre_without_llc_header_is_taken(bus: Callable[..., Any]) -> None:
    """The release completes on the RLRE instead of waiting out the release timeout."""
    meter = powered(Quirks(rlre_without_llc=True))
    async with bus(meter) as transport:
        link = transport()
        session = Session(link, release_timeout=30.0)
        async with session:
            await session.read_clock()
            conn = link._conn
            assert conn is not None
        assert session.released
        assert conn.missing_llc == 1
        assert link.stats.retransmissions == 0


@pytest.fixture(scope="module")
def counter_meter_port() -> Iterator[int]:
    """A TCP wrapper meter that refuses every AARQ with the invocation-counter error."""
    background = _Loop()
    meter = powered(Quirks(association_exception=COUNTER_ERROR))
    server = WrapperServer(lambda _ip, _port: meter, "127.0.0.1", 0, clock=lambda: NOW)
    background.run(server.start())
    try:
        yield server.port
    finally:
        background.run(server.close())
        background.stop()


def test_hes_read_offers_counter_recovery_and_hes_keys_counter_applies_it(
    counter_meter_port: int, tmp_path: Path
) -> None:
    result = hes("read", "--tcp", f"127.0.0.1:{counter_meter_port}", "--timeout", "5")
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert out["error"] == "invocation_counter_rejected"
    assert out["expected_invocation_counter"] == EXPECTED_COUNTER
    assert f"hes keys counter METER_ID --at-least {EXPECTED_COUNTER}" in out["recovery"]
    db = tmp_path / "hes.db"
    step = hes("keys", "counter", "m-1", "--at-least", str(EXPECTED_COUNTER), "--db", str(db))
    assert step.returncode == 0, step.stderr
    assert json.loads(step.stdout)["next_counter"] == EXPECTED_COUNTER
    lower = hes("keys", "counter", "m-1", "--at-least", "5", "--db", str(db))
    assert json.loads(lower.stdout)["next_counter"] > EXPECTED_COUNTER  # never back down
    database = open_database(str(db))
    try:
        assert DatabaseCounterStore(database, "m-1").reserve(1) > EXPECTED_COUNTER
    finally:
        database.close()
    bad = hes("keys", "counter", "m-1", "--at-least", "-1", "--db", str(db))
    assert bad.returncode == 2 and "an invocation counter is 0..4294967295" in bad.stderr


# ------------------------------------------------------- bytes after a GET value; block errors

TRAILING = bytes(range(0xA0, 0xA0 + 18))


async def test_bytes_after_a_get_value_are_a_warning_not_a_decode_error() -> None:
    """The clock's 12-byte date-time followed by 18 more bytes."""
    meter = powered(Quirks(trailing_bytes=TRAILING))
    async with wrapper(meter) as transport:
        async with Session(transport()) as session:
            clock = await session.read_clock()
            name = await session.get(1, "0.0.42.0.0.255", 2)
    assert clock.to_datetime().timestamp() == pytest.approx(meter.meter_time(NOW), abs=0.011)
    assert name == meter.spec.logical_device_name
    assert len(session.warnings) == 2
    assert session.warnings[0].startswith("GET 8/0.0.1.0.0.255/2: 18 bytes after the value")
    assert session.warnings[0].endswith(TRAILING.hex())


async def test_a_profile_that_accepts_no_trailing_bytes_makes_them_a_decode_error() -> None:
    """``[accept] trailing_bytes = false`` (a meter profile): the same answer is refused."""
    meter = powered(Quirks(trailing_bytes=TRAILING))
    async with wrapper(meter) as transport:
        async with Session(transport(), accept_trailing=False) as session:
            with pytest.raises(DecodeError, match="18 bytes after the value: a0a1"):
                await session.read_clock()
            assert session.warnings == []


async def test_a_block_carrying_a_data_access_result_is_that_result() -> None:
    """Block 2 of a profile read answered with temporary-failure, length-prefixed."""
    meter = powered(Quirks(block_failure=DataAccessResult.TEMPORARY_FAILURE))
    async with wrapper(meter) as transport:
        async with Session(transport(), max_pdu_size=128) as session:
            with pytest.raises(TemporaryFailure) as failure:
                await session.get(7, "1.0.99.1.0.255", 2)
            assert failure.value.result == DataAccessResult.TEMPORARY_FAILURE
            assert failure.value.transient
            await session.read_clock()  # the association goes on


# ------------------------------------------------------- named quirks for hes simulate


def test_named_quirks_combine_and_reach_every_meter_of_a_fleet() -> None:
    both = named(["rlre-without-llc", "aarq-counter-error"])
    assert both.rlre_without_llc and both.association_exception == COUNTER_ERROR
    assert both.trailing_bytes == b"" and both.block_failure is None
    with pytest.raises(ValueError, match="unknown quirk 'rlre'; use one of"):
        named(["rlre"])
    fleet = Fleet(FleetSpec(seed=SEED, buses=1, meters_per_bus=2, quirks=both))
    assert fleet.pool.acquire(1).quirks == both
