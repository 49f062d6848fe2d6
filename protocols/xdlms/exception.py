"""The two ways a server refuses a request outright: ExceptionResponse and
ConfirmedServiceError (Green Book). Codes outside the enums are kept as plain ints, so a
meter's unexpected code still reaches the log instead of failing the decode.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.enums import ApduTag, ServiceErrorCode
from protocols.xdlms.descriptors import exact, need

_EXCEPTION = ApduTag.EXCEPTION_RESPONSE.value
_SERVICE_ERROR = ApduTag.CONFIRMED_SERVICE_ERROR.value


@dataclass(slots=True, frozen=True)
class ExceptionResult:
    """ExceptionResponse: state-error and service-error (invocation counter for error 6)."""

    state_error: int
    service_error: int
    invocation_counter: int | None = None


@dataclass(slots=True, frozen=True)
class ServiceErrorResult:
    """ConfirmedServiceError: which service, which ServiceError choice, which code."""

    service: int
    error_type: int
    error_code: int


def build_exception_response(
    state_error: int, service_error: int, invocation_counter: int | None = None
) -> bytes:
    """ExceptionResponse; invocation-counter-error carries the counter the server expects."""
    head = bytes((_EXCEPTION, state_error, service_error))
    if invocation_counter is None:
        return head
    return head + invocation_counter.to_bytes(4, "big")


def decode_exception(data: bytes) -> ExceptionResult:
    need(data, 3, "ExceptionResponse")
    if len(data) == 7 and data[2] == ServiceErrorCode.INVOCATION_COUNTER_ERROR:
        return ExceptionResult(data[1], data[2], int.from_bytes(data[3:7], "big"))
    exact(data, 3, "ExceptionResponse")
    return ExceptionResult(data[1], data[2])


def build_service_error(service: int, error_type: int, error_code: int) -> bytes:
    """ConfirmedServiceError of one byte per field (as every service error codes)."""
    for name, value in (("service", service), ("error type", error_type), ("code", error_code)):
        if not 0 <= value <= 0xFF:
            raise ValueError(f"ConfirmedServiceError {name} {value} outside 0..255")
    return bytes((_SERVICE_ERROR, service, error_type, error_code))


def decode_service_error(data: bytes) -> ServiceErrorResult:
    need(data, 4, "ConfirmedServiceError")
    exact(data, 4, "ConfirmedServiceError")
    return ServiceErrorResult(data[1], data[2], data[3])
