"""The sans-IO simulated meter driven with the project's own APDU builders and decoders."""

from __future__ import annotations

from typing import Any

import pytest
from dlms_cosem.protocol import acse as dc_acse
from dlms_cosem.protocol import xdlms as dc_xdlms
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import axdr, xdlms
from protocols.cosem import CosemDateTime, ScalerUnit, parse_capture_objects, profile_rows
from protocols.enums import AcseDiagnostic, ApduTag
from simulator import model
from simulator import objects as O
from simulator.meter import (
    MANAGEMENT_CLIENT,
    PUBLIC_CLIENT,
    SERVER_CONFORMANCE,
    SERVER_MAX_PDU,
    SimulatedMeter,
)

SEED = 42
# true time: 2026-03-12 13:00:17.5 UTC
NOW = 1772409600 + 10 * 86400 + 13 * 3600 + 17.5
DAY = model.DAY


class Driver:
    """A minimal client over one MeterSession: associate, GET with block transfer, SET, ACTION."""

    def __init__(
        self,
        meter: SimulatedMeter,
        *,
        management: bool = False,
        max_pdu: int = 0xFFFF,
        now: float = NOW,
        sap: int | None = None,
    ) -> None:
        self.meter = meter
        self.now = now
        self.session = meter.new_session(
            sap if sap is not None else (MANAGEMENT_CLIENT if management else PUBLIC_CLIENT)
        )
        self.max_pdu = max_pdu
        self.blocks = 0
        if management:
            aarq = xdlms.build_aarq(
                authentication="lls", password=meter.spec.password, max_pdu_size=max_pdu
            )
        else:
            aarq = xdlms.build_aarq(max_pdu_size=max_pdu)
        self.aare = xdlms.parse_aare(self.raw(aarq))
        assert self.aare.accepted

    def raw(self, request: bytes) -> bytes:
        reply = self.session.handle(request, self.now)
        assert reply is not None
        if reply[0] != ApduTag.AARE:  # the AARE is ACSE, sent before the PDU size is agreed
            assert len(reply) <= self.max_pdu
        return reply

    def req(self, request: bytes) -> xdlms.Response:
        return xdlms.decode_response(self.raw(request))

    def get_raw(
        self, class_id: int, obis: bytes, attr: int, access: xdlms.AccessSelection | None = None
    ) -> bytes | int:
        """Encoded value (block transfer followed) or the Data-Access-Result."""
        resp = self.req(xdlms.build_get(1, class_id, obis, attr, access))
        if isinstance(resp, xdlms.GetError):
            return resp.result
        if isinstance(resp, xdlms.GetResult):
            return resp.data
        assert isinstance(resp, xdlms.GetBlock)
        data = bytearray()
        expected = 1
        while True:
            assert resp.block_number == expected
            data += resp.raw
            self.blocks += 1
            if resp.last:
                return bytes(data)
            resp = self.req(xdlms.build_get_next(1, resp.block_number))
            if isinstance(resp, xdlms.GetError):
                return resp.result
            assert isinstance(resp, xdlms.GetBlock)
            expected += 1

    def get(
        self, class_id: int, obis: bytes, attr: int, access: xdlms.AccessSelection | None = None
    ) -> Any:
        value = self.get_raw(class_id, obis, attr, access)
        assert not isinstance(value, int), f"data-access-result {value}"
        return axdr.decode(value)


def _unix(raw: bytes) -> float:
    return CosemDateTime.from_bytes(raw).to_datetime().timestamp()


def _dt(t: float) -> bytes:
    return O.datetime_bytes(t)


def _find_meter(pred: Any) -> SimulatedMeter:
    mid = 0
    while not pred(model.meter_spec(mid, SEED)):
        mid += 1
    return SimulatedMeter(mid, SEED)


@pytest.fixture
def meter() -> SimulatedMeter:
    return _find_meter(lambda s: s.phases == 3 and s.tou_layout == 2)


CLOCK_COL = xdlms.ColumnRef(O.CLOCK, O.OBIS_CLOCK, 2, 0)
A_PLUS_COL = xdlms.ColumnRef(O.REGISTER, O.OBIS_A_PLUS, 2, 0)


# ---------------------------------------------------------------------------------- association


