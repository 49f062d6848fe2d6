"""Push setup (class 40) attribute codecs: byte-exact vectors, round trips, fuzzing.

Types as the Blue Book (DLMS UA 1000-1, class 40 version 0) gives them and Gurux's
GXDLMSPushSetup.getValue encodes them (gurux_dlms/objects/GXDLMSPushSetup.py): object list
entries {long-unsigned 0x12, octet-string 0x09, integer 0x0F, long-unsigned 0x12}, destination
{enum 0x16, octet-string, enum}, windows array of {octet-string, octet-string}. The vectors
are written out by hand from those tags; dlms-cosem's independent A-XDR encoder (a dev-only
oracle) gives the same bytes.
"""

from __future__ import annotations

import dlms_cosem.dlms_data as oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import axdr
from protocols import push_setup as ps
from protocols.errors import DecodeError

LN_A_PLUS = bytes((1, 0, 1, 8, 0, 255))
OBJECT_LIST_VECTOR = bytes.fromhex(
    "01 01"  # array of 1
    "02 04"  # structure of 4
    "12 0003"  # class_id 3 (register)
    "09 06 0100010800ff"  # logical_name 1-0:1.8.0.255
    "0f 02"  # attribute_index 2
    "12 0000"  # data_index 0
)
DESTINATION_VECTOR = bytes.fromhex(
    "02 03"  # structure of 3
    "16 00"  # transport_service TCP
    "09 0e" + b"127.0.0.1:4060".hex() + "16 00"  # destination, message A-XDR
)
START = bytes.fromhex("07ea030b030300000000 0000".replace(" ", ""))  # 2026-03-11 03:00 UTC
END = bytes.fromhex("07ea030b030900000000 0000".replace(" ", ""))
WINDOWS_VECTOR = bytes.fromhex("01 01 02 02 09 0c") + START + bytes.fromhex("09 0c") + END


def test_object_list_vector() -> None:
    entry = ps.PushObject(3, LN_A_PLUS, 2)
    assert ps.encode_object_list([entry]) == OBJECT_LIST_VECTOR
    assert ps.decode_object_list(OBJECT_LIST_VECTOR) == (entry,)
    item = oracle.DataStructure(
        [
            oracle.UnsignedLongData(3),
            oracle.OctetStringData(LN_A_PLUS),
            oracle.IntegerData(2),
            oracle.UnsignedLongData(0),
        ]
    )
    assert oracle.DataArray([item]).to_bytes() == OBJECT_LIST_VECTOR


def test_destination_vector() -> None:
    dest = ps.tcp_destination("127.0.0.1", 4060)
    assert ps.encode_destination(dest) == DESTINATION_VECTOR
    assert ps.decode_destination(DESTINATION_VECTOR) == dest
    assert dest.host_port() == ("127.0.0.1", 4060)
    wanted = oracle.DataStructure(
        [oracle.EnumData(0), oracle.OctetStringData(b"127.0.0.1:4060"), oracle.EnumData(0)]
    )
    assert wanted.to_bytes() == DESTINATION_VECTOR


def test_windows_vector() -> None:
    assert len(START) == len(END) == 12
    window = ps.Window(START, END)
    assert ps.encode_windows([window]) == WINDOWS_VECTOR
    assert ps.decode_windows(WINDOWS_VECTOR) == (window,)
    assert ps.decode_windows(b"\x01\x00") == ()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # structure of 3: attribute and data index missing
        (bytes.fromhex("0101020312000309060100010800ff0f02"), r"push_object_list\[0\]"),
        # a 5-byte logical name
        (bytes.fromhex("01010204120003090501000108000f02120000"), "logical_name"),
        # class id as an octet-string
        (bytes.fromhex("010102040901030906 0100010800ff 0f02 120000".replace(" ", "")), "class_id"),
        # a destination structure is no object list
        (bytes.fromhex("0203160009001600"), "expected an array"),
    ],
)
def test_malformed_object_lists_name_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        ps.decode_object_list(data)


