"""The fields every xDLMS service shares: invoke-id, COSEM descriptors, selective access.

Invoke-Id-And-Priority (Green Book): bits 0-3 invoke id, bit 6 service class (1 =
confirmed), bit 7 priority (1 = high). Builders send ``0xC0 | invoke_id`` (confirmed, high
priority) as dlms-cosem and Gurux do; decoders keep bits 0-3. Attribute and method ids are
coded as their raw byte (0..255). The range descriptor keeps the 12-byte COSEM date-times
as bytes, so unspecified fields and the clock status survive a round trip.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from protocols.axdr import encode_length, read_length
from protocols.errors import DecodeError

CONFIRMED_HIGH = 0xC0
_COLUMN = struct.Struct(">BBBHBB6sBBBH")  # 02 04 12 cid 09 06 obis 0F attr 12 index
_ENTRY = struct.Struct(">BBBIBIBHBH")  # 02 04 06 u32 06 u32 12 u16 12 u16


class ColumnLike(Protocol):
    """Anything shaped like a capture-object definition (e.g. ``cosem.ProfileColumn``)."""

    @property
    def class_id(self) -> int: ...

    @property
    def obis(self) -> Sequence[int]: ...

    @property
    def attribute(self) -> int: ...

    @property
    def data_index(self) -> int: ...


@dataclass(slots=True, frozen=True)
class ColumnRef:
    """A capture-object definition as decoded from a range descriptor."""

    class_id: int
    obis: bytes
    attribute: int
    data_index: int = 0


@dataclass(slots=True, frozen=True)
class RangeAccess:
    """Selective access by range (selector 1): rows whose restricting value is in range.

    ``from_value``/``to_value`` are the 12-byte COSEM date-times, sent as octet-strings.
    An empty ``selected_columns`` asks for every column.
    """

    restricting: ColumnLike
    from_value: bytes
    to_value: bytes
    selected_columns: Sequence[ColumnLike] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class EntryAccess:
    """Selective access by entry (selector 2); numbering from 1, 0 = up to the last."""

    from_entry: int
    to_entry: int = 0
    from_column: int = 1
    to_column: int = 0


AccessSelection: TypeAlias = RangeAccess | EntryAccess
ObisLike: TypeAlias = bytes | Sequence[int]


# ---------------------------------------------------------------- encoding


def invoke_byte(invoke_id: int) -> int:
    """Invoke-Id-And-Priority for a confirmed, high-priority request."""
    if not 0 <= invoke_id <= 15:
        raise ValueError(f"invoke id {invoke_id} outside 0..15")
    return CONFIRMED_HIGH | invoke_id


def obis_bytes(obis: ObisLike) -> bytes:
    raw = obis if isinstance(obis, bytes) else bytes(obis)
    if len(raw) != 6:
        raise ValueError(f"OBIS code must be 6 bytes, got {len(raw)}")
    return raw


def encode_descriptor(class_id: int, obis: ObisLike, member: int) -> bytes:
    """Cosem-Attribute-Descriptor / Cosem-Method-Descriptor: u16 class, 6-byte OBIS, id."""
    if not 0 <= member <= 0xFF:
        raise ValueError(f"attribute/method id {member} outside 0..255")
    return class_id.to_bytes(2, "big") + obis_bytes(obis) + bytes((member,))


def _column(col: ColumnLike) -> bytes:
    return _COLUMN.pack(
        0x02,
        0x04,
        0x12,
        col.class_id,
        0x09,
        0x06,
        obis_bytes(col.obis),
        0x0F,
        col.attribute,
        0x12,
        col.data_index,
    )


def encode_access(access: AccessSelection | None) -> bytes:
    """Optional Selective-Access-Descriptor (presence flag included)."""
    if access is None:
        return b"\x00"
    return b"\x01" + encode_selection(access)


def encode_selection(access: AccessSelection) -> bytes:
    """Access selector and its parameters: LN selective access and SN parameterized access."""
    if isinstance(access, EntryAccess):
        return b"\x02" + _ENTRY.pack(
            0x02,
            0x04,
            0x06,
            access.from_entry,
            0x06,
            access.to_entry,
            0x12,
            access.from_column,
            0x12,
            access.to_column,
        )
    out = bytearray(b"\x01\x02\x04")
    out += _column(access.restricting)
    for value in (access.from_value, access.to_value):
        out.append(0x09)
        out += encode_length(len(value))
        out += value
    out.append(0x01)
    out += encode_length(len(access.selected_columns))
    for col in access.selected_columns:
        out += _column(col)
    return bytes(out)


# ---------------------------------------------------------------- decoding


def need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise DecodeError(f"{what}: {len(data)} bytes, need at least {size}")


def exact(data: bytes, pos: int, what: str) -> None:
    if pos != len(data):
        raise DecodeError(f"{what}: {len(data) - pos} unexpected trailing bytes")


def _read_column(data: bytes, pos: int) -> tuple[ColumnRef, int]:
    end = pos + _COLUMN.size
    if end > len(data):
        raise DecodeError("capture object definition truncated")
    s1, n1, t1, class_id, t2, n2, obis, t3, attribute, t4, index = _COLUMN.unpack_from(data, pos)
    if (s1, n1, t1, t2, n2, t3, t4) != (0x02, 0x04, 0x12, 0x09, 0x06, 0x0F, 0x12):
        raise DecodeError("capture object definition is not structure{u16, octets(6), i8, u16}")
    return ColumnRef(class_id, obis, attribute, index), end


def _read_stamp(data: bytes, pos: int) -> tuple[bytes, int]:
    """A range bound: octet-string (Green Book) or date-time tag 25 (seen in the field)."""
    if pos >= len(data):
        raise DecodeError("range descriptor: bound missing")
    tag = data[pos]
    if tag == 0x19:
        start, end = pos + 1, pos + 13
    elif tag == 0x09:
        size, start = read_length(data, pos + 1, "range bound")
        end = start + size
    else:
        raise DecodeError(f"range descriptor: bound has type tag {tag}, not an octet-string")
    if end > len(data):
        raise DecodeError("range descriptor: bound truncated")
    return data[start:end], end


def read_access(data: bytes, pos: int) -> tuple[AccessSelection | None, int]:
    """Optional Selective-Access-Descriptor (presence flag included)."""
    if pos >= len(data):
        raise DecodeError("access-selection flag missing")
    if data[pos] == 0:
        return None, pos + 1
    return read_selection(data, pos + 1)


def read_selection(data: bytes, pos: int) -> tuple[AccessSelection, int]:
    """Access selector and its parameters (no presence flag), as ``encode_selection`` writes."""
    if pos >= len(data):
        raise DecodeError("access selector missing")
    selector = data[pos]
    if selector == 2:
        end = pos + 1 + _ENTRY.size
        if end > len(data):
            raise DecodeError("entry descriptor truncated")
        s, n, t1, from_entry, t2, to_entry, t3, from_col, t4, to_col = _ENTRY.unpack_from(
            data, pos + 1
        )
        if (s, n, t1, t2, t3, t4) != (0x02, 0x04, 0x06, 0x06, 0x12, 0x12):
            raise DecodeError("entry descriptor is not structure{u32, u32, u16, u16}")
        return EntryAccess(from_entry, to_entry, from_col, to_col), end
    if selector != 1:
        raise DecodeError(f"unsupported access selector {selector}")
    if data[pos + 1 : pos + 3] != b"\x02\x04":
        raise DecodeError("range descriptor is not a structure of 4")
    restricting, pos = _read_column(data, pos + 3)
    from_value, pos = _read_stamp(data, pos)
    to_value, pos = _read_stamp(data, pos)
    if pos >= len(data) or data[pos] != 0x01:
        raise DecodeError("range descriptor: selected values is not an array")
    count, pos = read_length(data, pos + 1, "selected values")
    if count * _COLUMN.size > len(data) - pos:
        raise DecodeError(f"range descriptor: {count} selected values do not fit")
    columns: list[ColumnLike] = []
    for _ in range(count):
        column, pos = _read_column(data, pos)
        columns.append(column)
    return RangeAccess(restricting, from_value, to_value, columns), pos


def read_descriptor(data: bytes, pos: int, what: str) -> tuple[int, bytes, int, int]:
    """Class id, OBIS, attribute/method id and the position after the descriptor."""
    end = pos + 9
    if end > len(data):
        raise DecodeError(f"{what}: COSEM descriptor truncated")
    return (data[pos] << 8) | data[pos + 1], data[pos + 2 : pos + 8], data[pos + 8], end
