"""Short-name referencing: the Read/Write APDUs, the SN association, the session and the SN meter.

Facts used, each checked against an independent source:

- the application context names are 2.16.756.5.8.1.x with x = 1 LN, 2 SN (no ciphering);
  an SN meter's InitiateResponse carries a VAA name other than 00 07 (dlms-cosem issue #50,
  https://github.com/u9n/dlms-cosem/issues/50: a PAFAL meter's SN answer is refused by a
  client that expects 00 07) — ours is FA 00, the Association SN base name;
- the conformance bits (Gurux ``enums/Conformance.py``, bit n counted from the first bit of
  the block): read 3, write 4, unconfirmed-write 5, multiple-references 14,
  information-report 15, parameterized-access 18;
- the APDU tags (Gurux ``enums/Command.py``): ReadRequest 5, WriteRequest 6, ReadResponse 12,
  WriteResponse 13; the variable-access-specification choices (Gurux
  ``VariableAccessSpecification``): variable-name 2, parameterized-access 4;
- a value bigger than the client's PDU comes in ReadResponse data-block-results (choice 2:
  last-block, block-number u16, raw-data) and the next is asked for by a ReadRequest of one
  block-number-access (choice 5) with the number of the block received, as Gurux's
  ``readResponseDataBlockResult`` parses and its ``receiverReady`` sends (its Python port
  cannot complete such a read, so the interop tests give it a PDU that needs no blocks);
- attribute n of the object at base name x is x + (n - 1) * 8, and 0xFA00.. is reserved for
  specific objects, 0xFA00 being the current Association SN (dlms-cosem-kit's ``cosem/sn.rs``
  documentation, https://docs.rs/crate/dlms-cosem-kit/0.4.0/source/src/cosem/sn.rs; the
  reserved range 0xFA00..0xFFF8 in the Blue Book's reserved base names);
- method m of a class's object at x is x + offset + (m - 1) * 8 with the class's own offset,
  invoked by a Write: Register 0x28 (the same dlms-cosem-kit page), Clock 0x60 (6 methods),
  Profile generic 0x58 (4), Disconnect control 0x20 (2), Association SN 0x20 (8) as Gurux's
  ``GXDLMS.getActionInfo`` lists them (the first pair of each of its branches: the Python
  port merged several classes' pairs into one branch, so its own SN methods are not used
  here).

The byte vectors come from Gurux's GXDLMSClient (gurux-dlms 1.0.203) with
UseLogicalNameReferencing=False, and :func:`test_our_apdus_equal_what_gurux_builds` builds them
with Gurux again, so a change on either side shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.profile_reader import read_profile
from collector.session import Session
from collector.transport import TcpWrapperTransport, serial_hdlc_transport
from protocols import axdr, xdlms
from protocols.cosem import Obis
from protocols.enums import AcseDiagnostic, Conformance, DataAccessResult
from protocols.errors import (
    AccessDenied,
    DataAccessError,
    DecodeError,
    ObjectUndefined,
    ProtocolError,
)
from protocols.xdlms import sn
from simulator import model
from simulator import objects as O
from simulator.bus_server import HdlcBus, PtyBus
from simulator.meter import MANAGEMENT_CLIENT, PUBLIC_CLIENT, SimulatedMeter
from simulator.quirks import NAMED, Quirks
from simulator.server import WrapperServer
from simulator.short_names import FIRST_BASE_NAME, SLOT, name_table

SEED = 11
NOW = 1772409600 + 10 * model.DAY + 13 * 3600 + 17.5
SN = Quirks(short_names=True)
BOUND_S = 30.0

#: Gurux's SN AARQ (no authentication): context ...08 01 02, conformance 1C 03 20 (read,
#: write, unconfirmed-write, multiple-references, information-report, parameterized-access).
GURUX_AARQ = bytes.fromhex("601da109060760857405080102be10040e01000000065f1f04001c0320ffff")
#: Gurux's ReadRequest of the object_list: one variable-name, 0xFA00 + 8.
GURUX_READ_OBJECT_LIST = bytes.fromhex("050102fa08")
#: Gurux's ReadRequest of attribute 2 of the object at base name 0x0300.
GURUX_READ_0308 = bytes.fromhex("0501020308")
#: A ReadResponse holding a 12-byte date-time (as our SN meter answered Gurux).
READ_RESPONSE_CLOCK = bytes.fromhex("0c0100090c07ea030c040d00300b000000")


def _clock() -> float:
    return NOW


def _meter(meter_id: int = 0, quirks: Quirks = SN) -> SimulatedMeter:
    """A meter with no outage in the last week (complete profile days)."""
    today = (int(NOW) - model.EPOCH) // model.DAY
    while any(model.outage(model.meter_spec(meter_id, SEED), today - k) for k in range(8)):
        meter_id += 1
    return SimulatedMeter(meter_id, SEED, quirks=quirks)


# ---------------------------------------------------------------------------------- vectors


def test_vectors() -> None:
    assert xdlms.build_aarq(short_names=True, conformance=0x1C0320) == GURUX_AARQ
    aarq = xdlms.decode_request(GURUX_AARQ)
    assert isinstance(aarq, xdlms.AarqInfo) and aarq.short_names and not aarq.ciphered
    assert aarq.proposed_conformance & Conformance.READ and aarq.proposed_conformance & (
        Conformance.PARAMETERIZED_ACCESS
    )
    assert sn.build_read_request([(sn.OBJECT_LIST_NAME, None)]) == GURUX_READ_OBJECT_LIST
    assert sn.build_read_request([(sn.short_name(0x0300, 2), None)]) == GURUX_READ_0308
    assert xdlms.decode_request(GURUX_READ_0308) == sn.ReadRequest([(0x0308, None)])
    response = xdlms.decode_response(READ_RESPONSE_CLOCK)
    assert response == sn.ReadResponse([READ_RESPONSE_CLOCK[3:]])
    assert sn.build_read_response([READ_RESPONSE_CLOCK[3:]]) == READ_RESPONSE_CLOCK
    assert sn.build_read_response([4]) == bytes.fromhex("0c010104")
    assert sn.build_write_request([(0x0308, b"\x12\x00\x05")]) == bytes.fromhex(
        "06 01 02 0308 01 120005"
    )
    assert sn.build_write_response([0, 3]) == bytes.fromhex("0d 02 00 0103")
    assert sn.build_read_next(1) == bytes.fromhex("05 01 05 0001")
    assert xdlms.decode_request(bytes.fromhex("05 01 05 0001")) == sn.ReadNextRequest(1)
    block = bytes.fromhex("0c 01 02 00 0001 03 010203")
    assert sn.build_read_response_block(False, 1, b"\x01\x02\x03") == block
    assert xdlms.decode_response(block) == sn.ReadBlock(False, 1, b"\x01\x02\x03")
    assert xdlms.decode_response(bytes.fromhex("0d020001 03")) == sn.WriteResponse([0, 3])
    # SN InitiateResponse: VAA name FA 00 where LN has 00 07
    aare = xdlms.build_aare(
        accepted=True, conformance=0x180220, max_pdu_size=1024, short_names=True
    )
    assert aare.endswith(bytes.fromhex("0800065f1f0400180220 0400 fa00"))
    info = xdlms.parse_aare(aare)
    assert info.short_names and info.negotiated_conformance == 0x180220


def test_short_names_of_attributes_and_methods() -> None:
    assert sn.method_short_name(0x0300, O.CLOCK, 6) == 0x0388
    assert sn.method_short_name(0x0600, O.REGISTER, 1) == 0x0628
    with pytest.raises(ValueError, match="class 8 has no method 7"):
        sn.method_short_name(0x0300, O.CLOCK, 7)
    assert sn.short_name(0x0300, 1) == 0x0300
    assert sn.short_name(0x0300, 9) == 0x0340
    assert sn.short_name(sn.ASSOCIATION_SN_BASE, 2) == 0xFA08
    with pytest.raises(ValueError, match="attribute 0"):
        sn.short_name(0x0300, 0)
    with pytest.raises(ValueError, match="outside"):
        sn.short_name(0xFFF8, 3)


def test_our_apdus_equal_what_gurux_builds() -> None:
    gurux = pytest.importorskip("gurux_dlms")
    from gurux_dlms.enums import Authentication, InterfaceType
    from gurux_dlms.objects import GXDLMSClock, GXDLMSProfileGeneric, GXDLMSRegister

    client = gurux.GXDLMSClient(False, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)

    def apdu(frames: Any) -> bytes:
        """The one APDU of a request, after its wrapper header."""
        while not isinstance(frames, bytes | bytearray):
            (frames,) = frames
        return bytes(frames)[8:]

    assert apdu(client.aarqRequest()) == GURUX_AARQ
    # Gurux takes our SN meter's AARE (it reads multiple references only when granted)
    aare = _meter().new_session(PUBLIC_CLIENT).handle(GURUX_AARQ, NOW)
    assert aare is not None
    client.parseAareResponse(gurux.GXByteBuffer(aare))
    assert apdu(client.getObjectsRequest()) == GURUX_READ_OBJECT_LIST
    clock = GXDLMSClock("0.0.1.0.0.255")
    clock.shortName = 0x0300
    assert apdu(client.read(clock, 2)) == GURUX_READ_0308
    register = GXDLMSRegister("1.0.1.8.0.255")
    register.shortName = 0x0600
    both = apdu(client.readList([(clock, 2), (register, 3)]))
    assert both == sn.build_read_request([(0x0308, None), (0x0610, None)])
    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    profile.shortName = 0x1200
    entries = xdlms.decode_request(apdu(client.readRowsByEntry(profile, 3, 5)))
    assert isinstance(entries, sn.ReadRequest)
    ((name, access),) = entries.references
    assert name == 0x1208 and isinstance(access, xdlms.EntryAccess)
    assert (access.from_entry, access.to_entry) == (3, 7)


# ---------------------------------------------------------------------------------- properties

names = st.integers(0, 0xFFFF)
stamps = st.binary(min_size=12, max_size=12)
columns = st.builds(
    xdlms.ColumnRef,
    st.integers(0, 0xFFFF),
    st.binary(min_size=6, max_size=6),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
)
accesses = st.none() | st.builds(
    xdlms.EntryAccess,
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
)
ranges = st.builds(xdlms.RangeAccess, columns, stamps, stamps, st.lists(columns, max_size=3))
values = st.sampled_from(
    [
        axdr.encode(axdr.u32(53767705)),
        axdr.encode(axdr.octets(bytes(12))),
        axdr.encode(axdr.structure(axdr.i8(-1), axdr.enum(30))),
        axdr.encode(axdr.array([axdr.u16(1), axdr.u16(2)])),
        axdr.encode(axdr.null()),
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(names, accesses | ranges), min_size=1, max_size=5))
def test_read_request_round_trip(references: list[sn.Reference]) -> None:
    decoded = sn.decode_read_request(sn.build_read_request(references))
    assert isinstance(decoded, sn.ReadRequest)
    assert [name for name, _ in decoded.references] == [name for name, _ in references]
    for (_, got), (_, sent) in zip(decoded.references, references, strict=True):
        if isinstance(sent, xdlms.RangeAccess):
            assert isinstance(got, xdlms.RangeAccess)
            assert (got.restricting, got.from_value, got.to_value) == (
                sent.restricting,
                sent.from_value,
                sent.to_value,
            )
            assert list(got.selected_columns) == list(sent.selected_columns)
        else:
            assert got == sent


@settings(max_examples=150, deadline=None)
@given(st.lists(values | st.integers(1, 255), min_size=1, max_size=6))
def test_read_response_round_trip(items: list[bytes | int]) -> None:
    assert sn.decode_read_response(sn.build_read_response(items)) == sn.ReadResponse(items)


@settings(max_examples=100, deadline=None)
@given(st.booleans(), names, st.binary(max_size=300))
def test_read_blocks_round_trip(last: bool, number: int, raw: bytes) -> None:
    block = sn.decode_read_response(sn.build_read_response_block(last, number, raw))
    assert block == sn.ReadBlock(last, number, raw)
    assert sn.decode_read_request(sn.build_read_next(number)) == sn.ReadNextRequest(number)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(names, values), min_size=1, max_size=6))
def test_write_round_trip(items: list[tuple[int, bytes]]) -> None:
    assert sn.decode_write_request(sn.build_write_request(items)) == sn.WriteRequest(items)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=6))
def test_write_response_round_trip(results: list[int]) -> None:
    assert sn.decode_write_response(sn.build_write_response(results)) == sn.WriteResponse(results)


_SAMPLES = [
    GURUX_READ_OBJECT_LIST,
    sn.build_read_request([(0x1208, xdlms.EntryAccess(1, 2)), (0x0308, None)]),
    READ_RESPONSE_CLOCK,
    sn.build_read_response([4, axdr.encode(axdr.u8(1))]),
    sn.build_write_request([(0x0308, axdr.encode(axdr.octets(bytes(12))))]),
    sn.build_write_response([0, 3]),
    sn.build_read_next(7),
    sn.build_read_response_block(True, 2, bytes(range(20))),
]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_SAMPLES),
    st.integers(0, 40),
    st.binary(max_size=4),
    st.integers(0, 40),
)
def test_decoders_raise_only_decode_error(sample: bytes, cut: int, junk: bytes, at: int) -> None:
    """Truncated, extended and damaged SN APDUs: a value or a DecodeError, nothing else."""
    mutated = sample[:at] + junk + sample[at + len(junk) :]
    for data in (sample[: len(sample) - cut], mutated, sample + junk):
        for decode in (xdlms.decode_request, xdlms.decode_response):
            try:
                decode(data)
            except DecodeError:
                pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=24))
def test_random_bytes_after_an_sn_tag(body: bytes) -> None:
    for tag in (0x05, 0x06, 0x0C, 0x0D):
        for decode in (xdlms.decode_request, xdlms.decode_response):
            try:
                decode(bytes((tag,)) + body)
            except DecodeError:
                pass


_METER_REQUESTS = [
    GURUX_READ_OBJECT_LIST,
    sn.build_read_request([(0x0308, None), (0x0610, None)]),
    sn.build_read_request([(0x1208, xdlms.EntryAccess(1, 3))]),
    sn.build_write_request([(0x0308, axdr.encode(axdr.octets(bytes(12))))]),
    sn.build_read_next(1),
    GURUX_AARQ,
    xdlms.build_rlrq(),
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_METER_REQUESTS),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 255)), max_size=4),
    st.integers(0, 40),
)
def test_sn_meter_answers_damaged_requests_without_raising(
    request: bytes, changes: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(request)
    for pos, value in changes:
        if pos < len(data):
            data[pos] = value
    session = _meter(8).new_session(PUBLIC_CLIENT)
    session.handle(xdlms.build_aarq(short_names=True, max_pdu_size=64), NOW)
    for apdu in (bytes(data), bytes(data[: len(data) - cut])):
        reply = session.handle(apdu, NOW)
        assert reply  # SN services are all confirmed: always an answer
        xdlms.decode_response(reply)  # and one that decodes


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_SAMPLES), st.binary(max_size=6), st.integers(0, 30))
def test_client_takes_damaged_answers_as_typed_errors(sample: bytes, junk: bytes, at: int) -> None:
    """A ReadRequest in flight meets any damaged answer: an event or a DlmsError."""
    from protocols.errors import DlmsError
    from protocols.xdlms.client import ClientAssociation

    client = ClientAssociation(short_names=True)
    client.associate()
    aare = _meter().new_session(PUBLIC_CLIENT).handle(xdlms.build_aarq(short_names=True), NOW)
    client.receive(aare or b"")
    client.read([(0x0308, None), (0x0310, None)])
    try:
        client.receive(sample[:at] + junk + sample[at + len(junk) :])
    except DlmsError:
        pass


def test_decoders_name_what_is_wrong() -> None:
    with pytest.raises(DecodeError, match="ReadRequest: no items"):
        xdlms.decode_request(b"\x05\x00")
    with pytest.raises(DecodeError, match="variable-access-specification choice 6"):
        xdlms.decode_request(bytes.fromhex("050106fa08"))
    with pytest.raises(DecodeError, match="read-data-result choice 2"):
        xdlms.decode_response(bytes.fromhex("0c02 0104 0200"))
    with pytest.raises(DecodeError, match="2 names but 1 values"):
        xdlms.decode_request(bytes.fromhex("0602020308020310 01 1101"))
    with pytest.raises(DecodeError, match="context 4"):
        xdlms.decode_request(GURUX_AARQ.replace(bytes.fromhex("080102"), bytes.fromhex("080104")))


def test_object_list_parse_errors_name_the_element() -> None:
    good = axdr.structure(axdr.i16(0x300), axdr.u16(8), axdr.u8(0), axdr.octets(O.OBIS_CLOCK))
    names = sn.ObjectList.from_value(axdr.decode(axdr.encode(axdr.array([good]))))
    assert names.short_name(O.CLOCK, O.OBIS_CLOCK, 2) == 0x0308
    assert names.short_name(O.REGISTER, O.OBIS_CLOCK, 2) is None
    bad = axdr.structure(axdr.i16(0x300), axdr.u16(8), axdr.u8(0), axdr.octets(b"\x00"))
    with pytest.raises(DecodeError, match="element 1: logical name not 6 octets"):
        sn.ObjectList.from_value(axdr.decode(axdr.encode(axdr.array([good, bad]))))
    with pytest.raises(DecodeError, match="expected an array"):
        sn.ObjectList.from_value(5)


# ---------------------------------------------------------------------------------- association


def test_sn_meter_accepts_only_the_sn_context() -> None:
    meter = _meter()
    session = meter.new_session(PUBLIC_CLIENT)
    refused = xdlms.parse_aare(session.handle(xdlms.build_aarq(), NOW) or b"")
    assert not refused.accepted
    assert refused.diagnostic == AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED
    accepted = xdlms.parse_aare(session.handle(GURUX_AARQ, NOW) or b"")
    assert accepted.accepted and accepted.short_names
    # granted: what both propose, so no unconfirmed-write and no information-report
    assert accepted.negotiated_conformance == (
        Conformance.READ
        | Conformance.WRITE
        | Conformance.MULTIPLE_REFERENCES
        | Conformance.PARAMETERIZED_ACCESS
    )
    # a GET on an SN association is not a service the meter knows
    get = xdlms.build_get(1, O.CLOCK, O.OBIS_CLOCK, 2)
    assert xdlms.decode_response(session.handle(get, NOW) or b"") == xdlms.ExceptionResult(2, 2)


def test_ln_meter_refuses_the_sn_context() -> None:
    session = _meter(quirks=Quirks()).new_session(PUBLIC_CLIENT)
    refused = xdlms.parse_aare(session.handle(GURUX_AARQ, NOW) or b"")
    assert not refused.accepted and not refused.short_names
    assert refused.diagnostic == AcseDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED


def test_sn_requests_need_their_conformance_bits() -> None:
    meter = _meter()
    read_only = (Conformance.READ).value
    session = meter.new_session(PUBLIC_CLIENT)
    session.handle(xdlms.build_aarq(short_names=True, conformance=read_only), NOW)
    two = sn.build_read_request([(0x0308, None), (0x0310, None)])
    ranged = sn.build_read_request([(0x1208, xdlms.EntryAccess(1, 1))])
    write = sn.build_write_request([(0x0308, axdr.encode(axdr.octets(bytes(12))))])
    for apdu in (two, ranged, write):
        answer = xdlms.decode_response(session.handle(apdu, NOW) or b"")
        assert answer == xdlms.ExceptionResult(1, 2)
    one = xdlms.decode_response(session.handle(GURUX_READ_OBJECT_LIST, NOW) or b"")
    assert isinstance(one, sn.ReadResponse) and isinstance(one.items[0], bytes)


def test_meter_resolves_short_names_and_refuses_the_rest() -> None:
    meter = _meter()
    table = name_table(meter.spec.phases)
    clock_base = next(b for b, o in table.by_base.items() if o.obis == O.OBIS_CLOCK)
    session = meter.new_session(PUBLIC_CLIENT)
    session.handle(GURUX_AARQ, NOW)
    request = sn.build_read_request(
        [
            (clock_base + 8, None),  # clock time
            (clock_base + 4, None),  # between attributes
            (clock_base + 9 * 8, None),  # past the clock's 9 attributes
            (FIRST_BASE_NAME + 200 * SLOT, None),  # no object there
            (0xFA00, None),  # Association SN logical name
        ]
    )
    answer = xdlms.decode_response(session.handle(request, NOW) or b"")
    assert isinstance(answer, sn.ReadResponse)
    time, between, past, nothing, ln = answer.items
    assert time == axdr.encode(axdr.octets(O.datetime_bytes(meter.meter_time(NOW))))
    assert between == past == nothing == O.OBJECT_UNDEFINED
    assert ln == axdr.encode(axdr.octets(O.OBIS_ASSOCIATION))


# ---------------------------------------------------------------------------------- session


@pytest.fixture
async def sn_wrapper() -> AsyncIterator[tuple[int, SimulatedMeter]]:
    meter = _meter()
    server = WrapperServer(lambda ip, port: meter, "127.0.0.1", 0, clock=_clock)
    await server.start()
    try:
        yield server.port, meter
    finally:
        await server.close()


def _window(meter: SimulatedMeter) -> tuple[datetime, datetime]:
    day = int(meter.meter_time(NOW)) // model.DAY - 1
    start = datetime.fromtimestamp(day * model.DAY + 8 * 3600, UTC)
    return start, start + timedelta(hours=6)


async def test_session_reads_an_sn_meter_over_tcp(sn_wrapper: tuple[int, SimulatedMeter]) -> None:
    port, meter = sn_wrapper
    mt = meter.meter_time(NOW)
    truth = model.registers(meter.spec, mt)
    async with asyncio.timeout(BOUND_S):
        async with Session(TcpWrapperTransport("127.0.0.1", port), referencing="sn") as s:
            assert s.association is not None and s.association.short_names
            assert s.object_list is not None
            assert len(s.object_list) == len(name_table(meter.spec.phases).by_base) + 1
            assert s.with_list()
            clock = await s.read_clock()
            assert clock.to_datetime().timestamp() == pytest.approx(mt, abs=0.011)
            register = await s.read_register("1.0.1.8.0.255")
            assert (register.value, register.unit_name) == (truth.active_import, "Wh")
            demand = await s.read_register("1.0.1.6.0.255", O.EXTENDED_REGISTER)
            assert demand.capture_time is not None
            a_minus, missing, serial = await s.get_many(
                [(3, "1.0.2.8.0.255", 2), (3, "1.0.99.99.99.255", 2), (1, "0.0.96.1.0.255", 2)]
            )
            assert a_minus == truth.active_export
            assert isinstance(missing, ObjectUndefined)
            assert "1.0.99.99.99.255 is not in the meter's SN object list" in str(missing)
            assert serial == meter.spec.serial_number
            with pytest.raises(ObjectUndefined, match=r"class 4 1\.0\.1\.8\.0\.255 is not in"):
                await s.get(4, "1.0.1.8.0.255", 2)
            start, end = _window(meter)
            profile = await read_profile(s, "1.0.99.1.0.255", start, end)
            rows = [(int(r.timestamp.timestamp()), *r.values[1:]) for r in profile.rows]
            truth_rows = model.ground_truth(
                meter.meter_id, SEED, start.timestamp(), end.timestamp() + 1
            ).load_profile
            assert rows == truth_rows and len(rows) == 25
            # the public client may neither write the clock nor invoke its methods
            with pytest.raises(AccessDenied):
                await s.set(8, "0.0.1.0.0.255", 2, axdr.octets(O.datetime_bytes(mt)))
            with pytest.raises(AccessDenied):
                await s.action(8, "0.0.1.0.0.255", 6, axdr.i16(5))
            with pytest.raises(ProtocolError, match="class 1 has no method 1 over short names"):
                await s.action(1, "0.0.96.1.0.255", 1)
        assert s.released


async def test_management_client_writes_the_clock_by_short_name(
    sn_wrapper: tuple[int, SimulatedMeter],
) -> None:
    port, meter = sn_wrapper
    target = meter.meter_time(NOW) + 120
    transport = TcpWrapperTransport("127.0.0.1", port, client_wport=MANAGEMENT_CLIENT)
    async with asyncio.timeout(BOUND_S):
        async with Session(
            transport, authentication="lls", password=meter.spec.password, referencing="sn"
        ) as s:
            await s.set(8, Obis.parse("0.0.1.0.0.255"), 2, axdr.octets(O.datetime_bytes(target)))
            clock = await s.read_clock()
            # methods by short name: shift_time (clock method 6), remote_disconnect (70/1)
            await s.action(8, "0.0.1.0.0.255", 6, axdr.i16(-30))
            await s.action(70, "0.0.96.3.10.255", 1, axdr.i8(0))
            state = await s.get(70, "0.0.96.3.10.255", 3)
            with pytest.raises(DataAccessError) as bad:  # out of range: type-unmatched
                await s.action(8, "0.0.1.0.0.255", 6, axdr.i16(5000))
    assert clock.to_datetime().timestamp() == pytest.approx(target, abs=1)
    assert meter.clock_offset == pytest.approx(90, abs=1)
    assert state == O.DISCONNECTED
    assert bad.value.result == DataAccessResult.TYPE_UNMATCHED


async def test_ln_session_against_an_sn_meter_is_refused_clearly(
    sn_wrapper: tuple[int, SimulatedMeter],
) -> None:
    port, _ = sn_wrapper
    from protocols.errors import AssociationRefused

    with pytest.raises(AssociationRefused, match="diagnostic 2"):
        async with asyncio.timeout(BOUND_S):
            async with Session(TcpWrapperTransport("127.0.0.1", port)):
                pass


async def test_session_reads_an_sn_meter_over_a_pty() -> None:
    meter = _meter()
    bus = PtyBus(HdlcBus({17: meter}), clock=_clock)
    await bus.start()
    try:
        transport = serial_hdlc_transport(bus.device, 115200, physical_address=17)
        async with asyncio.timeout(BOUND_S):
            async with Session(transport, referencing="sn") as s:
                clock = await s.read_clock()
                register = await s.read_register("1.0.1.8.0.255")
    finally:
        await bus.close()
    mt = meter.meter_time(NOW)
    assert clock.to_datetime().timestamp() == pytest.approx(mt, abs=0.011)
    assert register.value == model.registers(meter.spec, mt).active_import


async def test_small_pdu_reads_come_in_blocks(sn_wrapper: tuple[int, SimulatedMeter]) -> None:
    """A 64-byte client PDU: the object_list and a profile range come in data-block-results."""
    port, meter = sn_wrapper
    transport = TcpWrapperTransport("127.0.0.1", port)
    start, end = _window(meter)
    async with asyncio.timeout(BOUND_S):
        async with Session(transport, referencing="sn", max_pdu_size=64) as s:
            assert s.association is not None
            assert s.association.negotiated_conformance & Conformance.BLOCK_TRANSFER_WITH_GET
            profile = await read_profile(s, "1.0.99.1.0.255", start, end)
            # several values too big for one PDU together: the list of results in blocks
            both = await s.get_many([(7, "1.0.99.1.0.255", 3), (7, "1.0.98.1.0.255", 3)])
    rows = [(int(r.timestamp.timestamp()), *r.values[1:]) for r in profile.rows]
    truth = model.ground_truth(meter.meter_id, SEED, start.timestamp(), end.timestamp() + 1)
    assert rows == truth.load_profile
    assert [len(c) if isinstance(c, list) else c for c in both] == [6, 9]
    stats = transport.stats
    # ~3 kB came, no answer over 64 bytes of APDU (+ 8 of wrapper header): dozens of blocks
    assert stats.bytes_rx > 2500 and stats.bytes_rx <= (64 + 8) * stats.round_trips


def test_meter_block_transfer_rules() -> None:
    meter = _meter()
    session = meter.new_session(PUBLIC_CLIENT)
    aarq = xdlms.build_aarq(short_names=True, max_pdu_size=64)
    assert xdlms.parse_aare(session.handle(aarq, NOW) or b"").accepted
    first = xdlms.decode_response(session.handle(GURUX_READ_OBJECT_LIST, NOW) or b"")
    assert isinstance(first, sn.ReadBlock) and first.block_number == 1 and not first.last
    assert len(sn.build_read_response_block(False, 1, first.raw)) == 64
    wrong = xdlms.decode_response(session.handle(sn.build_read_next(5), NOW) or b"")
    assert wrong == sn.ReadResponse([DataAccessResult.DATA_BLOCK_NUMBER_INVALID])
    none = xdlms.decode_response(session.handle(sn.build_read_next(1), NOW) or b"")
    assert none == sn.ReadResponse([DataAccessResult.NO_LONG_GET_IN_PROGRESS])
    # without block transfer in the proposal a value too big is other-reason
    plain = meter.new_session(PUBLIC_CLIENT)
    no_blocks = xdlms.build_aarq(
        short_names=True, max_pdu_size=64, conformance=(Conformance.READ).value
    )
    plain.handle(no_blocks, NOW)
    answer = xdlms.decode_response(plain.handle(GURUX_READ_OBJECT_LIST, NOW) or b"")
    assert answer == sn.ReadResponse([O.OTHER_REASON])


def test_the_quirk_is_named_for_hes_simulate() -> None:
    assert NAMED["short-names"] == SN
    with pytest.raises(ValueError, match="referencing 'xn'"):
        Session(TcpWrapperTransport("127.0.0.1", 1), referencing="xn")  # type: ignore[arg-type]