def test_destination_host_port_errors() -> None:
    with pytest.raises(ValueError, match="not host:port"):
        ps.SendDestination(ps.TransportService.TCP, b"127.0.0.1").host_port()
    with pytest.raises(ValueError, match="not TCP or UDP"):
        ps.SendDestination(ps.TransportService.SMS, b"+4179").host_port()
    with pytest.raises(DecodeError, match="transport_service"):
        ps.decode_destination(bytes.fromhex("0203 0900 0900 1600".replace(" ", "")))


def test_self_described_body_splits_and_pairs() -> None:
    own = ps.PushObject(ps.CLASS_ID, ps.ALARM_PUSH_SETUP, ps.OBJECT_LIST)
    code = ps.PushObject(1, bytes((0, 0, 96, 11, 0, 255)), 2)
    objects = (own, code)
    body = axdr.decode(axdr.encode(axdr.structure(ps.object_list_value(objects), axdr.u8(44))))
    described, values = ps.split_self_described(body)
    assert described == objects
    assert ps.values_by_object_list(objects, values)[1] == (code, 44)
    plain = axdr.decode(axdr.encode(axdr.structure(axdr.u8(44), axdr.visible("SIM1"))))
    assert ps.split_self_described(plain) == (None, (44, "SIM1"))
    # An object list whose head is not a push setup's attribute 2 is just a value.
    other = axdr.decode(axdr.encode(axdr.structure(ps.object_list_value((code,)), axdr.u8(1))))
    assert ps.split_self_described(other)[0] is None
    with pytest.raises(DecodeError, match="2 values, the push object list has 1"):
        ps.values_by_object_list((code,), (1, 2))


logical_names = st.binary(min_size=6, max_size=6)
push_objects = st.builds(
    ps.PushObject,
    st.integers(0, 0xFFFF),
    logical_names,
    st.integers(-128, 127),
    st.integers(0, 0xFFFF),
)
destinations = st.builds(
    ps.SendDestination, st.integers(0, 255), st.binary(max_size=300), st.integers(0, 255)
)
windows = st.builds(
    ps.Window, st.binary(min_size=12, max_size=12), st.binary(min_size=12, max_size=12)
)


@given(st.lists(push_objects, max_size=40))
def test_object_list_round_trip(objects: list[ps.PushObject]) -> None:
    assert ps.decode_object_list(ps.encode_object_list(objects)) == tuple(objects)


@given(destinations)
def test_destination_round_trip(dest: ps.SendDestination) -> None:
    assert ps.decode_destination(ps.encode_destination(dest)) == dest


@given(st.lists(windows, max_size=20))
def test_windows_round_trip(items: list[ps.Window]) -> None:
    assert ps.decode_windows(ps.encode_windows(items)) == tuple(items)


@settings(max_examples=400)
@given(st.binary(max_size=120))
def test_decoders_raise_only_decode_error(data: bytes) -> None:
    for decode in (ps.decode_object_list, ps.decode_destination, ps.decode_windows):
        try:
            decode(data)
        except DecodeError:
            pass


@settings(max_examples=300)
@given(st.lists(push_objects, min_size=1, max_size=5), st.binary(max_size=60))
def test_truncated_and_mutated_object_lists_fail_cleanly(
    objects: list[ps.PushObject], noise: bytes
) -> None:
    data = ps.encode_object_list(objects)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            ps.decode_object_list(data[:cut])
    mutated = bytearray(data)
    for i, b in enumerate(noise):
        mutated[i % len(mutated)] ^= b
    try:
        ps.decode_object_list(bytes(mutated))
    except DecodeError:
        pass


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_split_self_described_takes_any_decoded_body(data: bytes) -> None:
    try:
        body = axdr.decode(data)
    except DecodeError:
        return
    described, values = ps.split_self_described(body)
    if described is not None:
        assert described[0].class_id == ps.CLASS_ID and len(described) >= 1
        assert isinstance(values, tuple)
