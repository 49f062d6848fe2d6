"""A-XDR codec of the COSEM ``Data`` CHOICE (Blue Book, DLMS UA 1000-1).

Decoding is the collector's hot path (load-profile buffers of every meter, every
day), so it maps straight onto plain Python values and keeps to a few C-level
calls per value:

* scalars are read with precomputed ``struct.Struct.unpack_from`` bound methods
  straight out of the ``bytes`` object, no intermediate slices;
* array/structure items are decoded in one loop per container, recursion only
  for nested containers, nesting bounded by :data:`MAX_DEPTH`;
* an array of flat structures (the shape of a profile buffer: rows of
  octet-string timestamp plus fixed-size numbers) is decoded one row per
  ``unpack_from`` with a ``Struct`` built from the first row; every tag and
  length byte of the row is unpacked too and compared with the first row's, so
  a row of another shape falls back to the general decoder and the result is
  always the same as the general decoder's.

Value mapping (the module contract in docs/architecture.md):
null-data ↔ ``None``; boolean ↔ ``bool``; the integer types ↔ ``int``; enum ↔
:class:`Enum`; bcd ↔ :class:`Bcd`; float32/float64 ↔ ``float``; octet-string ↔
``bytes``; visible-string ↔ ``str``; utf8-string ↔ :class:`Utf8`; bit-string ↔
:class:`BitString`; array ↔ ``list``; structure ↔ ``tuple``; date-time, date,
time ↔ :class:`DateTimeValue`, :class:`DateValue`, :class:`TimeValue` (raw
bytes; ``protocols.cosem`` interprets them).  Encoding needs the type, so a bare
``int`` is refused: wrap it with :func:`u32`, :func:`i16`, ... (:class:`Typed`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from protocols.errors import DecodeError

__all__ = [
    "ARRAY",
    "BCD",
    "BIT_STRING",
    "BOOLEAN",
    "COMPACT_ARRAY",
    "DATE",
    "DATE_TIME",
    "DOUBLE_LONG",
    "DOUBLE_LONG_UNSIGNED",
    "ENUM",
    "FLOAT32",
    "FLOAT64",
    "INTEGER",
    "LONG",
    "LONG64",
    "LONG64_UNSIGNED",
    "LONG_UNSIGNED",
    "MAX_DEPTH",
    "NULL_DATA",
    "OCTET_STRING",
    "STRUCTURE",
    "TIME",
    "UNSIGNED",
    "UTF8_STRING",
    "VISIBLE_STRING",
    "Bcd",
    "BitString",
    "DateTimeValue",
    "DateValue",
    "Enum",
    "TimeValue",
    "Typed",
    "Utf8",
    "array",
    "bcd",
    "bitstring",
    "boolean",
    "date_time",
    "date_value",
    "decode",
    "decode_from",
    "encode",
    "encode_length",
    "enum",
    "float32",
    "float64",
    "i8",
    "i16",
    "i32",
    "i64",
    "null",
    "octets",
    "read_length",
    "structure",
    "time_value",
    "u8",
    "u16",
    "u32",
    "u64",
    "utf8",
    "visible",
]

# Data CHOICE tags (Blue Book, DLMS UA 1000-1, "Data" type definition).
NULL_DATA = 0
ARRAY = 1
STRUCTURE = 2
BOOLEAN = 3
BIT_STRING = 4
DOUBLE_LONG = 5
DOUBLE_LONG_UNSIGNED = 6
OCTET_STRING = 9
VISIBLE_STRING = 10
UTF8_STRING = 12
BCD = 13
INTEGER = 15
LONG = 16
UNSIGNED = 17
LONG_UNSIGNED = 18
COMPACT_ARRAY = 19
LONG64 = 20
LONG64_UNSIGNED = 21
ENUM = 22
FLOAT32 = 23
FLOAT64 = 24
DATE_TIME = 25
DATE = 26
TIME = 27

#: Deepest nesting of arrays/structures accepted (and produced by encode).
MAX_DEPTH = 32


class Enum(int):
    """Value of an ``enum`` (tag 22): an int that remembers its A-XDR type."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Enum({int(self)})"


