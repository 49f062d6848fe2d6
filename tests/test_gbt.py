"""General block transfer: the APDU byte for byte, the exchange's windows and lost blocks, and
the client and the simulated meter talking GBT both ways (sans-IO, no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import axdr
from protocols.cosem import Obis
from protocols.enums import Conformance, DataAccessResult
from protocols.errors import DataAccessError, DecodeError, ObjectUndefined, ProtocolError
from protocols.security import MemoryCounterStore, SecurityContext
from protocols.xdlms.client import ClientAssociation, ClientEvent, Done, Send, Value, Values, Wait
from protocols.xdlms.gbt import (
    Complete,
    GbtBlock,
    GbtExchange,
    Out,
    block_room,
    decode_gbt,
)
from protocols.xdlms.gbt import Wait as GbtWait
from simulator.meter import SERVER_MAX_PDU, SimulatedMeter
from simulator.quirks import Quirks

# true time: 2026-03-12 13:00:17.5 UTC, as in test_sim_meter
NOW = 1772409600 + 10 * 86400 + 13 * 3600 + 17.5
LOAD_PROFILE = bytes(Obis.parse("1.0.99.1.0.255"))
CLOCK = bytes(Obis.parse("0.0.1.0.0.255"))

# ------------------------------------------------------------------------ the APDU itself
#
# Layout as both public implementations used here as oracles read and write it: tag 0xE0
# (224), block-control = last-block 0x80 | streaming 0x40 | window (6 bits), block-number
# and block-number-ack as unsigned16 big-endian, block-data as an A-XDR octet string
# (length, then the bytes). Gurux gurux-dlms 1.0.203 GXDLMS.getLnMessages (writer) and
# GXDLMS.handleGbt (reader); dlms-cosem GeneralBlockTransfer.from_bytes (TAG 224, the same
# masks 0b10000000 / 0b01000000 / 0b00111111).

VECTORS = [
    # block 1 of 3, streaming, window 3, nothing received from the peer yet, 4 data bytes
    (GbtBlock(False, True, 3, 1, 0, bytes.fromhex("C4010100")), "E0 43 0001 0000 04 C4010100"),
    # last block 3, window 1, acknowledging the peer's block 1
    (GbtBlock(True, False, 1, 3, 1, b"\x09"), "E0 81 0003 0001 01 09"),
    # an acknowledgement: no data, window 63, block 2, acknowledging block 0x0102
    (GbtBlock(False, False, 63, 2, 0x0102, b""), "E0 3F 0002 0102 00"),
    # 200 bytes of data: the length takes the long form 81 C8
    (GbtBlock(False, False, 1, 0xFFFF, 0xFFFE, bytes(200)), "E0 01 FFFF FFFE 81C8" + "00" * 200),
]


@pytest.mark.parametrize(("block", "wire"), VECTORS)
def test_gbt_apdu_byte_for_byte(block: GbtBlock, wire: str) -> None:
    raw = bytes.fromhex(wire)
    assert block.encode() == raw
    assert decode_gbt(raw) == block


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("E0 43 0001 0000", "at least 7"),
        ("C4 43 0001 0000 00", "tag 0xC4"),
        ("E0 43 0001 0000 05 C4010100", "block-data of 5 bytes, 4 present"),
        ("E0 43 0001 0000 03 C4010100", "block-data of 3 bytes, 4 present"),
        ("E0 43 0001 0000 85 00", "block-data"),
    ],
)
def test_malformed_gbt_apdu_is_a_decode_error_naming_it(wire: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_gbt(bytes.fromhex(wire))


blocks = st.builds(
    GbtBlock,
    st.booleans(),
    st.booleans(),
    st.integers(0, 63),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=600),
)


@given(blocks)
def test_gbt_round_trip(block: GbtBlock) -> None:
    assert decode_gbt(block.encode()) == block


@given(st.binary(max_size=80))
@settings(max_examples=400)
def test_gbt_decoder_on_garbage_raises_only_decode_error(data: bytes) -> None:
    try:
        block = decode_gbt(data)
    except DecodeError:
        return
    assert block.encode() == data


@given(st.binary(min_size=7, max_size=60), st.integers(0, 59), st.integers(0, 255))
def test_a_flipped_byte_decodes_or_raises_decode_error(data: bytes, at: int, value: int) -> None:
    raw = bytearray(GbtBlock(False, True, 2, 5, 4, data).encode())
    raw[at % len(raw)] = value
    try:
        decode_gbt(bytes(raw))
    except DecodeError:
        pass


def test_block_room_keeps_every_block_within_the_pdu() -> None:
    for pdu in (8, 9, 50, 133, 134, 135, 262, 263, 1024, 0xFFFF):
        room = block_room(pdu)
        assert len(GbtBlock(False, True, 1, 1, 0, bytes(room)).encode()) <= pdu
        assert len(GbtBlock(False, True, 1, 1, 0, bytes(room + 2)).encode()) > pdu
    with pytest.raises(ValueError, match="no room"):
        block_room(7)


# ------------------------------------------------------------------------ the exchange


def _pump(sender: GbtExchange, receiver: GbtExchange, first: list[bytes]) -> tuple[bytes, int]:
    """Deliver blocks both ways until the receiver holds the APDU; (APDU, acks sent)."""
    acks = 0
    to_receiver = list(first)
    while True:
        to_sender: list[bytes] = []
        for raw in to_receiver:
            step = receiver.receive(decode_gbt(raw))
            if isinstance(step, Complete):
                return step.apdu, acks
            if isinstance(step, Out):
                to_sender.extend(step.apdus)
                acks += len(step.apdus)
        assert to_sender, "the receiver neither finished nor acknowledged"
        to_receiver = []
        for raw in to_sender:
            step = sender.receive(decode_gbt(raw))
            assert isinstance(step, Out)
            to_receiver.extend(step.apdus)


@pytest.mark.parametrize(("window", "acks"), [(1, 9), (3, 3), (4, 3), (10, 1), (63, 1)])
def test_windows_of_blocks_and_one_ack_per_window(window: int, acks: int) -> None:
    """10 blocks: the first alone (the sender does not know the window yet), then windows."""
    apdu = bytes(range(256)) * 4
    sender, receiver = GbtExchange(2), GbtExchange(window)
    first = sender.send(apdu, 110)  # 10 blocks of 103 bytes
    assert len(first) == 1 and not decode_gbt(first[0]).streaming
    joined, sent = _pump(sender, receiver, first)
    assert joined == apdu and sent == acks
    assert sender.resent == 0


def test_streaming_bits_and_numbers_of_a_window() -> None:
    sender, receiver = GbtExchange(1), GbtExchange(3)
    (first,) = sender.send(bytes(500), 107)  # 5 blocks of 100
    step = receiver.receive(decode_gbt(first))
    assert isinstance(step, Out)
    ack = decode_gbt(step.apdus[0])
    assert (ack.block_number, ack.block_number_ack, ack.window, ack.data) == (1, 1, 3, b"")
    window = sender.receive(ack)
    assert isinstance(window, Out)
    got = [decode_gbt(raw) for raw in window.apdus]
    assert [(b.block_number, b.streaming, b.last, b.block_number_ack) for b in got] == [
        (2, True, False, 1),
        (3, True, False, 1),
        (4, False, False, 1),
    ]
    assert isinstance(receiver.receive(got[0]), GbtWait)
    assert isinstance(receiver.receive(got[1]), GbtWait)
    step = receiver.receive(got[2])
    assert isinstance(step, Out) and decode_gbt(step.apdus[0]).block_number_ack == 4
    last = sender.receive(decode_gbt(step.apdus[0]))
    assert isinstance(last, Out)
    (final,) = [decode_gbt(raw) for raw in last.apdus]
    assert final.last and final.block_number == 5
    assert receiver.receive(final) == Complete(bytes(500))


def test_a_lost_block_is_asked_for_and_sent_again() -> None:
    apdu = bytes(range(250)) * 2
    sender, receiver = GbtExchange(1), GbtExchange(4)
    (first,) = sender.send(apdu, 56)  # 50-byte blocks: 10 of them
    step = receiver.receive(decode_gbt(first))
    assert isinstance(step, Out)
    window = sender.receive(decode_gbt(step.apdus[0]))
    assert isinstance(window, Out) and len(window.apdus) == 4  # blocks 2..5
    lost = [decode_gbt(raw) for raw in window.apdus]
    del lost[1]  # block 3 never arrives
    steps = [receiver.receive(b) for b in lost]
    assert isinstance(steps[0], GbtWait) and isinstance(steps[1], GbtWait)
    ack = steps[-1]
    assert isinstance(ack, Out) and decode_gbt(ack.apdus[0]).block_number_ack == 2
    again = sender.receive(decode_gbt(ack.apdus[0]))
    assert isinstance(again, Out)
    assert [decode_gbt(raw).block_number for raw in again.apdus] == [3, 4, 5, 6]
    assert sender.resent == 3
    joined, _ = _pump(sender, receiver, list(again.apdus))
    assert joined == apdu


def test_a_window_whose_end_is_lost_is_asked_for_by_ack() -> None:
    """The block that ends a window never arrives: ``ack`` asks for the rest (after a silence)."""
    sender, receiver = GbtExchange(1), GbtExchange(3)
    (first,) = sender.send(bytes(400), 107)
    step = receiver.receive(decode_gbt(first))
    assert isinstance(step, Out)
    window = sender.receive(decode_gbt(step.apdus[0]))
    assert isinstance(window, Out)
    assert isinstance(receiver.receive(decode_gbt(window.apdus[0])), GbtWait)
    assert receiver.receiving
    again = sender.receive(decode_gbt(receiver.ack()))
    assert isinstance(again, Out)
    assert [decode_gbt(raw).block_number for raw in again.apdus] == [3, 4]
    joined, _ = _pump(sender, receiver, list(again.apdus))
    assert joined == bytes(400)


def test_acknowledging_what_was_never_sent_is_a_protocol_error() -> None:
    sender = GbtExchange(1)
    sender.send(bytes(300), 107)
    with pytest.raises(ProtocolError, match="not sent"):
        sender.receive(GbtBlock(False, False, 1, 1, 9))
    with pytest.raises(ProtocolError, match="nothing being sent"):
        GbtExchange(1).receive(GbtBlock(False, False, 1, 1, 0))


# ------------------------------------------------------------------------ client and meter


class Pair:
    """Our client and a simulated meter, APDUs handed over directly (a perfect link)."""

    def __init__(
        self, meter_window: int, client_window: int, max_pdu: int = 0xFFFF, secure: bool = False
    ) -> None:
        self.meter = SimulatedMeter(3, 42, quirks=Quirks(gbt_window=meter_window))
        self.session = self.meter.new_session(1 if secure else 16)
        security = None
        if secure:
            security = SecurityContext(
                self.meter.security_keys, counters=MemoryCounterStore(start=1)
            )
        self.client = ClientAssociation(
            authentication="hls-gmac" if secure else "none",
            max_pdu_size=max_pdu,
            gbt_window=client_window,
            security=security,
        )
        self.to_meter = self.from_meter = 0
        self.largest_from_meter = 0
        self.run(self.client.associate())

    def run(self, apdu: bytes) -> ClientEvent:
        while True:
            replies: list[bytes] = []
            for out in [apdu, *self.client.take_queued()]:
                self.to_meter += 1
                reply = self.session.handle(out, NOW)
                if reply is not None:
                    replies += [reply, *self.session.take_queued()]
            event: ClientEvent | None = None
            for reply in replies:
                self.from_meter += 1
                if reply[0] != 0x61:
                    self.largest_from_meter = max(self.largest_from_meter, len(reply))
                event = self.client.receive(reply)
                if isinstance(event, Send):
                    break
                if not isinstance(event, Wait):
                    assert reply is replies[-1], "the meter sent more than the client took"
            assert event is not None and not isinstance(event, Wait)
            if not isinstance(event, Send):
                return event
            apdu = event.apdu


def _buffer(pair: Pair) -> bytes:
    event = pair.run(pair.client.get(7, LOAD_PROFILE, 2))
    assert isinstance(event, Value)
    return event.raw


def test_gbt_is_negotiated_when_both_sides_offer_it() -> None:
    assert Pair(1, 1).client.gbt
    assert not Pair(0, 1).client.gbt  # the meter does not grant it
    assert not Pair(1, 0).client.gbt  # the client does not propose it
    assert Pair(1, 1).session.association.conformance & Conformance.GENERAL_BLOCK_TRANSFER


@pytest.mark.parametrize(("meter_window", "client_window"), [(1, 1), (4, 3), (2, 10)])
def test_long_get_response_comes_in_gbt_blocks_within_the_client_pdu(
    meter_window: int, client_window: int
) -> None:
    plain = Pair(0, 0)
    pair = Pair(meter_window, client_window, max_pdu=256)
    value = _buffer(pair)
    assert value == _buffer(plain)
    assert axdr.decode(value)  # the whole buffer, an array of rows
    assert pair.largest_from_meter <= 256
    blocks = -(-(len(value) + 4) // block_room(256))
    assert pair.from_meter - 1 == blocks  # the AARE, then every block once
    # The AARQ and the GET, then one acknowledgement per window: after the first block
    # (sent alone: the meter does not know the client's window yet), after each window of
    # the client's size but the one that holds the last block.
    assert pair.to_meter - 2 == -(-(blocks - 1) // client_window)


def test_gbt_window_cuts_the_round_trips() -> None:
    one, five = Pair(1, 1, max_pdu=256), Pair(1, 5, max_pdu=256)
    assert _buffer(one) == _buffer(five)
    assert five.to_meter * 3 < one.to_meter


def test_gbt_carries_ciphered_apdus_both_ways() -> None:
    """HLS-GMAC with suite-0 ciphering: each APDU is ciphered whole, then split in blocks."""
    plain = Pair(0, 0)
    pair = Pair(3, 4, max_pdu=200, secure=True)
    assert pair.client.ciphered and pair.client.gbt
    assert _buffer(pair) == _buffer(plain)
    assert pair.largest_from_meter <= 200
    image = bytes(range(256)) * 6
    transfer = bytes(Obis.parse("0.0.44.0.0.255"))
    initiate = axdr.encode(axdr.structure(axdr.octets(b"V2"), axdr.u32(len(image))))
    assert isinstance(pair.run(pair.client.action(18, transfer, 1, initiate)), Done)
    before = pair.to_meter
    block = axdr.encode(axdr.structure(axdr.u32(0), axdr.octets(image)))
    assert isinstance(pair.run(pair.client.action(18, transfer, 2, block)), Done)
    assert pair.to_meter - before == 2  # 1.5 KiB ciphered: two blocks of the meter's 1024
    assert pair.meter.current_state().firmware.transfer is not None
    assert pair.meter.current_state().firmware.transfer.image() == image


def test_short_answers_stay_plain_when_the_request_was() -> None:
    pair = Pair(1, 1)
    event = pair.run(pair.client.get(8, CLOCK, 2))
    assert isinstance(event, Value) and len(event.raw) == 14
    assert pair.from_meter == 2  # the AARE and one plain GET response


def _long_set(pair: Pair, size: int) -> Done:
    """A SET of the clock with ``size`` bytes of octet string: refused by the object model
    (wrong type), but only once the whole request arrived."""
    data = axdr.encode(axdr.octets(bytes(size)))
    event = pair.run(pair.client.set(8, CLOCK, 2, data))
    assert isinstance(event, Done)
    return event


@pytest.mark.parametrize(("meter_window", "client_window"), [(1, 1), (3, 1), (8, 4)])
def test_long_request_goes_in_gbt_blocks_and_the_answer_follows_in_gbt(
    meter_window: int, client_window: int
) -> None:
    """An ACTION bigger than the meter's max PDU: blocks of the meter's size, its windows."""
    pair = Pair(meter_window, client_window)
    data = axdr.encode(axdr.structure(axdr.u32(1), axdr.octets(bytes(range(256)) * 12)))
    assert len(data) > SERVER_MAX_PDU
    request = pair.client.action(18, bytes(Obis.parse("0.0.44.0.0.255")), 2, data)
    first = decode_gbt(request)
    assert not first.last and len(request) <= SERVER_MAX_PDU
    queued = pair.client.take_queued()
    assert queued == []  # the meter's window is not known before its first acknowledgement
    before = pair.to_meter
    with pytest.raises(DataAccessError) as caught:
        pair.run(request)
    # The public client may not run image transfer methods: refused, after the whole request.
    assert caught.value.result == DataAccessResult.READ_WRITE_DENIED
    blocks = -(-len(data) // block_room(SERVER_MAX_PDU))
    assert pair.to_meter - before == blocks
    assert pair.from_meter - 1 == 1 + -(-(blocks - 1) // meter_window)


def test_request_over_the_meter_pdu_without_gbt_is_a_clear_error() -> None:
    pair = Pair(0, 1)
    data = axdr.encode(axdr.octets(bytes(2000)))
    with pytest.raises(
        ProtocolError, match=r"2\d\d\d bytes, more than the meter's max PDU size 1024"
    ):
        pair.client.set(8, CLOCK, 2, data)
    assert pair.client._pending is None
    event = pair.run(pair.client.get(8, CLOCK, 2))  # the association goes on
    assert isinstance(event, Value)


def test_gbt_block_without_gbt_negotiated_is_refused_by_the_meter() -> None:
    pair = Pair(0, 0)
    reply = pair.session.handle(GbtBlock(True, False, 1, 1, 0, b"\xc0").encode(), NOW)
    assert reply is not None and reply[0] == 0xD8  # ExceptionResponse


def test_meter_answers_a_garbled_gbt_block_with_an_exception() -> None:
    pair = Pair(1, 1)
    reply = pair.session.handle(bytes.fromhex("E0 80 0001 0000 09 00"), NOW)
    assert reply is not None and reply[0] == 0xD8
    event = pair.run(pair.client.get(8, CLOCK, 2))
    assert isinstance(event, Value)


def test_data_access_results_travel_in_gbt_too() -> None:
    pair = Pair(2, 2, max_pdu=64)
    with pytest.raises(ObjectUndefined):
        pair.run(pair.client.get(1, bytes(Obis.parse("0.0.96.99.99.255")), 2))
    event = pair.run(pair.client.get(8, CLOCK, 2))
    assert isinstance(event, Value)


@given(st.booleans(), st.lists(blocks, max_size=8))
@settings(max_examples=200)
def test_exchange_takes_any_blocks_raising_only_protocol_errors(
    sending: bool, arrivals: list[GbtBlock]
) -> None:
    exchange = GbtExchange(3)
    if sending:
        exchange.send(bytes(700), 64)
    for block in arrivals:
        try:
            step = exchange.receive(block)
        except ProtocolError:
            continue
        assert isinstance(step, GbtWait | Out | Complete)


@given(st.binary(max_size=40))
@settings(max_examples=150, deadline=None)
def test_meter_answers_any_gbt_bytes_without_raising(tail: bytes) -> None:
    pair = Pair(2, 2, max_pdu=64)
    reply = pair.session.handle(bytes((0xE0,)) + tail, NOW)
    assert reply is None or reply[0] in (0xE0, 0xD8)
    event = pair.run(pair.client.get(8, CLOCK, 2))  # the association still serves
    assert isinstance(event, Value)


def test_get_with_list_answer_in_gbt() -> None:
    """A with-list answer longer than the client's PDU: one GBT transfer of the whole list."""
    plain, pair = Pair(0, 0), Pair(2, 2, max_pdu=48)
    items = [(3, bytes(Obis.parse(f"1.0.{n}.8.0.255")), a) for n in (1, 2, 3, 4) for a in (2, 3)]
    items.append((8, CLOCK, 2))
    want = plain.run(plain.client.get_many(items))
    got = pair.run(pair.client.get_many(items))
    assert isinstance(got, Values) and got == want and len(got.items) == 9
    assert pair.largest_from_meter <= 48 and pair.from_meter > 3
