"""The GET service: request and response, normal, next (block transfer) and with-list.

The response decoder is the collector's hot path: it slices a few header bytes and hands
the A-XDR value back raw, to be decoded once by ``protocols.axdr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

from protocols.axdr import decode_from, encode_length, read_length
from protocols.enums import ApduTag
from protocols.errors import DecodeError
from protocols.xdlms.descriptors import (
    AccessSelection,
    ObisLike,
    encode_access,
    encode_descriptor,
    exact,
    invoke_byte,
    need,
    read_access,
    read_descriptor,
)

_GET_REQUEST = ApduTag.GET_REQUEST.value
_GET_RESPONSE = ApduTag.GET_RESPONSE.value
#: What a meter may put before a block's data-access-result: a length of 1 (as raw-data
#: has), or the A-XDR enum tag.
_WRAPPED_RESULT = (0x01, 0x16)


@dataclass(slots=True, frozen=True)
class GetRequest:
    invoke_id: int
    class_id: int
    obis: bytes
    attribute: int
    access: AccessSelection | None = None


@dataclass(slots=True, frozen=True)
class GetNextRequest:
    invoke_id: int
    block_number: int


GetListItem: TypeAlias = tuple[int, bytes, int, AccessSelection | None]


@dataclass(slots=True, frozen=True)
class GetListRequest:
    """Items are ``(class_id, obis, attribute, access)``, ready for build_get_with_list."""

    invoke_id: int
    items: list[GetListItem]


@dataclass(slots=True, frozen=True)
class GetResult:
    """GET-Response-Normal with data: ``data`` is the raw A-XDR value."""

    invoke_id: int
    data: bytes


@dataclass(slots=True, frozen=True)
class GetBlock:
    """One GET-Response-With-Datablock carrying raw data (a slice of the encoded value)."""

    invoke_id: int
    block_number: int
    last: bool
    raw: bytes


@dataclass(slots=True, frozen=True)
class GetError:
    """GET answered with a Data-Access-Result (normal, or a datablock ending in error)."""

    invoke_id: int
    result: int


@dataclass(slots=True, frozen=True)
class GetListResult:
    """GET-Response-With-List: raw A-XDR bytes or a Data-Access-Result per item."""

    invoke_id: int
    items: list[bytes | int]


# ---------------------------------------------------------------- client side


def build_get(
    invoke_id: int,
    class_id: int,
    obis: ObisLike,
    attribute: int,
    access: AccessSelection | None = None,
) -> bytes:
    """GET-Request-Normal."""
    return (
        bytes((_GET_REQUEST, 0x01, invoke_byte(invoke_id)))
        + encode_descriptor(class_id, obis, attribute)
        + encode_access(access)
    )


def build_get_next(invoke_id: int, block_number: int) -> bytes:
    """GET-Request-Next, asking for the block after ``block_number``."""
    return bytes((_GET_REQUEST, 0x02, invoke_byte(invoke_id))) + block_number.to_bytes(4, "big")


def build_get_with_list(
    invoke_id: int,
    items: Sequence[tuple[int, ObisLike, int, AccessSelection | None]],
) -> bytes:
    """GET-Request-With-List of ``(class_id, obis, attribute, access)`` items."""
    if not items:
        raise ValueError("GET with list needs at least one item")
    out = bytearray((_GET_REQUEST, 0x03, invoke_byte(invoke_id)))
    out += encode_length(len(items))
    for class_id, obis, attribute, access in items:
        out += encode_descriptor(class_id, obis, attribute)
        out += encode_access(access)
    return bytes(out)


def decode_get_response(data: bytes) -> GetResult | GetBlock | GetError | GetListResult:
    """Hand-parsed on purpose: this is the collector's hot path."""
    n = len(data)
    if n < 4:
        raise DecodeError(f"GET response: {n} bytes, need at least 4")
    kind = data[1]
    invoke_id = data[2] & 0x0F
    if kind == 1:
        choice = data[3]
        if choice == 0:
            if n == 4:
                raise DecodeError("GET response: data choice without a value")
            return GetResult(invoke_id, data[4:])
        if choice == 1:
            if n != 5:
                raise DecodeError(f"GET response error: {n} bytes, expected 5")
            return GetError(invoke_id, data[4])
        raise DecodeError(f"GET response: Get-Data-Result choice {choice}")
    if kind == 2:
        if n < 10:
            raise DecodeError(f"GET response block: {n} bytes, need at least 10")
        block_number = int.from_bytes(data[4:8], "big")
        choice = data[8]
        if choice == 0:
            size, pos = read_length(data, 9, "GET response block raw-data")
            if pos + size != n:
                raise DecodeError(
                    f"GET response block: raw-data length {size} but {n - pos} bytes follow"
                )
            return GetBlock(invoke_id, block_number, data[3] != 0, data[pos:])
        if choice == 1:
            if n == 11 and data[9] in _WRAPPED_RESULT:
                # Some meters encode the data-access-result like raw-data (length 1 first)
                # or as a typed enum: the result is still unambiguous, so report it.
                return GetError(invoke_id, data[10])
            if n != 10:
                raise DecodeError(f"GET response block error: {n} bytes, expected 10")
            return GetError(invoke_id, data[9])
        raise DecodeError(f"GET response block: DataBlock-G choice {choice}")
    if kind == 3:
        return _decode_list_response(data, invoke_id)
    raise DecodeError(f"GET response type {kind} not supported")