def test_public_association(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    assert d.aare.negotiated_conformance == xdlms.DEFAULT_CONFORMANCE & SERVER_CONFORMANCE
    assert d.aare.server_max_pdu_size == SERVER_MAX_PDU
    assert d.session.associated and not d.session.management


def test_management_association_and_wrong_password(meter: SimulatedMeter) -> None:
    d = Driver(meter, management=True)
    assert d.session.management
    s = meter.new_session(MANAGEMENT_CLIENT)
    aare = xdlms.parse_aare(
        s.handle(xdlms.build_aarq(authentication="lls", password=b"wrong!!!"), NOW) or b""
    )
    assert not aare.accepted
    assert aare.diagnostic == AcseDiagnostic.AUTHENTICATION_FAILURE
    assert not s.associated
    # the management client without authentication
    aare = xdlms.parse_aare(
        meter.new_session(MANAGEMENT_CLIENT).handle(xdlms.build_aarq(), NOW) or b""
    )
    assert not aare.accepted
    assert aare.diagnostic == AcseDiagnostic.AUTHENTICATION_REQUIRED
    # SAP unknown to the session: the mechanism decides
    s2 = meter.new_session()
    aare = xdlms.parse_aare(
        s2.handle(xdlms.build_aarq(authentication="lls", password=meter.spec.password), NOW) or b""
    )
    assert aare.accepted and s2.management


def test_hls_and_ciphered_and_old_version_rejected(meter: SimulatedMeter) -> None:
    s = meter.new_session(MANAGEMENT_CLIENT)
    aare = xdlms.parse_aare(
        s.handle(xdlms.build_aarq(authentication="hls-gmac", password=b"12345678"), NOW) or b""
    )
    assert not aare.accepted and aare.diagnostic == 11
    ciphered = dc_acse.ApplicationAssociationRequest(
        ciphered=True,
        user_information=dc_acse.UserInformation(
            content=dc_xdlms.InitiateRequest(
                proposed_conformance=dc_xdlms.Conformance(get=True),
                client_max_receive_pdu_size=1024,
                proposed_dlms_version_number=6,
            )
        ),
    ).to_bytes()
    aare = xdlms.parse_aare(meter.new_session(PUBLIC_CLIENT).handle(bytes(ciphered), NOW) or b"")
    assert not aare.accepted
    assert aare.diagnostic == AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED
    # build_aarq (through dlms-cosem) always writes version 6: patch the InitiateRequest byte
    old = bytearray(xdlms.build_aarq())
    old[old.index(bytes.fromhex("0e01000000")) + 5] = 5
    assert xdlms.decode_request(bytes(old)).dlms_version == 5  # type: ignore[union-attr]
    aare = xdlms.parse_aare(meter.new_session(PUBLIC_CLIENT).handle(bytes(old), NOW) or b"")
    assert not aare.accepted and aare.initiate_error == 1


def test_requests_before_association_and_after_release(meter: SimulatedMeter) -> None:
    s = meter.new_session(PUBLIC_CLIENT)
    resp = xdlms.decode_response(s.handle(xdlms.build_get(1, 8, O.OBIS_CLOCK, 2), NOW) or b"")
    assert resp == xdlms.ExceptionResult(1, 1)
    d = Driver(meter)
    assert d.req(xdlms.build_rlrq()) == xdlms.ReleaseResponse(0)
    assert d.session.released and not d.session.associated
    assert d.req(xdlms.build_get(1, 8, O.OBIS_CLOCK, 2)) == xdlms.ExceptionResult(1, 1)


def test_meter_in_outage_is_silent() -> None:
    day = (int(NOW) - model.EPOCH) // DAY
    m = _find_meter(lambda s: model.outage(s, day) is not None)
    down, up = model.outage(m.spec, day)  # type: ignore[misc]
    t_off = model.true_time(m.spec, (down + up) / 2)
    assert not m.online(t_off)
    d = Driver(m, now=model.true_time(m.spec, down - 5))
    assert d.session.handle(xdlms.build_get(1, 8, O.OBIS_CLOCK, 2), t_off) is None
    assert not d.session.associated  # a power loss ends the association


# ---------------------------------------------------------------------------------- objects


def test_identity_and_clock(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    spec = meter.spec
    assert d.get(O.DATA, O.OBIS_LDN, 2) == spec.logical_device_name
    assert d.get(O.DATA, O.OBIS_SERIAL, 2) == spec.serial_number
    assert d.get(O.DATA, O.OBIS_LDN, 1) == O.OBIS_LDN
    clock = d.get(O.CLOCK, O.OBIS_CLOCK, 2)
    assert _unix(clock) == pytest.approx(model.meter_clock(spec, NOW), abs=0.011)
    assert d.get(O.CLOCK, O.OBIS_CLOCK, 3) == 0
    assert d.get(O.CLOCK, O.OBIS_CLOCK, 9) == 1
    assert d.get(O.DATA, O.OBIS_STATUS, 2) == 0


def test_energy_registers_match_ground_truth(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    mt = meter.meter_time(NOW)
    truth = model.registers(meter.spec, mt)
    expected = {
        O.OBIS_A_PLUS: (truth.active_import, 30),
        O.OBIS_A_MINUS: (truth.active_export, 30),
        O.OBIS_R_PLUS: (truth.reactive_import, 32),
        O.OBIS_R_MINUS: (truth.reactive_export, 32),
        **{o: (truth.active_import_tariff[k], 30) for k, o in enumerate(O.OBIS_A_PLUS_TARIFF)},
    }
    for name, (value, unit) in expected.items():
        assert d.get(O.REGISTER, name, 2) == value
        assert ScalerUnit.from_value(d.get(O.REGISTER, name, 3)) == ScalerUnit(0, unit)
    assert sum(truth.active_import_tariff) == truth.active_import
    assert d.get(O.EXTENDED_REGISTER, O.OBIS_MAX_DEMAND, 2) == truth.max_demand_w
    assert _unix(d.get(O.EXTENDED_REGISTER, O.OBIS_MAX_DEMAND, 5)) == truth.max_demand_time
    assert ScalerUnit.from_value(d.get(O.EXTENDED_REGISTER, O.OBIS_MAX_DEMAND, 3)) == ScalerUnit(
        0, 27
    )


def test_instantaneous_values_per_phase(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    inst = model.instantaneous(meter.spec, meter.meter_time(NOW))
    assert len(inst.voltage_dv) == 3
    for p, (v, i, w) in enumerate(O.OBIS_PHASE):
        assert d.get(O.REGISTER, v, 2) == inst.voltage_dv[p]
        assert d.get(O.REGISTER, i, 2) == inst.current_ca[p]
        assert d.get(O.REGISTER, w, 2) == inst.power_w[p]
        assert ScalerUnit.from_value(d.get(O.REGISTER, v, 3)) == ScalerUnit(-1, 35)
        assert ScalerUnit.from_value(d.get(O.REGISTER, i, 3)) == ScalerUnit(-2, 33)
    assert 2200 < inst.voltage_dv[0] < 2400
    single = _find_meter(lambda s: s.phases == 1)
    d1 = Driver(single)
    assert d1.get_raw(O.REGISTER, O.OBIS_PHASE[1][0], 2) == O.OBJECT_UNDEFINED
    assert isinstance(d1.get(O.REGISTER, O.OBIS_PHASE[0][0], 2), int)


def test_load_profile_full_read_with_block_transfer(meter: SimulatedMeter) -> None:
    d = Driver(meter, max_pdu=1024)
    mt = meter.meter_time(NOW)
    columns = parse_capture_objects(d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 3))
    assert [(c.class_id, bytes(c.obis), c.attribute) for c in columns] == [
        (c[0], c[1], c[2]) for c in O.LOAD_PROFILE_COLUMNS
    ]
    assert d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 4) == 900
    buffer = d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2)
    assert d.blocks > 100
    truth = model.load_profile(meter.spec, mt - O.PROFILE_DAYS * DAY + 1, mt + 1)
    assert len(truth) >= 60 * 96 - 20
    rows = profile_rows(buffer, columns, 900)
    assert [(int(r.timestamp.timestamp()), *r.values[1:]) for r in rows] == truth
    assert d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 7) == len(truth)
    assert d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 8) == O.PROFILE_DAYS * 96


