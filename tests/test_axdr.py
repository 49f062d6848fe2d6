"""A-XDR Data codec: published vectors, dlms-cosem cross-checks, properties."""

from __future__ import annotations

import math
import struct
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from dlms_cosem import dlms_data as dd
from dlms_cosem.utils import parse_as_dlms_data
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import axdr
from protocols.axdr import (
    Bcd,
    BitString,
    DateTimeValue,
    DateValue,
    Enum,
    TimeValue,
    Typed,
    Utf8,
    decode,
    decode_from,
    encode,
)
from protocols.errors import DecodeError

# ---------------------------------------------------------------------------
# published vectors

# dlms-cosem test-suite, tests/test_dlms_data.py (u9n/dlms-cosem): a Kamstrup
# HAN-port push, structure of 25 elements (visible-strings, OBIS octet-strings,
# double-long-unsigned and long-unsigned values).
KAMSTRUP_HAN = (
    b"\x02\x19\n\x0eKamstrup_V0001\t\x06\x01\x01\x00\x00\x05\xff\n\x105706567196382485\t\x06"
    b"\x01\x01`\x01\x01\xff\n\x126841131BN143101090\t\x06\x01\x01\x01\x07\x00\xff\x06\x00\x00"
    b"\t&\t\x06\x01\x01\x02\x07\x00\xff\x06\x00\x00\x00\x00\t\x06\x01\x01\x03\x07\x00\xff\x06"
    b"\x00\x00\x00\x00\t\x06\x01\x01\x04\x07\x00\xff\x06\x00\x00\x00\xdf\t\x06\x01\x01\x1f\x07"
    b"\x00\xff\x06\x00\x00\x00\\\t\x06\x01\x013\x07\x00\xff\x06\x00\x00\x00\x8d\t\x06\x01\x01G"
    b"\x07\x00\xff\x06\x00\x00\x03r\t\x06\x01\x01 \x07\x00\xff\x12\x00\xe6\t\x06\x01\x014\x07"
    b"\x00\xff\x12\x00\xe6\t\x06\x01\x01H\x07\x00\xff\x12\x00\xe4"
)

# dlms-cosem test-suite, tests/test_parsers.py: a compressed load-profile buffer
# (array of 4 structure{octet-string date-time, unsigned, double-long-unsigned x2};
# the clock of entries 2..4 is null-data).
COMPRESSED_PROFILE = (
    b"\x01\x04\x02\x04\t\x0c\x07\xe3\x0c\x1f\x02\x17\x00\x00\x00\xff\xc4\x00\x11\x06\x06\x00"
    b"\x00\x05\xed\x06\x00\x00\x06T\x02\x04\x00\x11\x06\x06\x00\x00\x05\xed\x06\x00\x00\x06T"
    b"\x02\x04\x00\x11\x06\x06\x00\x00\x05\xed\x06\x00\x00\x06T\x02\x04\x00\x11\x06\x06\x00"
    b"\x00\x05\xed\x06\x00\x00\x06T"
)


def test_kamstrup_han_push() -> None:
    value = decode(KAMSTRUP_HAN)
    assert isinstance(value, tuple) and len(value) == 25
    assert value[0] == "Kamstrup_V0001"
    assert value[1] == bytes([1, 1, 0, 0, 5, 255])
    assert value[2] == "5706567196382485"
    assert value[6] == 0x0926  # 1.1.1.7.0.255 active power import, double-long-unsigned
    assert value[-1] == 0xE4 and value[-3] == 0xE6  # long-unsigned voltages
    assert encode(_retype_kamstrup(value)) == KAMSTRUP_HAN


def _retype_kamstrup(value: tuple[Any, ...]) -> tuple[Any, ...]:
    """Give the ints of the Kamstrup push their wire types back."""
    out: list[Any] = []
    for i, v in enumerate(value):
        if isinstance(v, int):
            out.append(axdr.u16(v) if i >= 19 else axdr.u32(v))
        else:
            out.append(v)
    return tuple(out)


