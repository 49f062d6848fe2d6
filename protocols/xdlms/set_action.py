"""The SET and ACTION services (normal variants), request and response.

Values and method parameters travel as already-encoded A-XDR, so a meter can answer a
request for a class it does not know (object-undefined) without decoding the value.
"""

from __future__ import annotations

from dataclasses import dataclass

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

_SET_REQUEST = ApduTag.SET_REQUEST.value
_SET_RESPONSE = ApduTag.SET_RESPONSE.value
_ACTION_REQUEST = ApduTag.ACTION_REQUEST.value
_ACTION_RESPONSE = ApduTag.ACTION_RESPONSE.value


@dataclass(slots=True, frozen=True)
class SetRequest:
    invoke_id: int
    class_id: int
    obis: bytes
    attribute: int
    data: bytes
    access: AccessSelection | None = None


@dataclass(slots=True, frozen=True)
class SetResult:
    invoke_id: int
    result: int


@dataclass(slots=True, frozen=True)
class ActionRequest:
    invoke_id: int
    class_id: int
    obis: bytes
    method: int
    data: bytes | None


@dataclass(slots=True, frozen=True)
class ActionResult:
    """ACTION-Response-Normal; ``data_error`` is a return-parameters Data-Access-Result."""

    invoke_id: int
    result: int
    data: bytes | None = None
    data_error: int | None = None


def build_set(
    invoke_id: int,
    class_id: int,
    obis: ObisLike,
    attribute: int,
    data: bytes,
    access: AccessSelection | None = None,
) -> bytes:
    """SET-Request-Normal; ``data`` is the already-encoded A-XDR value."""
    if not data:
        raise ValueError("SET needs an encoded value")
    return (
        bytes((_SET_REQUEST, 0x01, invoke_byte(invoke_id)))
        + encode_descriptor(class_id, obis, attribute)
        + encode_access(access)
        + data
    )


def build_set_response(invoke_id: int, result: int) -> bytes:
    """SET-Response-Normal."""
    return bytes((_SET_RESPONSE, 0x01, invoke_byte(invoke_id), result))


def decode_set_request(data: bytes) -> SetRequest:
    need(data, 14, "SET request")
    if data[1] != 1:
        raise DecodeError(f"SET request type {data[1]} not supported")
    class_id, obis, attribute, pos = read_descriptor(data, 3, "SET request")
    access, pos = read_access(data, pos)
    if pos >= len(data):
        raise DecodeError("SET request: value missing")
    return SetRequest(data[2] & 0x0F, class_id, obis, attribute, data[pos:], access)


def decode_set_response(data: bytes) -> SetResult:
    need(data, 4, "SET response")
    if data[1] != 1:
        raise DecodeError(f"SET response type {data[1]} not supported")
    exact(data, 4, "SET response")
    return SetResult(data[2] & 0x0F, data[3])


def build_action(
    invoke_id: int, class_id: int, obis: ObisLike, method: int, data: bytes | None = None
) -> bytes:
    """ACTION-Request-Normal; ``data`` is the encoded method-invocation-parameters."""
    head = bytes((_ACTION_REQUEST, 0x01, invoke_byte(invoke_id))) + encode_descriptor(
        class_id, obis, method
    )
    if data is None:
        return head + b"\x00"
    if not data:
        raise ValueError("ACTION parameters must be an encoded value or None")
    return head + b"\x01" + data


def build_action_response(invoke_id: int, result: int, data: bytes | None = None) -> bytes:
    """ACTION-Response-Normal with optional return parameters (encoded Data)."""
    head = bytes((_ACTION_RESPONSE, 0x01, invoke_byte(invoke_id), result))
    if data is None:
        return head + b"\x00"
    return head + b"\x01\x00" + data


def decode_action_request(data: bytes) -> ActionRequest:
    need(data, 13, "ACTION request")
    if data[1] != 1:
        raise DecodeError(f"ACTION request type {data[1]} not supported")
    class_id, obis, method, pos = read_descriptor(data, 3, "ACTION request")
    if data[pos] == 0:
        exact(data, pos + 1, "ACTION request")
        parameters = None
    else:
        parameters = data[pos + 1 :]
        if not parameters:
            raise DecodeError("ACTION request: parameters flagged but missing")
    return ActionRequest(data[2] & 0x0F, class_id, obis, method, parameters)


def decode_action_response(data: bytes) -> ActionResult:
    need(data, 5, "ACTION response")
    if data[1] != 1:
        raise DecodeError(f"ACTION response type {data[1]} not supported")
    invoke_id, result = data[2] & 0x0F, data[3]
    if data[4] == 0:
        exact(data, 5, "ACTION response")
        return ActionResult(invoke_id, result)
    need(data, 7, "ACTION response return parameters")
    if data[5] == 0:
        return ActionResult(invoke_id, result, data=data[6:])
    if data[5] == 1:
        exact(data, 7, "ACTION response return parameters")
        return ActionResult(invoke_id, result, data_error=data[6])
    raise DecodeError(f"ACTION response: Get-Data-Result choice {data[5]}")
