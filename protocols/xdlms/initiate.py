"""The xDLMS InitiateRequest / InitiateResponse carried in the AARQ/AARE user-information.

Both are A-XDR (Green Book): the request holds dedicated-key, response-allowed and
quality-of-service (each flagged optional), the DLMS version, the conformance block as
``5F 1F 04 00`` + 3 bytes (APPLICATION 31 BIT STRING SIZE 24) and the max receive PDU size;
the response adds the VAA name (``00 07`` for LN, ``FA 00`` for SN: the base name of the
current Association SN object). The whole 24-bit conformance is kept,
bits 16-23 (general-protection, general-block-transfer, delta-value-encoding) included.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.enums import (
    LN_CONFORMANCE_MASK,
    SN_CONFORMANCE_MASK,
    ApduTag,
    ConfirmedService,
    Conformance,
    ServiceErrorChoice,
)
from protocols.errors import DecodeError
from protocols.xdlms.exception import build_service_error

#: LN client proposal: get, set, action, selective-access, multiple-references and block
#: transfer with get/set/action (Blue Book bit n is ``1 << (23 - n)``).
DEFAULT_CONFORMANCE = 0x001E1D
#: SN client proposal: read, write, parameterized-access, multiple-references and
#: block-transfer-with-get-or-read.
SN_DEFAULT_CONFORMANCE = (
    Conformance.READ
    | Conformance.WRITE
    | Conformance.PARAMETERIZED_ACCESS
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.BLOCK_TRANSFER_WITH_GET
).value
#: The VAA name of an LN association (the Green Book's 0x0007).
VAA_NAME_LN = 0x0007
#: The VAA name of an SN association: the current Association SN object's base name.
VAA_NAME_SN = 0xFA00
_CONFORMANCE_HEAD = b"\x5f\x1f\x04\x00"


@dataclass(slots=True, frozen=True)
class InitiateInfo:
    """A plain InitiateRequest or InitiateResponse."""

    conformance: int
    max_pdu_size: int
    dlms_version: int
    dedicated_key: bytes | None = None
    #: The InitiateResponse's VAA name (0x0007 LN, 0xFA00 SN); None in a request.
    vaa_name: int | None = None


def check_conformance(conformance: int, short_names: bool = False) -> int:
    """The conformance if it is a 24-bit LN (or SN) block, else ValueError."""
    mask, kind = (SN_CONFORMANCE_MASK, "SN") if short_names else (LN_CONFORMANCE_MASK, "LN")
    if not 0 <= conformance <= 0xFFFFFF or conformance & ~mask:
        raise ValueError(
            f"conformance 0x{conformance:06X} has bits outside the {kind} conformance block "
            f"(mask 0x{mask:06X})"
        )
    return conformance


def _check_pdu(max_pdu_size: int) -> None:
    if not 0 <= max_pdu_size <= 0xFFFF:
        raise ValueError(f"max PDU size {max_pdu_size} outside 0..65535")


def build_initiate_request(
    *,
    conformance: int | None = None,
    max_pdu_size: int = 0xFFFF,
    dlms_version: int = 6,
    dedicated_key: bytes | None = None,
    short_names: bool = False,
) -> bytes:
    """InitiateRequest: response-allowed and quality-of-service left at their defaults."""
    _check_pdu(max_pdu_size)
    default = SN_DEFAULT_CONFORMANCE if short_names else DEFAULT_CONFORMANCE
    block = check_conformance(default if conformance is None else conformance, short_names)
    out = bytearray((ApduTag.INITIATE_REQUEST,))
    if dedicated_key is None:
        out.append(0x00)
    else:
        if not 0 < len(dedicated_key) < 0x80:
            raise ValueError("dedicated key must be 1..127 bytes")
        out += bytes((0x01, len(dedicated_key))) + dedicated_key
    out += bytes((0x00, 0x00, dlms_version)) + _CONFORMANCE_HEAD
    out += block.to_bytes(3, "big") + max_pdu_size.to_bytes(2, "big")
    return bytes(out)


def build_initiate_response(
    *, conformance: int, max_pdu_size: int, dlms_version: int = 6, short_names: bool = False
) -> bytes:
    """InitiateResponse without quality-of-service, VAA name 0x0007 (LN) or 0xFA00 (SN)."""
    _check_pdu(max_pdu_size)
    block = check_conformance(conformance, short_names)
    vaa = VAA_NAME_SN if short_names else VAA_NAME_LN
    return (
        bytes((ApduTag.INITIATE_RESPONSE, 0x00, dlms_version))
        + _CONFORMANCE_HEAD
        + block.to_bytes(3, "big")
        + max_pdu_size.to_bytes(2, "big")
        + vaa.to_bytes(2, "big")
    )


def build_initiate_error(code: int, choice: int = ServiceErrorChoice.INITIATE) -> bytes:
    """ConfirmedServiceError initiateError: what an AARE carries for a refused Initiate."""
    return build_service_error(ConfirmedService.INITIATE_ERROR, choice, code)


def _optional(data: bytes, pos: int, what: str, sized: bool) -> tuple[bytes | None, int]:
    if pos >= len(data):
        raise DecodeError(f"Initiate APDU: {what} missing")
    if data[pos] == 0:
        return None, pos + 1
    if data[pos] != 1:
        raise DecodeError(f"Initiate APDU: {what} flag 0x{data[pos]:02X} is not 0 or 1")
    if not sized:
        if pos + 2 > len(data):
            raise DecodeError(f"Initiate APDU: {what} truncated")
        return data[pos + 1 : pos + 2], pos + 2
    if pos + 2 > len(data) or pos + 2 + data[pos + 1] > len(data):
        raise DecodeError(f"Initiate APDU: {what} truncated")
    end = pos + 2 + data[pos + 1]
    return data[pos + 2 : end], end


def decode_initiate(data: bytes) -> InitiateInfo:
    """A plain InitiateRequest (tag 1) or InitiateResponse (tag 8), field by field."""
    if not data or data[0] not in (ApduTag.INITIATE_REQUEST, ApduTag.INITIATE_RESPONSE):
        raise DecodeError("not an InitiateRequest/InitiateResponse")
    request = data[0] == ApduTag.INITIATE_REQUEST
    pos = 1
    key: bytes | None = None
    if request:
        key, pos = _optional(data, pos, "dedicated-key", sized=True)
        _, pos = _optional(data, pos, "response-allowed", sized=False)
    _, pos = _optional(data, pos, "quality-of-service", sized=False)
    tail = 10 if request else 12
    if len(data) - pos != tail:
        raise DecodeError(
            f"Initiate APDU: {len(data) - pos} bytes after the optional fields, expected {tail}"
        )
    if data[pos + 1 : pos + 5] != _CONFORMANCE_HEAD:
        raise DecodeError("Initiate APDU: conformance is not 5F 1F 04 00 ...")
    conformance = int.from_bytes(data[pos + 5 : pos + 8], "big")
    max_pdu = int.from_bytes(data[pos + 8 : pos + 10], "big")
    vaa = None if request else int.from_bytes(data[pos + 10 : pos + 12], "big")
    return InitiateInfo(conformance, max_pdu, data[pos], key, vaa)
