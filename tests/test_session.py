"""The client Session end to end over real links against the simulator and its ground truth.

Every test runs over the three links a head-end uses: TCP with the IEC 62056-47 wrapper, HDLC
over a terminal-server TCP port, and HDLC on a real pty pair (the serial path through
pyserial-asyncio). The simulator runs on a fixed clock, so every value is known exactly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.profile_reader import read_profile
from collector.session import Session
from collector.transport import (
    TcpWrapperTransport,
    Transport,
    hdlc_tcp_transport,
    serial_hdlc_transport,
)
from protocols import axdr
from protocols.cosem import CosemDateTime, Obis
from protocols.errors import (
    AccessDenied,
    AssociationRefused,
    AuthenticationFailed,
    ObjectUndefined,
)
from protocols.hdlc_link import HdlcSettings
from simulator import model
from simulator import objects as O
from simulator.bus_server import HdlcBus, HdlcTcpServer, PtyBus
from simulator.meter import MANAGEMENT_CLIENT, PUBLIC_CLIENT, SERVER_MAX_PDU, SimulatedMeter
from simulator.server import WrapperServer

SEED = 7
#: True time of every test: 2026-03-12 13:00:17.5 UTC (the simulator's clock is frozen there).
NOW = 1772409600 + 10 * model.DAY + 13 * 3600 + 17.5
PHYSICAL = 17
#: A second meter on the same bus, so a frame routed to the wrong address would show.
OTHER_PHYSICAL = 18
LINKS = ("tcp", "hdlc-tcp", "serial")
A_PLUS = "1.0.1.8.0.255"
LOAD_PROFILE = "1.0.99.1.0.255"
UNKNOWN = "1.0.99.99.99.255"


def _clock() -> float:
    return NOW


def _quiet_meter(start_id: int) -> SimulatedMeter:
    """A three-phase, four-tariff meter with no outage in the last week (complete profiles)."""
    today = (int(NOW) - model.EPOCH) // model.DAY
    meter_id = start_id
    while True:
        spec = model.meter_spec(meter_id, SEED)
        quiet = all(model.outage(spec, today - k) is None for k in range(8))
        if quiet and spec.phases == 3 and spec.tou_layout == 2:
            meter = SimulatedMeter(meter_id, SEED)
            assert meter.online(NOW)
            return meter
        meter_id += 1


@dataclass
class Link:
    """A running simulator endpoint and how to open client transports to it."""

    kind: str
    meter: SimulatedMeter
    port: int = 0
    device: str = ""

    def transport(
        self, client_sap: int = PUBLIC_CLIENT, max_info: int = 128, **hdlc: Any
    ) -> Transport:
        if self.kind == "tcp":
            return TcpWrapperTransport("127.0.0.1", self.port, client_wport=client_sap)
        hdlc.setdefault("frame_timeout", 2.0)
        hdlc.setdefault("retries", 2)
        common: dict[str, Any] = {
            "client_sap": client_sap,
            "physical_address": PHYSICAL,
            "settings": HdlcSettings(max_info_tx=max_info, max_info_rx=max_info),
            **hdlc,
        }
        if self.kind == "hdlc-tcp":
            return hdlc_tcp_transport("127.0.0.1", self.port, **common)
        return serial_hdlc_transport(self.device, 115200, **common)


@pytest.fixture(params=LINKS)
async def link(request: pytest.FixtureRequest) -> AsyncIterator[Link]:
    meter = _quiet_meter(100)
    other = _quiet_meter(meter.meter_id + 1)
    kind: str = request.param
    server: WrapperServer | HdlcTcpServer | PtyBus
    if kind == "tcp":
        server = WrapperServer(lambda ip, port: meter, "127.0.0.1", 0, clock=_clock)
        await server.start()
        running = Link(kind, meter, port=server.port)
    else:
        bus = HdlcBus({PHYSICAL: meter, OTHER_PHYSICAL: other})
        if kind == "hdlc-tcp":
            server = HdlcTcpServer(bus, "127.0.0.1", 0, clock=_clock)
            await server.start()
            running = Link(kind, meter, port=server.port)
        else:
            server = PtyBus(bus, clock=_clock)
            await server.start()
            running = Link(kind, meter, device=server.device)
    try:
        yield running
    finally:
        await server.close()


def _unix(dt: datetime) -> float:
    return dt.timestamp()


def _management(link: Link, password: bytes | None = None, **kw: Any) -> Session:
    return Session(
        link.transport(client_sap=MANAGEMENT_CLIENT, **kw),
        authentication="lls",
        password=link.meter.spec.password if password is None else password,
        request_timeout=5.0,
    )


# ---------------------------------------------------------------------------------- reads


async def test_public_association_clock_and_registers(link: Link) -> None:
    meter = link.meter
    mt = meter.meter_time(NOW)
    truth = model.registers(meter.spec, mt)
    async with Session(link.transport(), request_timeout=5.0) as s:
        assert s.association is not None and s.association.accepted
        assert s.association.server_max_pdu_size == SERVER_MAX_PDU
        clock = await s.read_clock()
        assert clock.deviation == 0 and clock.clock_status == 0
        assert _unix(clock.to_datetime()) == pytest.approx(mt, abs=0.011)
        reg = await s.read_register(A_PLUS)
        assert (reg.obis, reg.raw, reg.value) == (A_PLUS, truth.active_import, truth.active_import)
        assert (reg.scaler, reg.unit, reg.unit_name) == (0, O.UNIT_WH, "Wh")
        volts = await s.read_register("1.0.32.7.0.255")
        inst = model.instantaneous(meter.spec, mt)
        assert volts.scaler == -1 and volts.unit_name == "V"
        assert volts.value == pytest.approx(inst.voltage_dv[0] / 10)
        demand = await s.read_register("1.0.1.6.0.255", class_id=O.EXTENDED_REGISTER)
        assert demand.value == truth.max_demand_w
        assert demand.capture_time is not None
        assert _unix(demand.capture_time) == truth.max_demand_time


async def test_get_with_list_returns_values_and_errors_in_place(link: Link) -> None:
    meter = link.meter
    truth = model.registers(meter.spec, meter.meter_time(NOW))
    async with Session(link.transport(), request_timeout=5.0) as s:
        values = await s.get_many(
            [
                (O.REGISTER, A_PLUS, 2),
                (O.REGISTER, UNKNOWN, 2),
                (O.DATA, "0.0.42.0.0.255", 2),
                (O.PROFILE_GENERIC, "0.0.99.98.0.255", 2),
                *[(O.REGISTER, Obis.from_bytes(t), 2) for t in O.OBIS_A_PLUS_TARIFF],
            ]
        )
        assert values[0] == truth.active_import
        assert isinstance(values[1], ObjectUndefined) and values[1].result == O.OBJECT_UNDEFINED
        assert values[2] == meter.spec.logical_device_name
        assert isinstance(values[3], AccessDenied)
        assert tuple(values[4:]) == truth.active_import_tariff
        assert sum(values[4:]) == values[0]  # type: ignore[arg-type]


async def test_profile_by_range_matches_ground_truth(link: Link) -> None:
    meter = link.meter
    mt = meter.meter_time(NOW)
    start = (int(mt) // model.DAY - 3) * model.DAY + 6 * 3600
    end = start + 12 * 3600
    truth = model.ground_truth(meter.meter_id, SEED, start, end + 1).load_profile
    assert len(truth) == 49  # both bounds inclusive, no outage on that day
    async with Session(link.transport(), request_timeout=5.0) as s:
        profile = await read_profile(
            s, LOAD_PROFILE, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
        )
    assert profile.capture_period == 900
    assert [(c.class_id, bytes(c.obis), c.attribute) for c in profile.columns] == [
        (c[0], c[1], c[2]) for c in O.LOAD_PROFILE_COLUMNS
    ]
    got = [(int(_unix(r.timestamp)), *r.values[1:]) for r in profile.rows]
    assert got == truth


async def test_block_transfer_and_hdlc_segmentation(link: Link) -> None:
    """A small max PDU forces GET blocks; a small HDLC info field forces segmented frames."""
    meter = link.meter
    mt = meter.meter_time(NOW)
    start = datetime.fromtimestamp((int(mt) // model.DAY - 2) * model.DAY, UTC)
    end = datetime.fromtimestamp(_unix(start) + model.DAY, UTC)
    big = link.transport()
    async with Session(big, request_timeout=5.0) as s:
        reference = await read_profile(s, LOAD_PROFILE, start, end)
        raw = await s.get_raw(O.CLOCK, "0.0.1.0.0.255", 2)
    assert len(reference.rows) == 97 and len(raw) == 14
    small = link.transport(max_info=32)
    async with Session(small, max_pdu_size=128, request_timeout=5.0) as s:
        profile = await read_profile(s, LOAD_PROFILE, start, end)
        # the capture objects and the buffer both exceed 128 bytes: both went in blocks
        buffer_bytes = sum(len(axdr.encode(_typed_row(r.values))) for r in profile.rows)
    assert profile.rows == reference.rows
    blocks_needed = buffer_bytes // 128
    assert blocks_needed > 30
    assert small.stats.round_trips > big.stats.round_trips + blocks_needed
    if link.kind != "tcp":
        # every full 32-byte segment the meter sends is acknowledged with an RR
        assert small.stats.round_trips > buffer_bytes // 32


def _typed_row(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Re-encode a profile row with the simulator's column types to size the buffer."""
    stamp, status, *energy = values
    return (
        axdr.octets(CosemDateTime.from_datetime(stamp).to_bytes()),
        axdr.u8(status),
        *(axdr.u64(v) for v in energy),
    )