class Bcd(int):
    """Value of a ``bcd`` (tag 13): the raw octet, kept as an int."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Bcd({int(self)})"


class Utf8(str):
    """Value of a ``utf8-string`` (tag 12), distinct from visible-string."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Utf8({str.__repr__(self)})"


class DateTimeValue(bytes):
    """Raw 12-byte ``date-time`` (tag 25); ``protocols.cosem`` decodes it."""

    __slots__ = ()
    SIZE = 12


class DateValue(bytes):
    """Raw 5-byte ``date`` (tag 26)."""

    __slots__ = ()
    SIZE = 5


class TimeValue(bytes):
    """Raw 4-byte ``time`` (tag 27)."""

    __slots__ = ()
    SIZE = 4


@dataclass(slots=True, frozen=True)
class BitString:
    """A ``bit-string``: ``length`` bits, first bit in the MSB of ``data[0]``.

    Padding bits of the last octet are kept as received so that encoding a
    decoded value gives back the same bytes.
    """

    data: bytes
    length: int

    def __post_init__(self) -> None:
        if self.length < 0 or (self.length + 7) // 8 != len(self.data):
            raise ValueError(f"{len(self.data)} octets cannot hold exactly {self.length} bits")

    @classmethod
    def from_bits(cls, bits: str) -> BitString:
        """Build from a string of '0'/'1' characters, first bit first."""
        if bits.strip("01"):
            raise ValueError("bit string must contain only '0' and '1'")
        n = len(bits)
        padded = bits + "0" * (-n % 8)
        data = int(padded, 2).to_bytes(len(padded) // 8, "big") if n else b""
        return cls(data, n)

    @property
    def bits(self) -> str:
        """The bits as a '0'/'1' string, first bit first."""
        if not self.length:
            return ""
        return format(int.from_bytes(self.data, "big"), f"0{len(self.data) * 8}b")[: self.length]


@dataclass(slots=True, frozen=True)
class Typed:
    """A value with an explicit Data tag, for encoding (``Typed(LONG_UNSIGNED, 900)``)."""

    tag: int
    value: Any


# ---------------------------------------------------------------------------
# decoding


def _fail(message: str) -> DecodeError:
    return DecodeError(f"A-XDR: {message}")


_S_I8 = struct.Struct(">b")
_S_U8 = struct.Struct(">B")
_S_BOOL = struct.Struct(">?")
_S_I16 = struct.Struct(">h")
_S_U16 = struct.Struct(">H")
_S_I32 = struct.Struct(">i")
_S_U32 = struct.Struct(">I")
_S_I64 = struct.Struct(">q")
_S_U64 = struct.Struct(">Q")
_S_F32 = struct.Struct(">f")
_S_F64 = struct.Struct(">d")

# Fixed-size tags whose Python value comes straight out of struct: tag -> Struct.
_PLAIN_STRUCTS: dict[int, struct.Struct] = {
    BOOLEAN: _S_BOOL,
    DOUBLE_LONG: _S_I32,
    DOUBLE_LONG_UNSIGNED: _S_U32,
    INTEGER: _S_I8,
    LONG: _S_I16,
    UNSIGNED: _S_U8,
    LONG_UNSIGNED: _S_U16,
    LONG64: _S_I64,
    LONG64_UNSIGNED: _S_U64,
    FLOAT32: _S_F32,
    FLOAT64: _S_F64,
}

_Unpack = Callable[[bytes, int], tuple[Any, ...]]
# Table indexed by tag byte: (unpack_from, size) for plain fixed-size tags.
_FIXED: list[tuple[_Unpack, int] | None] = [None] * 256
for _tag, _st in _PLAIN_STRUCTS.items():
    _FIXED[_tag] = (_st.unpack_from, _st.size)
# Struct format character of the plain fixed-size tags, for row layouts.
_FORMAT_CHAR: list[str | None] = [None] * 256
for _tag, _st in _PLAIN_STRUCTS.items():
    _FORMAT_CHAR[_tag] = _st.format[-1]
del _tag, _st


def _long_length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Read a long-form length (first byte >= 0x80) at ``pos``."""
    first = data[pos]
    size = first - 0x80
    if size == 0 or size > 4:
        raise _fail(f"unsupported length octet {first:#04x}")
    start = pos + 1
    stop = start + size
    if stop > end:
        raise _fail("truncated length")
    return int.from_bytes(data[start:stop], "big"), stop


def _length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise _fail("truncated length")
    n = data[pos]
    if n < 0x80:
        return n, pos + 1
    return _long_length(data, pos, end)


def read_length(data: bytes, pos: int, what: str = "length") -> tuple[int, int]:
    """The A-XDR length at ``pos`` and the position after it; DecodeError names ``what``.

    This is the one length decoder of the project (the APDU, ciphering and push layers
    call it); short form below 0x80, else 0x8k followed by k (1..4) big-endian bytes.
    """
    try:
        return _length(data, pos, len(data))
    except DecodeError as exc:
        raise DecodeError(f"{what}: {exc}") from None


def encode_length(n: int) -> bytes:
    """The A-XDR length of ``n`` (the encoder every builder of the project uses)."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    _put_length(out, n)
    return bytes(out)


def _bytes_field(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    n, pos = _length(data, pos, end)
    stop = pos + n
    if stop > end:
        raise _fail(f"string of {n} bytes overruns the data")
    return data[pos:stop], stop


def _dec_visible(data: bytes, pos: int, end: int) -> tuple[Any, int]:
    raw, pos = _bytes_field(data, pos, end)
    # Latin-1 maps every octet, so meters that put non-ASCII bytes in a
    # visible-string still decode, and re-encode to the same bytes.
    return raw.decode("latin-1"), pos


def _dec_utf8(data: bytes, pos: int, end: int) -> tuple[Any, int]:
    raw, pos = _bytes_field(data, pos, end)
    try:
        return Utf8(raw.decode("utf-8")), pos
    except UnicodeDecodeError as exc:
        raise _fail(f"invalid utf8-string: {exc.reason}") from None


def _dec_bitstring(data: bytes, pos: int, end: int) -> tuple[Any, int]:
    nbits, pos = _length(data, pos, end)
    stop = pos + (nbits + 7) // 8
    if stop > end:
        raise _fail(f"bit-string of {nbits} bits overruns the data")
    return BitString(data[pos:stop], nbits), stop


def _dec_enum(data: bytes, pos: int, end: int) -> tuple[Any, int]:
    if pos >= end:
        raise _fail("truncated enum")
    return Enum(data[pos]), pos + 1


def _dec_bcd(data: bytes, pos: int, end: int) -> tuple[Any, int]:
    if pos >= end:
        raise _fail("truncated bcd")
    return Bcd(data[pos]), pos + 1


def _fixed_bytes(cls: type[bytes], size: int) -> Callable[[bytes, int, int], tuple[Any, int]]:
    def dec(data: bytes, pos: int, end: int) -> tuple[Any, int]:
        stop = pos + size
        if stop > end:
            raise _fail(f"truncated {cls.__name__}")
        return cls(data[pos:stop]), stop

    return dec


def _dec_compact_array(data: bytes, pos: int, end: int) -> tuple[Any, int]:
    raise _fail("compact-array (tag 19) is unsupported")


_OTHER: dict[int, Callable[[bytes, int, int], tuple[Any, int]]] = {
    VISIBLE_STRING: _dec_visible,
    UTF8_STRING: _dec_utf8,
    BIT_STRING: _dec_bitstring,
    ENUM: _dec_enum,
    BCD: _dec_bcd,
    DATE_TIME: _fixed_bytes(DateTimeValue, 12),
    DATE: _fixed_bytes(DateValue, 5),
    TIME: _fixed_bytes(TimeValue, 4),
    COMPACT_ARRAY: _dec_compact_array,
}


def _decode_items(data: bytes, pos: int, end: int, count: int, depth: int, out: list[Any]) -> int:
    """Decode ``count`` values at ``pos`` into ``out``; return the new position.

    ``depth`` is the number of containers enclosing these values.
    """
    append = out.append
    fixed = _FIXED
    for _ in range(count):
        if pos >= end:
            raise _fail("truncated data")
        tag = data[pos]
        spec = fixed[tag]
        if spec is not None:
            stop = pos + 1 + spec[1]
            if stop > end:
                raise _fail(f"truncated value of tag {tag}")
            append(spec[0](data, pos + 1)[0])
            pos = stop
            continue
        pos += 1
        if tag == OCTET_STRING:
            if pos >= end:
                raise _fail("truncated length")
            n = data[pos]
            if n < 0x80:
                pos += 1
            else:
                n, pos = _long_length(data, pos, end)
            stop = pos + n
            if stop > end:
                raise _fail(f"octet-string of {n} bytes overruns the data")
            append(data[pos:stop])
            pos = stop
        elif tag == NULL_DATA:
            append(None)
        elif tag == STRUCTURE or tag == ARRAY:
            if depth >= MAX_DEPTH:
                raise _fail(f"nesting deeper than {MAX_DEPTH} levels")
            n, pos = _length(data, pos, end)
            if n > end - pos:
                raise _fail(f"{n} elements announced, {end - pos} bytes left")
            items: list[Any] = []
            if tag == ARRAY:
                pos = _decode_array(data, pos, end, n, depth + 1, items)
                append(items)
            else:
                pos = _decode_items(data, pos, end, n, depth + 1, items)
                append(tuple(items))
        else:
            handler = _OTHER.get(tag)
            if handler is None:
                raise _fail(f"unknown data tag {tag}")
            value, pos = handler(data, pos, end)
            append(value)
    return pos


@dataclass(slots=True, frozen=True)
class _RowLayout:
    unpack: _Unpack
    size: int
    header_of: Callable[[tuple[Any, ...]], tuple[Any, ...]]
    header: tuple[int, ...]
    values_of: Callable[[tuple[Any, ...]], tuple[Any, ...]]


_LAYOUT_CACHE: dict[tuple[int, ...], _RowLayout] = {}


def _row_layout(data: bytes, pos: int, end: int) -> _RowLayout | None:
    """Layout of the flat structure at ``pos``, or None if it is not flat.

    Flat: 2..127 elements, each a plain fixed-size scalar or a short
    octet-string.  The layout unpacks every byte of the row, tag and length
    octets included (``header``), so a row that matches the header has exactly
    this shape.
    """
    n = data[pos + 1] if pos + 1 < end else 0
    if data[pos] != STRUCTURE or n < 2 or n >= 0x80:
        return None
    header = [STRUCTURE, n]
    fmt = [">BB"]
    p = pos + 2
    for _ in range(n):
        if p >= end:
            return None
        tag = data[p]
        char = _FORMAT_CHAR[tag]
        if char is not None:
            fmt.append("B" + char)
            header.append(tag)
            p += 1 + _PLAIN_STRUCTS[tag].size
        elif tag == OCTET_STRING and p + 1 < end and data[p + 1] < 0x80:
            length = data[p + 1]
            fmt.append(f"BB{length}s")
            header.extend((tag, length))
            p += 2 + length
        else:
            return None
    if p > end:
        return None
    key = tuple(header)
    layout = _LAYOUT_CACHE.get(key)
    if layout is None:
        st = struct.Struct("".join(fmt))
        header_idx: list[int] = [0, 1]
        value_idx: list[int] = []
        i = 2
        k = 2
        for _ in range(n):
            if key[k] == OCTET_STRING:
                header_idx += (i, i + 1)
                value_idx.append(i + 2)
                i += 3
                k += 2
            else:
                header_idx.append(i)
                value_idx.append(i + 1)
                i += 2
                k += 1
        layout = _RowLayout(
            st.unpack_from, st.size, itemgetter(*header_idx), key, itemgetter(*value_idx)
        )
        if len(_LAYOUT_CACHE) >= 256:
            _LAYOUT_CACHE.clear()
        _LAYOUT_CACHE[key] = layout
    return layout


def _decode_array(data: bytes, pos: int, end: int, count: int, depth: int, out: list[Any]) -> int:
    """Decode ``count`` array elements, rows of one flat shape in one unpack each."""
    if count < 2 or depth >= MAX_DEPTH or data[pos] != STRUCTURE:
        return _decode_items(data, pos, end, count, depth, out)
    layout = _row_layout(data, pos, end)
    if layout is None:
        return _decode_items(data, pos, end, count, depth, out)
    unpack = layout.unpack
    size = layout.size
    header_of = layout.header_of
    header = layout.header
    values_of = layout.values_of
    append = out.append
    for _ in range(count):
        stop = pos + size
        if stop <= end:
            row = unpack(data, pos)
            if header_of(row) == header:
                append(values_of(row))
                pos = stop
                continue
        pos = _decode_items(data, pos, end, 1, depth, out)
    return pos


def decode_from(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Any, int]:
    """Decode one Data value at ``offset``; return it and the offset after it."""
    if type(data) is not bytes:
        data = bytes(data)
    if not 0 <= offset <= len(data):
        raise _fail(f"offset {offset} outside the data")
    out: list[Any] = []
    pos = _decode_items(data, offset, len(data), 1, 0, out)
    return out[0], pos


def decode_leading(data: bytes | bytearray | memoryview) -> tuple[Any, bytes]:
    """Decode the Data value at the start of ``data``; return it and the bytes after it.

    For answers from meters that put bytes after a GET value (seen in the field: a
    date-time followed by 18 more): the value is still good, the caller reports the rest.
    """
    if type(data) is not bytes:
        data = bytes(data)
    value, pos = decode_from(data, 0)
    return value, data[pos:]


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Decode a buffer holding exactly one Data value."""
    if type(data) is not bytes:
        data = bytes(data)
    value, pos = decode_from(data, 0)
    if pos != len(data):
        raise _fail(f"{len(data) - pos} trailing bytes after the value")
    return value


# ---------------------------------------------------------------------------
# encoding


def _put_length(out: bytearray, n: int) -> None:
    if n < 0x80:
        out.append(n)
    elif n <= 0xFF:
        out += bytes((0x81, n))
    elif n <= 0xFFFF:
        out.append(0x82)
        out += n.to_bytes(2, "big")
    elif n <= 0xFFFFFF:
        out.append(0x83)
        out += n.to_bytes(3, "big")
    elif n <= 0xFFFFFFFF:
        out.append(0x84)
        out += n.to_bytes(4, "big")
    else:
        raise ValueError(f"length {n} does not fit an A-XDR length")


_ENCODE_STRUCTS: dict[int, struct.Struct] = {**_PLAIN_STRUCTS, ENUM: _S_U8, BCD: _S_U8}
_FIXED_BYTES_SIZE = {DATE_TIME: 12, DATE: 5, TIME: 4}


def _encode_typed(out: bytearray, tag: int, value: Any, depth: int) -> None:
    st = _ENCODE_STRUCTS.get(tag)
    if st is not None:
        if tag == BOOLEAN:
            out += b"\x03\x01" if value else b"\x03\x00"
            return
        if tag not in (FLOAT32, FLOAT64) and not isinstance(value, int):
            raise TypeError(f"tag {tag} needs an int, got {type(value).__name__}")
        try:
            packed = st.pack(value)
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"{value!r} does not fit tag {tag}: {exc}") from None
        out.append(tag)
        out += packed
    elif tag == NULL_DATA:
        if value is not None:
            raise ValueError("null-data carries no value")
        out.append(NULL_DATA)
    elif tag == OCTET_STRING:
        raw = bytes(value)
        out.append(tag)
        _put_length(out, len(raw))
        out += raw
    elif tag == VISIBLE_STRING or tag == UTF8_STRING:
        if not isinstance(value, str):
            raise TypeError(f"tag {tag} needs a str")
        raw = value.encode("latin-1" if tag == VISIBLE_STRING else "utf-8")
        out.append(tag)
        _put_length(out, len(raw))
        out += raw
    elif tag == ARRAY or tag == STRUCTURE:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"tag {tag} needs a list or tuple of items")
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH} levels")
        out.append(tag)
        _put_length(out, len(value))
        for item in value:
            _encode_into(out, item, depth + 1)
    elif tag == BIT_STRING:
        if not isinstance(value, BitString):
            raise TypeError("bit-string needs a BitString")
        out.append(tag)
        _put_length(out, value.length)
        out += value.data
    elif tag in _FIXED_BYTES_SIZE:
        raw = bytes(value)
        if len(raw) != _FIXED_BYTES_SIZE[tag]:
            raise ValueError(f"tag {tag} needs {_FIXED_BYTES_SIZE[tag]} bytes, got {len(raw)}")
        out.append(tag)
        out += raw
    else:
        raise ValueError(f"cannot encode tag {tag}")


def _encode_into(out: bytearray, value: Any, depth: int) -> None:
    kind = type(value)
    if value is None:
        out.append(NULL_DATA)
    elif kind is Typed:
        _encode_typed(out, value.tag, value.value, depth)
    elif kind is bool:
        out += b"\x03\x01" if value else b"\x03\x00"
    elif kind is tuple:
        _encode_typed(out, STRUCTURE, value, depth)
    elif kind is list:
        _encode_typed(out, ARRAY, value, depth)
    elif kind is bytes:
        out.append(OCTET_STRING)
        _put_length(out, len(value))
        out += value
    elif isinstance(value, Enum):
        _encode_typed(out, ENUM, value, depth)
    elif isinstance(value, Bcd):
        _encode_typed(out, BCD, value, depth)
    elif isinstance(value, int):
        raise TypeError(f"bare int {value} is ambiguous: wrap it (u8, i16, u32, ...)")
    elif isinstance(value, DateTimeValue):
        _encode_typed(out, DATE_TIME, value, depth)
    elif isinstance(value, DateValue):
        _encode_typed(out, DATE, value, depth)
    elif isinstance(value, TimeValue):
        _encode_typed(out, TIME, value, depth)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _encode_typed(out, OCTET_STRING, value, depth)
    elif isinstance(value, Utf8):
        _encode_typed(out, UTF8_STRING, value, depth)
    elif isinstance(value, str):
        _encode_typed(out, VISIBLE_STRING, value, depth)
    elif isinstance(value, BitString):
        _encode_typed(out, BIT_STRING, value, depth)
    elif isinstance(value, float):
        # float64 loses nothing; use float32() for the 4-byte type.
        _encode_typed(out, FLOAT64, value, depth)
    elif isinstance(value, (list, tuple)):
        _encode_typed(out, ARRAY if isinstance(value, list) else STRUCTURE, value, depth)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as A-XDR Data")


def encode(value: Any) -> bytes:
    """Encode one value (see the module docstring for the mapping)."""
    out = bytearray()
    _encode_into(out, value, 0)
    return bytes(out)


# ---------------------------------------------------------------------------
# typed constructors


def null() -> Typed:
    return Typed(NULL_DATA, None)


def boolean(v: bool) -> Typed:
    return Typed(BOOLEAN, bool(v))


def i8(v: int) -> Typed:
    return Typed(INTEGER, v)


def i16(v: int) -> Typed:
    return Typed(LONG, v)


def i32(v: int) -> Typed:
    return Typed(DOUBLE_LONG, v)


def i64(v: int) -> Typed:
    return Typed(LONG64, v)


def u8(v: int) -> Typed:
    return Typed(UNSIGNED, v)


def u16(v: int) -> Typed:
    return Typed(LONG_UNSIGNED, v)


def u32(v: int) -> Typed:
    return Typed(DOUBLE_LONG_UNSIGNED, v)


def u64(v: int) -> Typed:
    return Typed(LONG64_UNSIGNED, v)


def enum(v: int) -> Typed:
    return Typed(ENUM, v)


def bcd(v: int) -> Typed:
    return Typed(BCD, v)


def float32(v: float) -> Typed:
    return Typed(FLOAT32, v)


def float64(v: float) -> Typed:
    return Typed(FLOAT64, v)


def octets(b: bytes | bytearray | memoryview) -> Typed:
    return Typed(OCTET_STRING, bytes(b))


def visible(s: str) -> Typed:
    return Typed(VISIBLE_STRING, s)


def utf8(s: str) -> Typed:
    return Typed(UTF8_STRING, s)


def bitstring(bits: str) -> Typed:
    return Typed(BIT_STRING, BitString.from_bits(bits))


def date_time(b: bytes) -> Typed:
    return Typed(DATE_TIME, bytes(b))


def date_value(b: bytes) -> Typed:
    return Typed(DATE, bytes(b))


def time_value(b: bytes) -> Typed:
    return Typed(TIME, bytes(b))


def array(items: Iterable[Any]) -> Typed:
    return Typed(ARRAY, list(items))


def structure(*items: Any) -> Typed:
    return Typed(STRUCTURE, tuple(items))