def test_entries_in_use_counts_outage_gaps() -> None:
    day = (int(NOW) - model.EPOCH) // DAY - 3
    m = _find_meter(lambda s: model.outage(s, day) is not None)
    d = Driver(m)
    mt = m.meter_time(NOW)
    truth = model.load_profile(m.spec, mt - O.PROFILE_DAYS * DAY + 1, mt + 1)
    assert len(truth) < O.PROFILE_DAYS * 96
    assert d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 7) == len(truth)


def test_load_profile_by_range_small_pdu(meter: SimulatedMeter) -> None:
    d = Driver(meter, max_pdu=64)
    start = 1772409600 + 5 * DAY
    end = start + DAY
    access = xdlms.RangeAccess(CLOCK_COL, _dt(start), _dt(end))
    buffer = d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, access)
    assert d.blocks > 50
    truth = model.load_profile(meter.spec, start, end + 1)  # both bounds inclusive
    assert len(buffer) == len(truth) == 97
    assert [(int(_unix(r[0])), *r[1:]) for r in buffer] == truth
    # selected columns: clock and A+ only
    access = xdlms.RangeAccess(CLOCK_COL, _dt(start), _dt(start + 3600), [CLOCK_COL, A_PLUS_COL])
    buffer = d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, access)
    assert [(int(_unix(r[0])), r[1]) for r in buffer] == [(r[0], r[2]) for r in truth[:5]]
    # an empty range
    access = xdlms.RangeAccess(CLOCK_COL, _dt(end), _dt(start))
    assert d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, access) == []