# ---------------------------------------------------------------------------------- management


async def test_management_set_clock_and_disconnect_control(link: Link) -> None:
    target = datetime(2026, 3, 12, 14, 0, 0, tzinfo=UTC)
    async with _management(link, max_info=48) as s:
        assert s.association is not None and s.association.accepted
        await s.set(
            O.CLOCK, "0.0.1.0.0.255", 2, axdr.octets(CosemDateTime.from_datetime(target).to_bytes())
        )
        assert (await s.read_clock()).to_datetime() == target
        assert int(await s.get(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 3)) == O.CONNECTED
        await s.action(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 1, axdr.i8(0))
        assert await s.get(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 2) is False
        assert int(await s.get(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 3)) == O.DISCONNECTED
        await s.action(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 2, axdr.i8(0))
        assert await s.get(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 2) is True
        assert int(await s.get(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 3)) == O.CONNECTED
        # the event log is for the management client only
        events = await s.get(O.PROFILE_GENERIC, "0.0.99.98.0.255", 2)
        assert isinstance(events, list)
    # the meter keeps its new time for the next association
    async with Session(link.transport(), request_timeout=5.0) as s:
        assert (await s.read_clock()).to_datetime() == target
    assert link.meter.clock_offset == pytest.approx(
        _unix(target) - model.meter_clock(link.meter.spec, NOW)
    )


