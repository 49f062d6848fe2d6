"""IEC 62056-47 wrapper: vectors, stream reassembly, bad headers."""

from __future__ import annotations

import pytest
from dlms_cosem.protocol.wrappers import WrapperHeader, WrapperProtocolDataUnit
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import DecodeError
from protocols.wrapper import (
    HEADER_SIZE,
    WRAPPER_VERSION,
    WrapperDecoder,
    WrapperPdu,
    encode_wrapper,
)

# dlms-cosem test-suite, tests/test_udp_message.py (u9n/dlms-cosem): a UDP
# DataNotification (general-glo-ciphering) from wPort 1 to wPort 1, 70 bytes.
UDP_HEADER = b"\x00\x01\x00\x01\x00\x01\x00F"
UDP_APDU = (
    b"\xdb\x08/\x19\"\x91\x99\x16A\x03;0\x00\x00\x01\xe5\x02\\\xe9\xd2'\x1f\xd7\x8b\xe8\xc2"
    b"\x04!\x1a\x91j\x9d\x7fX~\nz\x81L\xad\xea\x89\xe9Y?\x01\xf9.\xa8\xc0\x87\xb5\xbd\xfd"
    b"\xef\xea\xb6\xbe\xcf(-\xfeI\xc0\x8f[\xe6\xdc\x84\x00"
)


def test_published_vector_encode_and_decode() -> None:
    assert len(UDP_APDU) == 70
    assert encode_wrapper(1, 1, UDP_APDU) == UDP_HEADER + UDP_APDU
    assert WrapperDecoder().feed(UDP_HEADER + UDP_APDU) == [WrapperPdu(1, 1, UDP_APDU)]


def test_header_layout_public_client_to_management() -> None:
    # Version 0x0001, source wPort 16 (public client), destination 1, length 3.
    assert encode_wrapper(16, 1, b"\xc0\x01\xc1") == bytes.fromhex("0001 0010 0001 0003 c001c1")
    assert HEADER_SIZE == 8 and WRAPPER_VERSION == 1


@settings(max_examples=100, deadline=None)
@given(
    source=st.integers(0, 0xFFFF),
    destination=st.integers(0, 0xFFFF),
    apdu=st.binary(max_size=300),
)
def test_cross_check_with_dlms_cosem(source: int, destination: int, apdu: bytes) -> None:
    ours = encode_wrapper(source, destination, apdu)
    theirs = WrapperProtocolDataUnit(apdu, WrapperHeader(source, destination, len(apdu)))
    assert ours == theirs.to_bytes()
    parsed = WrapperProtocolDataUnit.from_bytes(ours)
    assert (parsed.wrapper_header.source_wport, parsed.data) == (source, apdu)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        encode_wrapper(0x10000, 1, b"")
    with pytest.raises(ValueError):
        encode_wrapper(1, -1, b"")
    with pytest.raises(ValueError):
        encode_wrapper(1, 1, bytes(0x10000))


pdus_strategy = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=200)),
    min_size=1,
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(pdus=pdus_strategy, data=st.data())
def test_stream_split_at_any_points(
    pdus: list[tuple[int, int, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(encode_wrapper(s, d, a) for s, d, a in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = WrapperDecoder()
    got: list[WrapperPdu] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += decoder.feed(stream[start:cut])
        start = cut
    assert got == [WrapperPdu(s, d, a) for s, d, a in pdus]
    assert decoder.pending == 0


def test_every_single_split_point_and_byte_by_byte() -> None:
    stream = encode_wrapper(16, 1, b"\x01\x02\x03") + encode_wrapper(1, 16, b"")
    stream += UDP_HEADER + UDP_APDU
    expected = [
        WrapperPdu(16, 1, b"\x01\x02\x03"),
        WrapperPdu(1, 16, b""),
        WrapperPdu(1, 1, UDP_APDU),
    ]
    for cut in range(len(stream) + 1):
        decoder = WrapperDecoder()
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == expected
    decoder = WrapperDecoder()
    got: list[WrapperPdu] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert got == expected


def test_bad_version_fails_stream_for_good() -> None:
    decoder = WrapperDecoder()
    with pytest.raises(DecodeError, match="version"):
        decoder.feed(bytes.fromhex("0002 0010 0001 0000"))
    with pytest.raises(DecodeError):
        decoder.feed(encode_wrapper(16, 1, b"ok"))


def test_bad_version_after_good_pdu_in_same_chunk() -> None:
    decoder = WrapperDecoder()
    with pytest.raises(DecodeError):
        decoder.feed(encode_wrapper(16, 1, b"a") + bytes.fromhex("0000 0010 0001 0000"))


def test_length_above_maximum() -> None:
    decoder = WrapperDecoder(max_length=100)
    assert decoder.feed(encode_wrapper(1, 16, bytes(100))) == [WrapperPdu(1, 16, bytes(100))]
    with pytest.raises(DecodeError, match="maximum"):
        decoder.feed(encode_wrapper(1, 16, bytes(101))[:HEADER_SIZE])


def test_partial_header_waits() -> None:
    decoder = WrapperDecoder()
    assert decoder.feed(b"\x00\x01\x00") == []
    assert decoder.pending == 3


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=40), max_size=6))
def test_arbitrary_bytes_only_pdus_or_decode_error(chunks: list[bytes]) -> None:
    decoder = WrapperDecoder(max_length=64)
    try:
        for chunk in chunks:
            for pdu in decoder.feed(chunk):
                assert isinstance(pdu, WrapperPdu) and len(pdu.apdu) <= 64
    except DecodeError:
        pass