def test_compressed_profile_buffer() -> None:
    rows = decode(COMPRESSED_PROFILE)
    assert len(rows) == 4
    assert rows[0] == (bytes.fromhex("07e30c1f021700000 0ffc400".replace(" ", "")), 6, 1517, 1620)
    assert rows[1:] == [(None, 6, 1517, 1620)] * 3


# Blue Book / Green Book style encodings of single values (tag, contents).
@pytest.mark.parametrize(
    ("encoded", "value"),
    [
        ("00", None),
        ("0301", True),
        ("0300", False),
        ("0f80", -128),
        ("10fffe", -2),
        ("1100", 0),
        ("12ffff", 65535),
        ("05ffffff85", -123),
        ("0600000926", 2342),
        ("14ffffffffffffffff", -1),
        ("15ffffffffffffffff", 2**64 - 1),
        ("09060100010800ff", bytes([1, 0, 1, 8, 0, 255])),
        ("0a03414243", "ABC"),
        ("0c02c3a9", Utf8("é")),
        ("1603", Enum(3)),
        ("0d12", Bcd(0x12)),
        ("17" + struct.pack(">f", 1.5).hex(), 1.5),
        ("18" + struct.pack(">d", -0.1).hex(), -0.1),
        ("0405a8", BitString(b"\xa8", 5)),
        ("0100", []),
        ("0200", ()),
        ("02020ffd161e", (-3, Enum(30))),  # scaler_unit {-3, Wh}
        ("1907e8060f0614172d00ff8880", DateTimeValue(bytes.fromhex("07e8060f0614172d00ff8880"))),
        ("1a07e8060f06", DateValue(bytes.fromhex("07e8060f06"))),
        ("1b14172d00", TimeValue(bytes.fromhex("14172d00"))),
    ],
)
def test_single_values(encoded: str, value: Any) -> None:
    raw = bytes.fromhex(encoded)
    got = decode(raw)
    assert _strict_eq(got, value)
    # Bare ints are ambiguous and a bare float encodes as float64: skip those.
    if not encoded.startswith(("17", "0202")) and (
        not isinstance(value, int) or isinstance(value, (bool, Enum, Bcd))
    ):
        assert encode(value) == raw


def test_long_form_lengths() -> None:
    # BER-style length: 0x81 nn for 128..255, 0x82 nnnn for 256..65535.
    assert encode(b"x" * 127)[:2] == b"\x09\x7f"
    assert encode(b"x" * 128)[:3] == b"\x09\x81\x80"
    assert encode(b"x" * 300)[:4] == b"\x09\x82\x01\x2c"
    assert encode([None] * 70000)[:5] == b"\x01\x83\x01\x11\x70"
    assert decode(b"\x09\x81\x03abc") == b"abc"  # non-minimal long form is accepted
    for big in (b"x" * 128, b"y" * 300, [True] * 200):
        assert decode(encode(big)) == big


def test_bare_int_and_unknown_types_rejected() -> None:
    with pytest.raises(TypeError):
        encode(5)
    with pytest.raises(TypeError):
        encode(object())
    with pytest.raises(ValueError):
        encode(axdr.u8(256))
    with pytest.raises(ValueError):
        encode(axdr.i16(-40000))
    with pytest.raises(ValueError):
        encode(Typed(axdr.DATE_TIME, b"short"))
    with pytest.raises(ValueError):
        encode(axdr.visible("€"))


def test_helpers_encode_their_tags() -> None:
    assert encode(axdr.u8(1)) == b"\x11\x01"
    assert encode(axdr.u16(1)) == b"\x12\x00\x01"
    assert encode(axdr.u32(1)) == b"\x06\x00\x00\x00\x01"
    assert encode(axdr.u64(1)) == b"\x15" + (1).to_bytes(8, "big")
    assert encode(axdr.i8(-1)) == b"\x0f\xff"
    assert encode(axdr.i16(-1)) == b"\x10\xff\xff"
    assert encode(axdr.i32(-1)) == b"\x05\xff\xff\xff\xff"
    assert encode(axdr.i64(-1)) == b"\x14" + b"\xff" * 8
    assert encode(axdr.enum(2)) == b"\x16\x02"
    assert encode(axdr.null()) == b"\x00"
    assert encode(axdr.octets(b"\x01")) == b"\x09\x01\x01"
    assert encode(axdr.visible("A")) == b"\x0a\x01A"
    assert encode(axdr.array([axdr.u8(1)])) == b"\x01\x01\x11\x01"
    assert encode(axdr.structure(axdr.u8(1), None)) == b"\x02\x02\x11\x01\x00"
    assert encode(axdr.bitstring("101")) == b"\x04\x03\xa0"
    assert encode(axdr.float32(0.5)) == b"\x17" + struct.pack(">f", 0.5)
    assert BitString.from_bits("101").bits == "101"


