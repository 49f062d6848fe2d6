"""Property tests of the HDLC layer: round trips, stream splitting, hostile input."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.crc import CRC16_X25_INIT, CRC16_X25_XOROUT, crc16_x25, crc16_x25_update
from protocols.errors import DecodeError
from protocols.hdlc import FrameDecoder, FrameKind, HdlcAddress, HdlcFrame
from protocols.hdlc_link import (
    HdlcConnection,
    HdlcSettings,
    Role,
    decode_parameters,
    encode_parameters,
)

CHEAP = settings(max_examples=200, deadline=None)

client_addresses = st.builds(HdlcAddress, st.integers(0, 0x7F))
server_addresses = st.one_of(
    st.builds(HdlcAddress, st.integers(0, 0x7F)),
    st.builds(HdlcAddress, st.integers(0, 0x7F), st.integers(0, 0x7F), st.just(2)),
    st.builds(HdlcAddress, st.integers(0, 0x3FFF), st.integers(0, 0x3FFF), st.just(4)),
)
addresses = st.one_of(client_addresses, server_addresses)


@st.composite
def frames(draw: st.DrawFn, max_info: int = 300) -> HdlcFrame:
    kind = draw(st.sampled_from(list(FrameKind)))
    numbered = kind in (FrameKind.I, FrameKind.RR, FrameKind.RNR)
    return HdlcFrame(
        kind,
        draw(addresses),
        draw(addresses),
        draw(st.booleans()),
        draw(st.integers(0, 7)) if kind is FrameKind.I else 0,
        draw(st.integers(0, 7)) if numbered else 0,
        draw(st.booleans()),
        draw(st.binary(max_size=max_info)),
    )


@CHEAP
@given(st.binary(max_size=600))
def test_fast_crc_equals_table_driven(data: bytes) -> None:
    assert crc16_x25(data) == crc16_x25_update(CRC16_X25_INIT, data) ^ CRC16_X25_XOROUT


@CHEAP
@given(frames())
def test_frame_round_trip(frame: HdlcFrame) -> None:
    data = frame.encode()
    assert data[0] == data[-1] == 0x7E
    assert ((data[1] & 0x07) << 8 | data[2]) == len(data) - 2
    assert HdlcFrame.decode(data) == frame
    assert HdlcFrame.decode(memoryview(data)) == frame


@CHEAP
@given(addresses)
def test_address_round_trip(address: HdlcAddress) -> None:
    assert HdlcAddress.decode(address.encode()) == address


@CHEAP
@given(
    st.lists(frames(max_info=80), min_size=1, max_size=6),
    st.lists(st.binary(max_size=20), min_size=7, max_size=7),
    st.lists(st.booleans(), min_size=6, max_size=6),
    st.lists(st.integers(1, 40), min_size=1, max_size=30),
)
def test_decoder_finds_exactly_the_frames(
    sent: list[HdlcFrame], garbage: list[bytes], share: list[bool], chunks: list[int]
) -> None:
    # Garbage never contains a flag here, so it cannot complete a fake frame; a shared flag
    # (closing = next opening) is used wherever there is no garbage in between.
    garbage = [g.replace(b"\x7e", b"") for g in garbage]
    stream = bytearray(garbage[0])
    for i, frame in enumerate(sent):
        data = frame.encode()
        if i and share[i - 1] and not garbage[i] and stream.endswith(b"\x7e"):
            data = data[1:]
        stream += data + garbage[i + 1]
    decoder = FrameDecoder()
    out: list[HdlcFrame] = []
    pos = 0
    sizes = iter(chunks * (len(stream) // max(1, min(chunks)) + 1))
    while pos < len(stream):
        step = next(sizes)
        out += decoder.feed(bytes(stream[pos : pos + step]))
        pos += step
    assert out == sent
    if not any(garbage):
        # (Garbage right after a flag may imitate a header and be counted as a bad frame.)
        assert decoder.dropped_frames == 0
    # At most the last closing flag and the trailing garbage (it may look like a header).
    assert decoder.buffered <= 1 + len(garbage[len(sent)])


@CHEAP
@given(st.binary(max_size=400))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    try:
        HdlcFrame.decode(data)
    except DecodeError:
        pass
    try:
        HdlcFrame.decode(b"\x7e" + data + b"\x7e")
    except DecodeError:
        pass
    decoder = FrameDecoder()
    for frame in decoder.feed(data) + decoder.feed(b"\x7e\xa0" + data):
        assert HdlcFrame.decode(frame.encode()) == frame
    assert decoder.buffered <= 2049
    try:
        decode_parameters(data)
    except DecodeError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(frames(max_info=100)).encode())
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "set"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[pos : pos + draw(st.integers(1, 5))]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif data:
            data[pos] = draw(st.sampled_from([0x00, 0x7E, 0xA0, 0xA8, 0xFF]))
    return bytes(data)


@CHEAP
@given(mutated())
def test_decode_mutated_frames(data: bytes) -> None:
    try:
        frame = HdlcFrame.decode(data)
    except DecodeError:
        return
    assert frame.kind in FrameKind


@CHEAP
@given(st.lists(st.one_of(mutated(), st.binary(max_size=50)), max_size=6))
def test_connections_survive_hostile_input(chunks: list[bytes]) -> None:
    small = HdlcSettings(max_info_tx=40, max_info_rx=40, window_tx=2, window_rx=2)
    client = HdlcConnection(Role.CLIENT, HdlcAddress(16), HdlcAddress(1, 17), small)
    server = HdlcConnection(Role.SERVER, HdlcAddress(1, 17), HdlcAddress(16), small)
    client.connect()
    for chunk in chunks:
        for connection in (client, server):
            try:
                connection.receive_data(chunk)
            except DecodeError:
                pass
    assert client.decoder.buffered <= 2049 and server.decoder.buffered <= 2049


@CHEAP
@given(
    st.integers(1, 2030),
    st.integers(1, 2030),
    st.integers(1, 7),
    st.integers(1, 7),
    st.booleans(),
)
def test_parameters_round_trip(tx: int, rx: int, wtx: int, wrx: int, omit: bool) -> None:
    params = HdlcSettings(tx, rx, wtx, wrx)
    assert decode_parameters(encode_parameters(params, omit_defaults=omit)) == params


@settings(max_examples=40, deadline=None)
@given(
    st.integers(8, 200),
    st.integers(8, 200),
    st.integers(1, 4),
    st.integers(1, 4),
    st.lists(st.binary(max_size=700), min_size=1, max_size=3),
)
def test_any_apdu_crosses_the_link(
    client_info: int, server_info: int, cwin: int, swin: int, apdus: list[bytes]
) -> None:
    client = HdlcConnection(
        Role.CLIENT,
        HdlcAddress(16),
        HdlcAddress(5, 300),
        HdlcSettings(client_info, client_info, cwin, cwin),
    )
    server = HdlcConnection(
        Role.SERVER,
        HdlcAddress(5, 300),
        HdlcAddress(16),
        HdlcSettings(server_info, server_info, swin, swin),
    )

    def exchange(data: bytes, sender: HdlcConnection, receiver: HdlcConnection) -> list[bytes]:
        received: list[bytes] = []
        for _ in range(200):
            if not data:
                break
            events = receiver.receive_data(data)
            received += [e.apdu for e in events if hasattr(e, "apdu")]
            data = b"".join(e.data for e in events if hasattr(e, "data"))
            sender, receiver = receiver, sender
        return received

    exchange(client.connect(), client, server)
    assert client.connected and server.connected
    assert client.settings.max_info_tx == server.settings.max_info_rx
    for apdu in apdus:
        assert exchange(client.send_apdu(apdu), client, server) == [apdu]
        assert exchange(server.send_apdu(apdu[::-1]), server, client) == [apdu[::-1]]


@CHEAP
@given(
    st.lists(st.one_of(frames(max_info=40), st.binary(min_size=1, max_size=20)), max_size=6),
    st.integers(1, 50),
)
def test_feed_raw_accounts_for_every_byte(parts: list[HdlcFrame | bytes], chunk: int) -> None:
    """feed_raw finds the frames feed finds; its noise runs are the bytes it counted as noise;
    every byte is in a frame, in the noise, a flag two frames shared, or still buffered."""
    data = b"".join(p if isinstance(p, bytes) else p.encode() for p in parts)
    plain, traced = FrameDecoder(), FrameDecoder()
    found: list[HdlcFrame] = []
    items: list[tuple[HdlcFrame | None, bytes]] = []
    for i in range(0, len(data), chunk):
        found += plain.feed(data[i : i + chunk])
        items += traced.feed_raw(data[i : i + chunk])
    assert [f for f, _ in items if f is not None] == found
    noise = sum(len(raw) for f, raw in items if f is None)
    assert noise == traced.discarded_bytes == plain.discarded_bytes
    framed = sum(len(raw) for f, raw in items if f is not None)
    shared = len(data) - noise - framed - traced.buffered
    assert 0 <= -shared <= len(found)  # each frame may have given its closing flag away