def _decode_list_response(data: bytes, invoke_id: int) -> GetListResult:
    n = len(data)
    count, pos = read_length(data, 3, "GET response list")
    if 2 * count > n - pos:
        raise DecodeError(f"GET response list: {count} items cannot fit in {n - pos} bytes")
    items: list[bytes | int] = []
    for _ in range(count):
        if pos + 2 > n:
            raise DecodeError("GET response list: item truncated")
        choice = data[pos]
        if choice == 0:
            _, end = decode_from(data, pos + 1)
            items.append(data[pos + 1 : end])
            pos = end
        elif choice == 1:
            items.append(data[pos + 1])
            pos += 2
        else:
            raise DecodeError(f"GET response list: Get-Data-Result choice {choice}")
    exact(data, pos, "GET response list")
    return GetListResult(invoke_id, items)


# ---------------------------------------------------------------- meter side


def build_get_response(invoke_id: int, data: bytes) -> bytes:
    """GET-Response-Normal with data."""
    return bytes((_GET_RESPONSE, 0x01, invoke_byte(invoke_id), 0x00)) + data


def build_get_response_error(invoke_id: int, result: int) -> bytes:
    """GET-Response-Normal with a Data-Access-Result."""
    return bytes((_GET_RESPONSE, 0x01, invoke_byte(invoke_id), 0x01, result))


def build_get_response_block(invoke_id: int, block_number: int, last: bool, raw: bytes) -> bytes:
    """GET-Response-With-Datablock carrying raw-data."""
    return (
        bytes((_GET_RESPONSE, 0x02, invoke_byte(invoke_id), 0x01 if last else 0x00))
        + block_number.to_bytes(4, "big")
        + b"\x00"
        + encode_length(len(raw))
        + raw
    )


def build_get_response_block_error(invoke_id: int, block_number: int, result: int) -> bytes:
    """Last GET-Response-With-Datablock carrying a Data-Access-Result (aborts the read)."""
    return (
        bytes((_GET_RESPONSE, 0x02, invoke_byte(invoke_id), 0x01))
        + block_number.to_bytes(4, "big")
        + bytes((0x01, result))
    )


def build_get_list_response(invoke_id: int, items: Sequence[bytes | int]) -> bytes:
    """GET-Response-With-List: encoded values (bytes) or Data-Access-Results (int)."""
    out = bytearray((_GET_RESPONSE, 0x03, invoke_byte(invoke_id)))
    out += encode_length(len(items))
    for item in items:
        if isinstance(item, int):
            out += bytes((0x01, item))
        else:
            out.append(0x00)
            out += item
    return bytes(out)


def decode_get_request(data: bytes) -> GetRequest | GetNextRequest | GetListRequest:
    need(data, 4, "GET request")
    kind = data[1]
    invoke_id = data[2] & 0x0F
    if kind == 1:
        class_id, obis, attribute, pos = read_descriptor(data, 3, "GET request")
        access, pos = read_access(data, pos)
        exact(data, pos, "GET request")
        return GetRequest(invoke_id, class_id, obis, attribute, access)
    if kind == 2:
        need(data, 7, "GET request next")
        exact(data, 7, "GET request next")
        return GetNextRequest(invoke_id, int.from_bytes(data[3:7], "big"))
    if kind == 3:
        count, pos = read_length(data, 3, "GET request list")
        if count == 0:
            raise DecodeError("GET request list: no items")
        if 10 * count > len(data) - pos:
            raise DecodeError(f"GET request list: {count} items cannot fit")
        items: list[GetListItem] = []
        for _ in range(count):
            class_id, obis, attribute, pos = read_descriptor(data, pos, "GET request list")
            access, pos = read_access(data, pos)
            items.append((class_id, obis, attribute, access))
        exact(data, pos, "GET request list")
        return GetListRequest(invoke_id, items)
    raise DecodeError(f"GET request type {kind} not supported")