def test_compact_array_is_decode_error() -> None:
    with pytest.raises(DecodeError, match="unsupported"):
        decode(b"\x13\x02\x11\x02\x01\x02")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "07",
        "08",
        "0b",
        "0e",
        "ff",
        "06000000",
        "0905abcd",
        "0981",
        "0980",
        "0985ffffffffff",
        "01830fffff",
        "0102",
        "020111",
        "0c02c328",
        "190102",
        "00 00",
        "0408",
    ],
)
def test_malformed(raw: str) -> None:
    with pytest.raises(DecodeError):
        decode(bytes.fromhex(raw.replace(" ", "")))


def test_depth_limit() -> None:
    ok = b"\x01\x01" * axdr.MAX_DEPTH + b"\x00"
    value = decode(ok)
    for _ in range(axdr.MAX_DEPTH):
        value = value[0]
    assert value is None
    with pytest.raises(DecodeError, match="nesting"):
        decode(b"\x02\x01" * (axdr.MAX_DEPTH + 1) + b"\x00")
    with pytest.raises(DecodeError):
        decode(b"\x01\x01" * 100_000)
    deep: Any = None
    for _ in range(axdr.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError):
        encode(deep)


def test_huge_counts_fail_fast() -> None:
    with pytest.raises(DecodeError):
        decode(b"\x01\x84\xff\xff\xff\xff\x00\x00")
    with pytest.raises(DecodeError):
        decode(b"\x09\x84\xff\xff\xff\xff")


def test_decode_from_offsets_and_buffer_types() -> None:
    data = b"\xaa" + encode(axdr.u16(7)) + encode("z")
    assert decode_from(data, 1) == (7, 4)
    assert decode_from(memoryview(data), 4) == ("z", 7)
    assert decode(bytearray(encode(axdr.u16(7)))) == 7
    with pytest.raises(DecodeError):
        decode_from(data, 99)


# ---------------------------------------------------------------------------
# fast row path == general path