async def test_wrong_password_is_authentication_failed(link: Link) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        async with _management(link, password=b"wrong-pw"):
            pytest.fail("associated with a wrong password")
    assert info.value.error_class == "authentication_failed"
    assert info.value.diagnostic == 13 and not info.value.transient
    # the link was closed cleanly: the right password works straight after
    async with _management(link) as s:
        assert s.association is not None


async def test_management_without_authentication_is_refused(link: Link) -> None:
    transport = link.transport(client_sap=MANAGEMENT_CLIENT)
    with pytest.raises(AssociationRefused) as info:
        async with Session(transport, request_timeout=5.0):
            pytest.fail("management client associated without LLS")
    assert not isinstance(info.value, AuthenticationFailed)
    assert info.value.error_class == "association_refused"
    assert info.value.diagnostic == 14  # authentication required


# ---------------------------------------------------------------------------------- errors


async def test_typed_errors_keep_the_association_usable(link: Link) -> None:
    async with Session(link.transport(), request_timeout=5.0) as s:
        with pytest.raises(ObjectUndefined) as undefined:
            await s.get(O.REGISTER, UNKNOWN, 2)
        assert undefined.value.error_class == "object_undefined"
        with pytest.raises(ObjectUndefined):
            await s.read_register(UNKNOWN)
        with pytest.raises(ObjectUndefined):  # right OBIS, wrong class
            await s.get(O.PROFILE_GENERIC, A_PLUS, 2)
        with pytest.raises(AccessDenied) as denied:
            await s.get(O.PROFILE_GENERIC, "0.0.99.98.0.255", 2)
        assert denied.value.error_class == "access_denied"
        with pytest.raises(AccessDenied):
            await s.set(O.CLOCK, "0.0.1.0.0.255", 2, axdr.octets(bytes(12)))
        with pytest.raises(AccessDenied):
            await s.action(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 1, axdr.i8(0))
        # nothing changed on the meter, and the session still reads
        assert link.meter.clock_offset == 0
        assert int(await s.get(O.DISCONNECT_CONTROL, "0.0.96.3.10.255", 3)) == O.CONNECTED
        await s.read_clock()


async def test_sessions_one_after_another_on_one_link(link: Link) -> None:
    """A terminal server takes one client at a time: each close must free the line."""
    for _ in range(3):
        async with Session(link.transport(), request_timeout=5.0) as s:
            await s.read_clock()
    with pytest.raises(ObjectUndefined):
        async with Session(link.transport(), request_timeout=5.0):
            raise ObjectUndefined("raised inside the block", 4)
    async with Session(link.transport(), request_timeout=5.0) as s:
        await s.read_clock()


async def test_profile_read_asks_for_its_metadata_in_one_round_trip(
    link: Link, monkeypatch: pytest.MonkeyPatch
) -> None:
    """capture_objects and capture_period travel in one GET-WITH-LIST when the meter grants
    multiple-references; without it, two GETs and the same result."""
    mt = link.meter.meter_time(NOW)
    start = datetime.fromtimestamp((int(mt) // model.DAY - 2) * model.DAY, UTC)
    end = start + timedelta(hours=1)
    trips: list[int] = []
    profiles = []
    for with_list in (True, False):
        transport = link.transport()
        async with Session(transport, request_timeout=5.0) as s:
            assert s.with_list()
            if not with_list:
                monkeypatch.setattr(s, "with_list", lambda: False)
            before = transport.stats.round_trips
            profiles.append(await read_profile(s, LOAD_PROFILE, start, end))
            trips.append(transport.stats.round_trips - before)
    assert profiles[0] == profiles[1]
    assert profiles[0].capture_period == 900 and len(profiles[0].rows) == 5
    assert trips[0] < trips[1]
    if link.kind == "tcp":  # the wrapper: one exchange per APDU
        assert trips == [2, 3]
