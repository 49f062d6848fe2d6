"""One entry point per direction: the APDU a client receives, the APDU a meter receives.

The first byte picks the service module; every failure comes out as a DecodeError that
names the APDU, so a malformed frame never escapes as an IndexError from deep inside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, TypeVar

from protocols.enums import ApduTag
from protocols.errors import DecodeError
from protocols.xdlms.acse import (
    AareInfo,
    AarqInfo,
    ReleaseRequest,
    ReleaseResponse,
    decode_aare,
    decode_aarq,
    decode_rlre,
    decode_rlrq,
)
from protocols.xdlms.exception import (
    ExceptionResult,
    ServiceErrorResult,
    decode_exception,
    decode_service_error,
)
from protocols.xdlms.get import (
    GetBlock,
    GetError,
    GetListRequest,
    GetListResult,
    GetNextRequest,
    GetRequest,
    GetResult,
    decode_get_request,
    decode_get_response,
)
from protocols.xdlms.notification import DataNotification, decode_data_notification
from protocols.xdlms.set_action import (
    ActionRequest,
    ActionResult,
    SetRequest,
    SetResult,
    decode_action_request,
    decode_action_response,
    decode_set_request,
    decode_set_response,
)
from protocols.xdlms.sn import (
    ReadBlock,
    ReadNextRequest,
    ReadRequest,
    ReadResponse,
    WriteRequest,
    WriteResponse,
    decode_read_request,
    decode_read_response,
    decode_write_request,
    decode_write_response,
)

Response: TypeAlias = (
    GetResult
    | GetBlock
    | GetError
    | GetListResult
    | SetResult
    | ActionResult
    | ExceptionResult
    | ServiceErrorResult
    | AareInfo
    | ReleaseResponse
    | DataNotification
    | ReadResponse
    | ReadBlock
    | WriteResponse
)
Request: TypeAlias = (
    AarqInfo
    | GetRequest
    | GetNextRequest
    | GetListRequest
    | SetRequest
    | ActionRequest
    | ReleaseRequest
    | ReadRequest
    | ReadNextRequest
    | WriteRequest
)
_T = TypeVar("_T")

_RESPONSE_DECODERS: dict[int, tuple[str, Callable[[bytes], Response]]] = {
    ApduTag.GET_RESPONSE: ("GET response", decode_get_response),
    ApduTag.SET_RESPONSE: ("SET response", decode_set_response),
    ApduTag.ACTION_RESPONSE: ("ACTION response", decode_action_response),
    ApduTag.EXCEPTION_RESPONSE: ("ExceptionResponse", decode_exception),
    ApduTag.CONFIRMED_SERVICE_ERROR: ("ConfirmedServiceError", decode_service_error),
    ApduTag.DATA_NOTIFICATION: ("DataNotification", decode_data_notification),
    ApduTag.AARE: ("AARE", decode_aare),
    ApduTag.RLRE: ("RLRE", decode_rlre),
    ApduTag.READ_RESPONSE: ("ReadResponse", decode_read_response),
    ApduTag.WRITE_RESPONSE: ("WriteResponse", decode_write_response),
}
_REQUEST_DECODERS: dict[int, tuple[str, Callable[[bytes], Request]]] = {
    ApduTag.GET_REQUEST: ("GET request", decode_get_request),
    ApduTag.SET_REQUEST: ("SET request", decode_set_request),
    ApduTag.ACTION_REQUEST: ("ACTION request", decode_action_request),
    ApduTag.AARQ: ("AARQ", decode_aarq),
    ApduTag.RLRQ: ("RLRQ", decode_rlrq),
    ApduTag.READ_REQUEST: ("ReadRequest", decode_read_request),
    ApduTag.WRITE_REQUEST: ("WriteRequest", decode_write_request),
}
_AARE_ONLY: dict[int, tuple[str, Callable[[bytes], AareInfo]]] = {
    ApduTag.AARE: ("AARE", decode_aare)
}


def _dispatch(
    data: bytes | bytearray | memoryview,
    table: dict[int, tuple[str, Callable[[bytes], _T]]],
    side: str,
) -> _T:
    raw = data if type(data) is bytes else bytes(data)
    if not raw:
        raise DecodeError(f"empty {side} APDU")
    entry = table.get(raw[0])
    if entry is None:
        raise DecodeError(f"unknown {side} APDU tag 0x{raw[0]:02X}")
    name, decoder = entry
    try:
        return decoder(raw)
    except DecodeError:
        raise
    except (IndexError, ValueError) as exc:
        raise DecodeError(f"malformed {name}: {exc}") from exc


def decode_response(data: bytes | bytearray | memoryview) -> Response:
    """Decode an APDU a meter sent to the client."""
    return _dispatch(data, _RESPONSE_DECODERS, "response")


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    """Decode an APDU a client sent to the meter."""
    return _dispatch(data, _REQUEST_DECODERS, "request")


def parse_aare(data: bytes | bytearray | memoryview) -> AareInfo:
    """Decode an AARE (DecodeError for anything else)."""
    raw = bytes(data)
    if not raw or raw[0] != ApduTag.AARE:
        raise DecodeError("not an AARE (tag 0x61)")
    return _dispatch(raw, _AARE_ONLY, "AARE")