def test_load_profile_by_entry(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    full = d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2)
    part = d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, xdlms.EntryAccess(2, 5, 1, 3))
    assert part == [row[:3] for row in full[1:5]]
    tail = d.get(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, xdlms.EntryAccess(len(full) - 1))
    assert tail == full[-2:]


def test_billing_profile_midnight_freeze(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    mt = meter.meter_time(NOW)
    buffer = d.get(O.PROFILE_GENERIC, O.OBIS_BILLING, 2)
    truth = model.billing(meter.spec, mt - O.BILLING_DAYS * DAY + 1, mt + 1)
    assert len(truth) == O.BILLING_DAYS
    assert [(int(_unix(r[0])), *r[1:]) for r in buffer] == truth
    for row in truth[-3:]:
        assert row[0] % DAY == 0
    columns = parse_capture_objects(d.get(O.PROFILE_GENERIC, O.OBIS_BILLING, 3))
    assert len(columns) == 9
    assert d.get(O.PROFILE_GENERIC, O.OBIS_BILLING, 4) == DAY


def test_event_logs_for_management_only() -> None:
    m = _find_meter(
        lambda s: (
            bool(model.events(s, NOW - 170 * DAY, NOW - DAY))
            and bool(model.power_events(s, NOW - 170 * DAY, NOW - DAY))
        )
    )
    public = Driver(m)
    assert public.get_raw(O.PROFILE_GENERIC, O.OBIS_EVENT_LOG, 2) == O.READ_WRITE_DENIED
    assert public.get_raw(O.PROFILE_GENERIC, O.OBIS_POWER_FAILURE_LOG, 2) == O.READ_WRITE_DENIED
    d = Driver(m, management=True)
    mt = m.meter_time(NOW)
    lo = mt - O.EVENT_LOG_DAYS * DAY
    for name, fn in (
        (O.OBIS_EVENT_LOG, model.events),
        (O.OBIS_POWER_FAILURE_LOG, model.power_events),
    ):
        buffer = d.get(O.PROFILE_GENERIC, name, 2)
        truth = fn(m.spec, lo, mt + 1)[-O.EVENT_LOG_CAPACITY :]
        assert truth
        assert [(int(_unix(r[0])), r[1]) for r in buffer] == truth
        assert d.get(O.PROFILE_GENERIC, name, 7) == len(truth)
    last_code = model.events(m.spec, lo, mt + 1)[-1][1]
    assert d.get(O.DATA, O.OBIS_EVENT_CODE, 2) == last_code


def test_association_object_list(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    listing = d.get(O.ASSOCIATION_LN, O.OBIS_ASSOCIATION, 2)
    table = O.object_table(3)
    assert {(e[0], e[2]) for e in listing} == {(o.class_id, o.obis) for o in table.values()}
    by_name = {e[2]: e for e in listing}
    attr_modes = {a[0]: a[1] for a in by_name[O.OBIS_EVENT_LOG][3][0]}
    assert attr_modes[2] == 0  # public: no access to the event log buffer
    clock_modes = {a[0]: a[1] for a in by_name[O.OBIS_CLOCK][3][0]}
    assert clock_modes[2] == 1  # public: read only
    lp_attrs = {a[0]: a[2] for a in by_name[O.OBIS_LOAD_PROFILE][3][0]}
    assert lp_attrs[2] == [1, 2]  # selective access by range and by entry
    mgmt = Driver(meter, management=True)
    listing = mgmt.get(O.ASSOCIATION_LN, O.OBIS_ASSOCIATION, 2)
    by_name = {e[2]: e for e in listing}
    assert {a[0]: a[1] for a in by_name[O.OBIS_CLOCK][3][0]}[2] == 3
    assert {m[0]: m[1] for m in by_name[O.OBIS_DISCONNECT][3][1]} == {1: 1, 2: 1}
    assert mgmt.get(O.ASSOCIATION_LN, O.OBIS_ASSOCIATION, 3) == (MANAGEMENT_CLIENT, 1)
    assert mgmt.get(O.ASSOCIATION_LN, O.OBIS_ASSOCIATION, 8) == 2
    assert mgmt.get_raw(O.ASSOCIATION_LN, O.OBIS_ASSOCIATION, 7) == O.READ_WRITE_DENIED


def test_get_with_list_and_list_block_transfer(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    mt = meter.meter_time(NOW)
    truth = model.registers(meter.spec, mt)
    items: list[tuple[int, bytes, int, xdlms.AccessSelection | None]] = [
        (O.REGISTER, O.OBIS_A_PLUS, 2, None),
        (O.REGISTER, b"\x01\x00\x63\x63\x63\xff", 2, None),
        (O.PROFILE_GENERIC, O.OBIS_EVENT_LOG, 2, None),
        (O.DATA, O.OBIS_LDN, 2, None),
    ]
    resp = d.req(xdlms.build_get_with_list(2, items))
    assert isinstance(resp, xdlms.GetListResult)
    assert isinstance(resp.items[0], bytes) and isinstance(resp.items[3], bytes)
    assert axdr.decode(resp.items[0]) == truth.active_import
    assert resp.items[1] == O.OBJECT_UNDEFINED
    assert resp.items[2] == O.READ_WRITE_DENIED
    assert axdr.decode(resp.items[3]) == meter.spec.logical_device_name
    small = Driver(meter, max_pdu=20)
    first = small.req(xdlms.build_get_with_list(3, items))
    assert isinstance(first, xdlms.GetBlock)
    raw = bytearray(first.raw)
    block: xdlms.Response = first
    while isinstance(block, xdlms.GetBlock) and not block.last:
        block = small.req(xdlms.build_get_next(3, block.block_number))
        assert isinstance(block, xdlms.GetBlock)
        raw += block.raw
    rebuilt = xdlms.decode_response(bytes((0xC4, 0x03, 0xC3)) + bytes(raw))
    assert isinstance(rebuilt, xdlms.GetListResult)
    assert rebuilt.items == resp.items


def test_disconnect_control(meter: SimulatedMeter) -> None:
    public = Driver(meter)
    assert public.get(O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 2) is True
    assert public.get(O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 3) == O.CONNECTED
    assert public.get(O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 4) == O.CONTROL_MODE
    param = axdr.encode(axdr.i8(0))
    denied = public.req(xdlms.build_action(1, O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 1, param))
    assert denied == xdlms.ActionResult(1, O.READ_WRITE_DENIED)
    d = Driver(meter, management=True)
    ok = d.req(xdlms.build_action(1, O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 1, param))
    assert ok == xdlms.ActionResult(1, 0)
    assert public.get(O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 2) is False
    assert public.get(O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 3) == O.DISCONNECTED
    ok = d.req(xdlms.build_action(1, O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 2, param))
    assert ok == xdlms.ActionResult(1, 0)
    assert public.get(O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 2) is True
    bad = d.req(xdlms.build_action(1, O.DISCONNECT_CONTROL, O.OBIS_DISCONNECT, 3, param))
    assert bad == xdlms.ActionResult(1, O.OBJECT_UNDEFINED)


def test_set_clock_and_clock_actions(meter: SimulatedMeter) -> None:
    public = Driver(meter)
    target = 1772409600 + 20 * DAY + 3600.0
    value = axdr.encode(axdr.octets(_dt(target)))
    assert public.req(xdlms.build_set(1, O.CLOCK, O.OBIS_CLOCK, 2, value)) == xdlms.SetResult(
        1, O.READ_WRITE_DENIED
    )
    d = Driver(meter, management=True)
    assert d.req(xdlms.build_set(1, O.CLOCK, O.OBIS_CLOCK, 2, value)) == xdlms.SetResult(1, 0)
    assert _unix(public.get(O.CLOCK, O.OBIS_CLOCK, 2)) == pytest.approx(target, abs=0.011)
    assert meter.meter_time(NOW) == pytest.approx(target)
    # registers follow the meter's (corrected) clock
    assert (
        public.get(O.REGISTER, O.OBIS_A_PLUS, 2)
        == model.registers(meter.spec, meter.meter_time(NOW)).active_import
    )
    wrong = axdr.encode(axdr.u32(5))
    assert d.req(xdlms.build_set(1, O.CLOCK, O.OBIS_CLOCK, 2, wrong)) == xdlms.SetResult(
        1, O.TYPE_UNMATCHED
    )
    assert d.req(xdlms.build_set(1, O.CLOCK, O.OBIS_CLOCK, 3, axdr.encode(axdr.i16(60)))) == (
        xdlms.SetResult(1, O.READ_WRITE_DENIED)
    )
    shift = d.req(xdlms.build_action(1, O.CLOCK, O.OBIS_CLOCK, 6, axdr.encode(axdr.i16(-30))))
    assert shift == xdlms.ActionResult(1, 0)
    assert meter.meter_time(NOW) == pytest.approx(target - 30)
    too_far = d.req(xdlms.build_action(1, O.CLOCK, O.OBIS_CLOCK, 6, axdr.encode(axdr.i16(5000))))
    assert too_far == xdlms.ActionResult(1, O.TYPE_UNMATCHED)
    quarter = d.req(xdlms.build_action(1, O.CLOCK, O.OBIS_CLOCK, 1, axdr.encode(axdr.i8(0))))
    assert quarter == xdlms.ActionResult(1, 0)
    assert meter.meter_time(NOW) % 900 == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------------------------- errors


def test_data_access_errors(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    unknown = b"\x00\x00\x60\x63\x63\xff"
    assert d.get_raw(O.DATA, unknown, 2) == O.OBJECT_UNDEFINED
    assert d.get_raw(O.REGISTER, O.OBIS_CLOCK, 2) == O.OBJECT_UNDEFINED  # wrong class
    assert d.get_raw(O.CLOCK, O.OBIS_CLOCK, 42) == O.OBJECT_UNDEFINED
    entry = xdlms.EntryAccess(1, 2)
    assert d.get_raw(O.REGISTER, O.OBIS_A_PLUS, 2, entry) == O.SCOPE_OF_ACCESS_VIOLATED
    assert (
        d.get_raw(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, xdlms.EntryAccess(0))
        == O.SCOPE_OF_ACCESS_VIOLATED
    )
    assert (
        d.get_raw(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, xdlms.EntryAccess(1, 2, 2, 9))
        == O.SCOPE_OF_ACCESS_VIOLATED
    )
    by_a_plus = xdlms.RangeAccess(A_PLUS_COL, _dt(NOW - DAY), _dt(NOW))
    assert (
        d.get_raw(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, by_a_plus)
        == O.SCOPE_OF_ACCESS_VIOLATED
    )
    bad_column = xdlms.RangeAccess(
        CLOCK_COL, _dt(NOW - DAY), _dt(NOW), [xdlms.ColumnRef(3, O.OBIS_A_PLUS_TARIFF[0], 2, 0)]
    )
    assert (
        d.get_raw(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, bad_column)
        == O.SCOPE_OF_ACCESS_VIOLATED
    )
    wildcard = xdlms.RangeAccess(CLOCK_COL, b"\xff" * 12, _dt(NOW))
    assert (
        d.get_raw(O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, wildcard) == O.SCOPE_OF_ACCESS_VIOLATED
    )
    assert d.req(xdlms.build_set(1, O.DATA, unknown, 2, b"\x11\x00")) == xdlms.SetResult(
        1, O.OBJECT_UNDEFINED
    )
    assert d.req(xdlms.build_action(1, O.DATA, unknown, 1)) == xdlms.ActionResult(
        1, O.OBJECT_UNDEFINED
    )


def test_block_transfer_errors(meter: SimulatedMeter) -> None:
    d = Driver(meter, max_pdu=128)
    assert d.req(xdlms.build_get_next(1, 1)) == xdlms.GetError(1, 16)  # no long get in progress
    first = d.req(xdlms.build_get(1, O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2))
    assert isinstance(first, xdlms.GetBlock) and first.block_number == 1 and not first.last
    assert d.req(xdlms.build_get_next(1, 7)) == xdlms.GetError(1, 19)  # wrong block number
    assert d.req(xdlms.build_get_next(1, 1)) == xdlms.GetError(1, 16)  # transfer was aborted
    # a new GET in the middle of a transfer abandons it
    d.req(xdlms.build_get(1, O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2))
    assert d.get(O.DATA, O.OBIS_LDN, 2) == meter.spec.logical_device_name
    assert d.req(xdlms.build_get_next(1, 1)) == xdlms.GetError(1, 16)


def test_block_transfer_needs_negotiation(meter: SimulatedMeter) -> None:
    no_block = xdlms.DEFAULT_CONFORMANCE & ~(1 << 12)
    s = meter.new_session(PUBLIC_CLIENT)
    aare = xdlms.parse_aare(
        s.handle(xdlms.build_aarq(max_pdu_size=256, conformance=no_block), NOW) or b""
    )
    assert aare.accepted and not aare.negotiated_conformance & (1 << 12)
    reply = s.handle(xdlms.build_get(1, O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2), NOW) or b""
    assert xdlms.decode_response(reply) == xdlms.GetError(1, O.OTHER_REASON)


def test_unsupported_and_malformed_services(meter: SimulatedMeter) -> None:
    d = Driver(meter)
    set_with_list = bytes((0xC1, 0x04, 0xC1, 0x01)) + bytes(12)
    assert d.req(set_with_list) == xdlms.ExceptionResult(2, 2)
    action_with_list = bytes((0xC3, 0x03, 0xC1, 0x01)) + bytes(12)
    assert d.req(action_with_list) == xdlms.ExceptionResult(2, 2)
    sn_read = bytes((0x05, 0x01, 0x02, 0x00, 0x08))
    assert d.req(sn_read) == xdlms.ExceptionResult(2, 2)
    truncated = xdlms.build_get(1, O.CLOCK, O.OBIS_CLOCK, 2)[:-3]
    assert d.req(truncated) == xdlms.ExceptionResult(2, 3)
    too_long = xdlms.build_set(1, O.CLOCK, O.OBIS_CLOCK, 2, axdr.encode(bytes(SERVER_MAX_PDU)))
    assert d.req(too_long) == xdlms.ExceptionResult(1, 4)
    no_selective = xdlms.DEFAULT_CONFORMANCE & ~(1 << 2)
    s = meter.new_session(PUBLIC_CLIENT)
    s.handle(xdlms.build_aarq(conformance=no_selective), NOW)
    reply = s.handle(
        xdlms.build_get(1, O.PROFILE_GENERIC, O.OBIS_LOAD_PROFILE, 2, xdlms.EntryAccess(1, 1)), NOW
    )
    assert xdlms.decode_response(reply or b"") == xdlms.ExceptionResult(1, 2)
    # the association survives all of it
    assert d.get(O.DATA, O.OBIS_SERIAL, 2) == meter.spec.serial_number


def test_state_is_shared_across_sessions_but_not_meters(meter: SimulatedMeter) -> None:
    other = SimulatedMeter(meter.meter_id, SEED)
    d = Driver(meter, management=True)
    d.req(xdlms.build_action(1, O.CLOCK, O.OBIS_CLOCK, 6, axdr.encode(axdr.i16(120))))
    assert Driver(meter).session.meter.clock_offset == 120
    assert other.clock_offset == 0
    assert other.meter_time(NOW) == pytest.approx(model.meter_clock(meter.spec, NOW))


# ---------------------------------------------------------------------------------- interop


def test_readable_by_gurux_client(meter: SimulatedMeter) -> None:
    """An independent client (Gurux, over IEC 62056-47 wrapper framing) reads the meter."""
    gurux = pytest.importorskip("gurux_dlms")
    from datetime import UTC, datetime, timedelta

    from gurux_dlms.enums import Authentication, InterfaceType
    from gurux_dlms.objects import GXDLMSClock, GXDLMSData, GXDLMSProfileGeneric, GXDLMSRegister

    from protocols.wrapper import encode_wrapper

    session = meter.new_session(PUBLIC_CLIENT)
    client = gurux.GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.maxReceivePDUSize = 256
    requests = 0

    def exchange(frames: Any) -> Any:
        nonlocal requests
        reply = gurux.GXReplyData()
        for frame in [frames] if isinstance(frames, (bytes, bytearray)) else frames:
            pending = bytes(frame)
            while True:
                requests += 1
                answer = session.handle(pending[8:], NOW)
                assert answer is not None
                client.getData(gurux.GXByteBuffer(encode_wrapper(1, 16, answer)), reply, None)
                if not reply.isMoreData():
                    break
                pending = bytes(client.receiverReady(reply))
        return reply

    client.parseAareResponse(exchange(client.aarqRequest()).data)
    listing = client.parseObjects(exchange(client.getObjectsRequest()).data, True)
    assert {str(o.logicalName) for o in listing} == {
        ".".join(map(str, name)) for name in O.object_table(3)
    }
    mt = meter.meter_time(NOW)
    truth = model.registers(meter.spec, mt)
    clock = GXDLMSClock("0.0.1.0.0.255")
    client.updateValue(clock, 2, exchange(client.read(clock, 2)).value)
    assert clock.time.value.timestamp() == pytest.approx(mt, abs=1)
    register = GXDLMSRegister("1.0.1.8.0.255")
    for attribute in (3, 2):
        client.updateValue(register, attribute, exchange(client.read(register, attribute)).value)
    assert register.value == truth.active_import
    assert int(register.unit) == 30
    ldn = GXDLMSData("0.0.42.0.0.255")
    client.updateValue(ldn, 2, exchange(client.read(ldn, 2)).value)
    assert bytes(ldn.value) == meter.spec.logical_device_name
    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    client.updateValue(profile, 3, exchange(client.read(profile, 3)).value)
    start = datetime(2026, 3, 5, tzinfo=UTC)
    reply = exchange(client.readRowsByRange(profile, start, start + timedelta(hours=6)))
    client.updateValue(profile, 2, reply.value)
    expected = model.load_profile(meter.spec, start.timestamp(), start.timestamp() + 6 * 3600 + 1)
    got = [(int(r[0].value.timestamp()), *r[1:]) for r in profile.buffer]
    assert got == expected
    assert requests > 10  # block transfer was needed at a 256-byte PDU
    exchange(client.releaseRequest())
    assert session.released


# ---------------------------------------------------------------------------------- robustness

_VALID_REQUESTS = [
    xdlms.build_get(1, O.CLOCK, O.OBIS_CLOCK, 2),
    xdlms.build_get(
        2,
        O.PROFILE_GENERIC,
        O.OBIS_LOAD_PROFILE,
        2,
        xdlms.RangeAccess(CLOCK_COL, _dt(NOW - 3600), _dt(NOW), [CLOCK_COL, A_PLUS_COL]),
    ),
    xdlms.build_get(3, O.PROFILE_GENERIC, O.OBIS_BILLING, 2, xdlms.EntryAccess(1, 2)),
    xdlms.build_get_with_list(4, [(O.DATA, O.OBIS_LDN, 2, None), (O.CLOCK, O.OBIS_CLOCK, 2, None)]),
    xdlms.build_set(5, O.CLOCK, O.OBIS_CLOCK, 2, axdr.encode(axdr.octets(_dt(NOW)))),
    xdlms.build_action(6, O.CLOCK, O.OBIS_CLOCK, 6, axdr.encode(axdr.i16(5))),
    xdlms.build_get_next(7, 1),
    xdlms.build_rlrq(),
    xdlms.build_aarq(),
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_VALID_REQUESTS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(request=st.one_of(st.binary(max_size=64), _mutated()))
def test_any_request_gets_an_answer_never_an_exception(request: bytes) -> None:
    meter = SimulatedMeter(8, SEED)
    session = meter.new_session()
    for management in (False, True):
        aarq = (
            xdlms.build_aarq(authentication="lls", password=meter.spec.password)
            if management
            else xdlms.build_aarq(max_pdu_size=128)
        )
        session.handle(aarq, NOW)
        reply = session.handle(request, NOW)
        if reply is None:  # only an unconfirmed SET/ACTION goes unanswered
            assert request[0] in (0xC1, 0xC3) and not request[2] & 0x40
            continue
        xdlms.decode_response(reply)  # a well-formed response APDU


def test_unconfirmed_action_is_applied_silently(meter: SimulatedMeter) -> None:
    d = Driver(meter, management=True)
    request = bytearray(xdlms.build_action(1, O.CLOCK, O.OBIS_CLOCK, 6, axdr.encode(axdr.i16(7))))
    request[2] &= ~0x40  # Invoke-Id-And-Priority: service class unconfirmed
    assert d.session.handle(bytes(request), NOW) is None
    assert meter.clock_offset == 7


_STAMP = st.integers(model.EPOCH, model.LAST_TIME - 1)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(_STAMP, st.integers(0, 255), *[st.integers(0, 2**64 - 1)] * 4), max_size=40
    ),
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True).map(sorted),
)
def test_profile_entries_encode_as_the_general_encoder_would(
    rows: list[tuple[int, ...]], picks: list[int]
) -> None:
    """The record-array fast path of the buffer gives the bytes of A-XDR's own encoder."""
    kinds = O._LP_CELLS
    typed = {
        "dt": lambda v: axdr.octets(O.datetime_bytes(v)),
        "u8": axdr.u8,
        "u64": axdr.u64,
    }
    general = axdr.encode(
        [axdr.structure(*(typed[kinds[p]](row[p]) for p in picks)) for row in rows]
    )
    assert O._encode_rows(rows, kinds, picks) == general
