"""Short-name referencing (SN): the xDLMS Read and Write services, both directions.

An SN meter names every attribute and method by a 16-bit short name: an object's base name
plus 8 per attribute after the first (``short_name(base, attribute)``). The APDUs (Green
Book, xDLMS ASN.1) carry no invoke id and no COSEM descriptor, only lists:

* ReadRequest ``[5]``: SEQUENCE OF Variable-Access-Specification, each a variable-name
  ``[2]`` (the short name, Unsigned16) or a parameterized-access ``[4]`` (short name,
  selector, parameter Data: the same selectors as LN selective access, 1 by range and 2 by
  entry);
* ReadResponse ``[12]``: SEQUENCE OF CHOICE data ``[0]`` Data / data-access-error ``[1]``;
* WriteRequest ``[6]``: SEQUENCE OF variable-name, then SEQUENCE OF Data, as many;
* WriteResponse ``[13]``: SEQUENCE OF CHOICE success ``[0]`` / data-access-error ``[1]``.

Several references in one request need multiple-references in the conformance. A value too
big for the client's PDU comes in blocks (block-transfer-with-get-or-read): a ReadResponse
data-block-result ``[2]`` (last-block BOOLEAN, block-number Unsigned16, raw-data OCTET
STRING), and the client asks for the next with a ReadRequest of one block-number-access
``[5]`` carrying the number of the block it received (:class:`ReadBlock`,
:class:`ReadNextRequest`). Block transfer of writes is not implemented: a decoder meeting it
raises DecodeError naming the choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from protocols.axdr import decode_from, encode_length, read_length
from protocols.enums import ApduTag, InterfaceClass
from protocols.errors import DecodeError
from protocols.xdlms.descriptors import (
    AccessSelection,
    encode_selection,
    exact,
    need,
    read_selection,
)

#: Variable-Access-Specification choices.
VARIABLE_NAME = 2
PARAMETERIZED_ACCESS = 4
BLOCK_NUMBER_ACCESS = 5
#: Read-Data-Result / Write-Response choices.
RESULT_DATA = 0
RESULT_ERROR = 1
RESULT_BLOCK = 2
#: The short name of the current Association SN object (class 12), Blue Book.
ASSOCIATION_SN_BASE = 0xFA00
#: Short names go up by 8 per attribute (and per method after the class's method offset).
NAME_STEP = 8

#: Where each class's methods start after the base name, and how many it has: method m of
#: the object at x is x + offset + (m - 1) * 8 (Blue Book; Gurux's getActionInfo table).
#: A method is invoked by writing its parameter to its short name.
METHOD_OFFSETS: dict[int, tuple[int, int]] = {
    InterfaceClass.REGISTER: (0x28, 1),
    InterfaceClass.PROFILE_GENERIC: (0x58, 4),
    InterfaceClass.CLOCK: (0x60, 6),
    InterfaceClass.ASSOCIATION_SN: (0x20, 8),
    InterfaceClass.DISCONNECT_CONTROL: (0x20, 2),
    InterfaceClass.PUSH_SETUP: (0x38, 1),
}

#: One reference: a short name and, for a parameterized access, its selection.
Reference: TypeAlias = tuple[int, AccessSelection | None]


@dataclass(slots=True, frozen=True)
class ReadRequest:
    references: list[Reference]


@dataclass(slots=True, frozen=True)
class ReadNextRequest:
    """A ReadRequest of one block-number-access: the block received, send the next."""

    block_number: int


@dataclass(slots=True, frozen=True)
class ReadBlock:
    """A ReadResponse of one data-block-result: a slice of the encoded value."""

    last: bool
    block_number: int
    raw: bytes


@dataclass(slots=True, frozen=True)
class ReadResponse:
    """Per reference the raw A-XDR value (bytes) or a Data-Access-Result (int)."""

    items: list[bytes | int]


@dataclass(slots=True, frozen=True)
class WriteRequest:
    """``(short name, raw A-XDR value)`` pairs."""

    items: list[tuple[int, bytes]]


@dataclass(slots=True, frozen=True)
class WriteResponse:
    """A Data-Access-Result per item, 0 for success."""

    results: list[int]


def short_name(base_name: int, attribute: int) -> int:
    """The short name of ``attribute`` (1-based) of the object at ``base_name``."""
    if attribute < 1:
        raise ValueError(f"attribute {attribute} must be 1 or more")
    name = base_name + (attribute - 1) * NAME_STEP
    _check_name(name)
    return name


def method_short_name(base_name: int, class_id: int, method: int) -> int:
    """The short name of ``method`` (1-based) of a class-``class_id`` object at ``base_name``."""
    offset, count = METHOD_OFFSETS.get(class_id, (0, 0))
    if not 1 <= method <= count:
        raise ValueError(
            f"class {class_id} has no method {method} over short names ({count} known)"
        )
    name = base_name + offset + (method - 1) * NAME_STEP
    _check_name(name)
    return name


def _check_name(name: int) -> None:
    if not 0 <= name <= 0xFFFF:
        raise ValueError(f"short name 0x{name:X} outside 0..0xFFFF")


def _count(data: bytes, pos: int, per_item: int, what: str) -> tuple[int, int]:
    count, pos = read_length(data, pos, what)
    if count == 0:
        raise DecodeError(f"{what}: no items")
    if count * per_item > len(data) - pos:
        raise DecodeError(f"{what}: {count} items cannot fit in {len(data) - pos} bytes")
    return count, pos


def _name(data: bytes, pos: int, what: str) -> int:
    if pos + 2 > len(data):
        raise DecodeError(f"{what}: short name truncated")
    return (data[pos] << 8) | data[pos + 1]


def _value(data: bytes, pos: int) -> tuple[bytes, int]:
    _, end = decode_from(data, pos)
    return data[pos:end], end


def _results(items: Sequence[bytes | int], tag: int) -> bytes:
    out = bytearray((tag,))
    out += encode_length(len(items))
    for item in items:
        if isinstance(item, int):
            if not 0 <= item <= 0xFF:
                raise ValueError(f"data-access-result {item} outside 0..255")
            out += bytes((RESULT_ERROR, item))
        else:
            out.append(RESULT_DATA)
            out += item
    return bytes(out)


# ---------------------------------------------------------------- Read


def build_read_request(references: Sequence[Reference]) -> bytes:
    """ReadRequest of short names, each plain or with a parameterized access."""
    if not references:
        raise ValueError("a ReadRequest needs at least one reference")
    out = bytearray((ApduTag.READ_REQUEST,))
    out += encode_length(len(references))
    for name, access in references:
        _check_name(name)
        if access is None:
            out.append(VARIABLE_NAME)
            out += name.to_bytes(2, "big")
        else:
            out.append(PARAMETERIZED_ACCESS)
            out += name.to_bytes(2, "big")
            out += encode_selection(access)
    return bytes(out)


def build_read_next(block_number: int) -> bytes:
    """ReadRequest block-number-access: ``block_number`` came, send the one after it."""
    if not 0 <= block_number <= 0xFFFF:
        raise ValueError(f"block number {block_number} outside 0..65535")
    return bytes((ApduTag.READ_REQUEST, 1, BLOCK_NUMBER_ACCESS)) + block_number.to_bytes(2, "big")


def decode_read_request(data: bytes) -> ReadRequest | ReadNextRequest:
    what = "ReadRequest"
    need(data, 2, what)
    if len(data) == 5 and data[1] == 1 and data[2] == BLOCK_NUMBER_ACCESS:
        return ReadNextRequest(_name(data, 3, what))
    count, pos = _count(data, 1, 3, what)
    references: list[Reference] = []
    for _ in range(count):
        if pos >= len(data):
            raise DecodeError(f"{what}: reference truncated")
        choice = data[pos]
        name = _name(data, pos + 1, what)
        if choice == VARIABLE_NAME:
            references.append((name, None))
            pos += 3
        elif choice == PARAMETERIZED_ACCESS:
            access, pos = read_selection(data, pos + 3)
            references.append((name, access))
        else:
            raise DecodeError(f"{what}: variable-access-specification choice {choice}")
    exact(data, pos, what)
    return ReadRequest(references)


def build_read_response(items: Sequence[bytes | int]) -> bytes:
    """ReadResponse: encoded values (bytes) or Data-Access-Results (int), in request order."""
    if not items:
        raise ValueError("a ReadResponse needs at least one result")
    return _results(items, ApduTag.READ_RESPONSE)


def build_read_response_block(last: bool, block_number: int, raw: bytes) -> bytes:
    """ReadResponse data-block-result carrying raw-data (a slice of the encoded value)."""
    if not 0 <= block_number <= 0xFFFF:
        raise ValueError(f"block number {block_number} outside 0..65535")
    return (
        bytes((ApduTag.READ_RESPONSE, 1, RESULT_BLOCK, 1 if last else 0))
        + block_number.to_bytes(2, "big")
        + encode_length(len(raw))
        + raw
    )


def decode_read_response(data: bytes) -> ReadResponse | ReadBlock:
    what = "ReadResponse"
    need(data, 3, what)
    if data[1] == 1 and data[2] == RESULT_BLOCK:
        need(data, 7, f"{what} data-block-result")
        size, pos = read_length(data, 6, f"{what} raw-data")
        if pos + size != len(data):
            raise DecodeError(
                f"{what} data-block-result: raw-data length {size} but {len(data) - pos} follow"
            )
        return ReadBlock(data[3] != 0, _name(data, 4, what), data[pos:])
    count, pos = _count(data, 1, 2, what)
    items: list[bytes | int] = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise DecodeError(f"{what}: result truncated")
        choice = data[pos]
        if choice == RESULT_DATA:
            value, pos = _value(data, pos + 1)
            items.append(value)
        elif choice == RESULT_ERROR:
            items.append(data[pos + 1])
            pos += 2
        else:
            raise DecodeError(f"{what}: read-data-result choice {choice} not supported")
    exact(data, pos, what)
    return ReadResponse(items)


# ---------------------------------------------------------------- Write


def build_write_request(items: Sequence[tuple[int, bytes]]) -> bytes:
    """WriteRequest: the short names, then their encoded values in the same order."""
    if not items:
        raise ValueError("a WriteRequest needs at least one item")
    out = bytearray((ApduTag.WRITE_REQUEST,))
    out += encode_length(len(items))
    for name, _ in items:
        _check_name(name)
        out.append(VARIABLE_NAME)
        out += name.to_bytes(2, "big")
    out += encode_length(len(items))
    for _, value in items:
        out += value
    return bytes(out)


def decode_write_request(data: bytes) -> WriteRequest:
    what = "WriteRequest"
    need(data, 2, what)
    count, pos = _count(data, 1, 3, what)
    names: list[int] = []
    for _ in range(count):
        if pos >= len(data):
            raise DecodeError(f"{what}: reference truncated")
        if data[pos] != VARIABLE_NAME:
            raise DecodeError(f"{what}: variable-access-specification choice {data[pos]}")
        names.append(_name(data, pos + 1, what))
        pos += 3
    values, pos = read_length(data, pos, f"{what} data")
    if values != count:
        raise DecodeError(f"{what}: {count} names but {values} values")
    items: list[tuple[int, bytes]] = []
    for name in names:
        value, pos = _value(data, pos)
        items.append((name, value))
    exact(data, pos, what)
    return WriteRequest(items)


def build_write_response(results: Sequence[int]) -> bytes:
    """WriteResponse: success (0) or the Data-Access-Result per item."""
    if not results:
        raise ValueError("a WriteResponse needs at least one result")
    out = bytearray((ApduTag.WRITE_RESPONSE,))
    out += encode_length(len(results))
    for result in results:
        if result == 0:
            out.append(RESULT_DATA)
        elif 0 < result <= 0xFF:
            out += bytes((RESULT_ERROR, result))
        else:
            raise ValueError(f"data-access-result {result} outside 0..255")
    return bytes(out)


def decode_write_response(data: bytes) -> WriteResponse:
    what = "WriteResponse"
    need(data, 3, what)
    count, pos = _count(data, 1, 1, what)
    results: list[int] = []
    for _ in range(count):
        if pos >= len(data):
            raise DecodeError(f"{what}: result truncated")
        choice = data[pos]
        if choice == RESULT_DATA:
            results.append(0)
            pos += 1
        elif choice == RESULT_ERROR:
            if pos + 2 > len(data):
                raise DecodeError(f"{what}: data-access-error truncated")
            results.append(data[pos + 1])
            pos += 2
        else:
            raise DecodeError(f"{what}: write result choice {choice} not supported")
    exact(data, pos, what)
    return WriteResponse(results)


# ---------------------------------------------------------------- object list

#: Attribute 2 of the current Association SN object: its object_list.
OBJECT_LIST_NAME = ASSOCIATION_SN_BASE + NAME_STEP


class ObjectList:
    """An SN meter's object_list: (class id, logical name) → base name.

    Built from the decoded value of the Association SN's attribute 2, an array of
    ``{base_name long, class_id long-unsigned, version unsigned, logical_name octets}``.
    """

    __slots__ = ("_bases",)

    def __init__(self, bases: dict[tuple[int, bytes], int]) -> None:
        self._bases = bases

    @classmethod
    def from_value(cls, value: object) -> ObjectList:
        """Parse the decoded object_list; DecodeError names the element that is wrong."""
        if not isinstance(value, list | tuple):
            raise DecodeError(f"SN object_list: expected an array, got {type(value).__name__}")
        bases: dict[tuple[int, bytes], int] = {}
        for index, element in enumerate(value):
            if not isinstance(element, list | tuple) or len(element) != 4:
                raise DecodeError(f"SN object_list element {index}: not a structure of 4")
            base, class_id, _, ln = element
            if not isinstance(base, int) or not isinstance(class_id, int):
                raise DecodeError(f"SN object_list element {index}: base name or class not int")
            if not isinstance(ln, bytes) or len(ln) != 6:
                raise DecodeError(f"SN object_list element {index}: logical name not 6 octets")
            bases[(class_id, bytes(ln))] = base & 0xFFFF
        return cls(bases)

    def __len__(self) -> int:
        return len(self._bases)

    def base_name(self, class_id: int, obis: bytes) -> int | None:
        return self._bases.get((class_id, bytes(obis)))

    def method_name(self, class_id: int, obis: bytes, method: int) -> int | None:
        """The short name of a method, None when the object is not in the list."""
        base = self.base_name(class_id, obis)
        return None if base is None else method_short_name(base, class_id, method)

    def short_name(self, class_id: int, obis: bytes, attribute: int) -> int | None:
        """The short name of an attribute, or None when the object is not in the list."""
        base = self.base_name(class_id, obis)
        return None if base is None else short_name(base, attribute)