def _profile(rows: int, *, null_every: int = 0) -> bytes:
    items = []
    for i in range(rows):
        stamp = struct.pack(">HBBBBBBBhB", 2024, 3, 1, 5, i // 4, (i % 4) * 15, 0, 0xFF, -60, 0)
        clock = None if null_every and i % null_every else axdr.octets(stamp)
        items.append(
            axdr.structure(
                clock, axdr.u32(1000 * i), axdr.u32(7 * i), axdr.i16(-i), axdr.u8(i % 256)
            )
        )
    return encode(axdr.array(items))


def _general(data: bytes) -> list[Any]:
    """Decode an array element by element (never the row fast path)."""
    count, pos = axdr._length(data, 1, len(data))
    out = []
    for _ in range(count):
        value, pos = decode_from(data, pos)
        out.append(value)
    if pos != len(data):
        raise DecodeError("trailing bytes")
    return out


def test_profile_fast_path_matches_general_path() -> None:
    for data in (_profile(96), _profile(96, null_every=3), _profile(2)):
        assert decode(data) == _general(data)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fast_path_with_mutations(data: st.DataObject) -> None:
    raw = bytearray(_profile(6, null_every=data.draw(st.integers(0, 3))))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(2, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        fast = decode(bytes(raw))
    except DecodeError:
        with pytest.raises(DecodeError):
            _general(bytes(raw))
        return
    assert _strict_eq(fast, _general(bytes(raw)))


# ---------------------------------------------------------------------------
# properties


def _strict_eq(a: Any, b: Any) -> bool:
    """Equality that also compares types (Enum(1) != 1, tuple != list, NaN == NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_strict_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def _int_leaf(tag: int, lo: int, hi: int) -> st.SearchStrategy[tuple[Any, Any]]:
    return st.integers(lo, hi).map(lambda v: (Typed(tag, v), v))


def _f32(x: float) -> float:
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


LEAVES: st.SearchStrategy[tuple[Any, Any]] = st.one_of(
    st.none().map(lambda v: (v, v)),
    st.booleans().map(lambda v: (v, v)),
    _int_leaf(axdr.INTEGER, -128, 127),
    _int_leaf(axdr.LONG, -(2**15), 2**15 - 1),
    _int_leaf(axdr.DOUBLE_LONG, -(2**31), 2**31 - 1),
    _int_leaf(axdr.LONG64, -(2**63), 2**63 - 1),
    _int_leaf(axdr.UNSIGNED, 0, 255),
    _int_leaf(axdr.LONG_UNSIGNED, 0, 2**16 - 1),
    _int_leaf(axdr.DOUBLE_LONG_UNSIGNED, 0, 2**32 - 1),
    _int_leaf(axdr.LONG64_UNSIGNED, 0, 2**64 - 1),
    st.integers(0, 255).map(lambda v: (Enum(v), Enum(v))),
    st.integers(0, 255).map(lambda v: (Bcd(v), Bcd(v))),
    st.floats(allow_nan=False, width=32).map(lambda v: (axdr.float32(v), _f32(v))),
    st.floats(allow_nan=True).map(lambda v: (v, v)),
    st.binary(max_size=300).map(lambda v: (v, v)),
    st.text(st.characters(max_codepoint=255), max_size=20).map(lambda v: (v, v)),
    st.text(max_size=20).map(lambda v: (Utf8(v), Utf8(v))),
    st.text("01", max_size=40).map(lambda v: (BitString.from_bits(v), BitString.from_bits(v))),
    st.binary(min_size=12, max_size=12).map(lambda v: (DateTimeValue(v), DateTimeValue(v))),
    st.binary(min_size=5, max_size=5).map(lambda v: (DateValue(v), DateValue(v))),
    st.binary(min_size=4, max_size=4).map(lambda v: (TimeValue(v), TimeValue(v))),
)


def _containers(children: st.SearchStrategy[list[tuple[Any, Any]]]) -> st.SearchStrategy[Any]:
    return st.one_of(
        children.map(lambda items: ([i for i, _ in items], [o for _, o in items])),
        children.map(lambda items: (tuple(i for i, _ in items), tuple(o for _, o in items))),
    )


VALUES = st.recursive(LEAVES, lambda inner: _containers(st.lists(inner, max_size=6)), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_round_trip(pair: tuple[Any, Any]) -> None:
    value, expected = pair
    raw = encode(value)
    assert _strict_eq(decode(raw), expected)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(raw: bytes) -> None:
    try:
        value, pos = decode_from(raw)
    except DecodeError:
        return
    assert 0 < pos <= len(raw)
    assert _strict_eq(decode(raw[:pos]), value)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.data())
def test_mutated_encodings(pair: tuple[Any, Any], data: st.DataObject) -> None:
    raw = bytearray(encode(pair[0]))
    action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    i = data.draw(st.integers(0, len(raw) - 1))
    if action == "flip":
        raw[i] = data.draw(st.integers(0, 255))
    elif action == "truncate":
        del raw[i:]
    else:
        raw.insert(i, data.draw(st.integers(0, 255)))
    try:
        decode(bytes(raw))
    except DecodeError:
        pass


# ---------------------------------------------------------------------------
# cross-checks with dlms-cosem's independent codec


CROSS_LEAVES: st.SearchStrategy[tuple[Any, Any]] = st.one_of(
    st.none().map(lambda v: (v, None)),
    st.booleans().map(lambda v: (v, v)),
    _int_leaf(axdr.INTEGER, -128, 127),
    _int_leaf(axdr.LONG, -(2**15), 2**15 - 1),
    _int_leaf(axdr.DOUBLE_LONG, -(2**31), 2**31 - 1),
    _int_leaf(axdr.LONG64, -(2**63), 2**63 - 1),
    _int_leaf(axdr.UNSIGNED, 0, 255),
    _int_leaf(axdr.LONG_UNSIGNED, 0, 2**16 - 1),
    _int_leaf(axdr.DOUBLE_LONG_UNSIGNED, 0, 2**32 - 1),
    _int_leaf(axdr.LONG64_UNSIGNED, 0, 2**64 - 1),
    st.integers(0, 255).map(lambda v: (Enum(v), v)),
    # dlms-cosem writes a one-byte length for strings, so keep them short.
    st.binary(max_size=127).map(lambda v: (v, v)),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(lambda v: (v, v)),
)
CROSS_VALUES = st.recursive(
    CROSS_LEAVES,
    lambda inner: st.lists(inner, max_size=5).flatmap(
        lambda items: st.sampled_from(
            [
                ([i for i, _ in items], [o for _, o in items]),
                (tuple(i for i, _ in items), [o for _, o in items]),
            ]
        )
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(CROSS_VALUES)
def test_ours_encoded_theirs_decoded(pair: tuple[Any, Any]) -> None:
    value, theirs_view = pair
    assert parse_as_dlms_data(encode(value)) == theirs_view


_THEIR_CLASS = {
    axdr.INTEGER: dd.IntegerData,
    axdr.LONG: dd.LongData,
    axdr.DOUBLE_LONG: dd.DoubleLongData,
    axdr.LONG64: dd.Long64Data,
    axdr.UNSIGNED: dd.UnsignedIntegerData,
    axdr.LONG_UNSIGNED: dd.UnsignedLongData,
    axdr.DOUBLE_LONG_UNSIGNED: dd.DoubleLongUnsignedData,
    axdr.LONG64_UNSIGNED: dd.UnsignedLong64Data,
}


class _TheirNull(dd.NullData):
    # dlms-cosem 25.1.0 implements no value_to_bytes for null-data and boolean.
    def value_to_bytes(self) -> bytes:
        return b""


class _TheirBool(dd.BooleanData):
    def value_to_bytes(self) -> bytes:
        return b"\x01" if self.value else b"\x00"


def _their_object(value: Any) -> Any:
    if value is None:
        return _TheirNull(None)
    if isinstance(value, bool):
        return _TheirBool(value)
    if isinstance(value, Typed):
        return _THEIR_CLASS[value.tag](value.value)
    if isinstance(value, Enum):
        return dd.EnumData(int(value))
    if isinstance(value, bytes):
        return dd.OctetStringData(value)
    if isinstance(value, str):
        return dd.VisibleStringData(value)
    if isinstance(value, list):
        return dd.DataArray([_their_object(v) for v in value])
    return dd.DataStructure([_their_object(v) for v in value])


@settings(max_examples=200, deadline=None)
@given(CROSS_VALUES)
def test_theirs_encoded_ours_decoded(pair: tuple[Any, Any]) -> None:
    value, _ = pair
    theirs = _their_object(value).to_bytes()
    assert theirs == encode(value)
    assert decode(theirs) == _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, Typed):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


@pytest.mark.parametrize(
    "dt",
    [
        datetime(2024, 6, 15, 20, 23, 45, tzinfo=timezone(timedelta(hours=2))),
        datetime(2020, 1, 6, 0, 3, tzinfo=timezone(timedelta(hours=1))),
        datetime(1999, 12, 31, 23, 59, 59, 990000, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_date_time_cross_check_in_nested_structure(dt: datetime) -> None:
    from dlms_cosem.time import datetime_to_bytes

    stamp = datetime_to_bytes(dt)  # dlms-cosem's encoding of the date-time
    ours = encode([(DateTimeValue(stamp), axdr.u32(5))])
    # dlms-cosem cannot encode DateTimeData itself: its array/structure headers by hand.
    their_bytes = b"\x01\x01\x02\x02\x19" + stamp + dd.DoubleLongUnsignedData(5).to_bytes()
    assert ours == their_bytes
    parsed = parse_as_dlms_data(ours)
    assert parsed[0][0][0] == dt and parsed[0][1] == 5
    assert decode(their_bytes) == [(stamp, 5)]
