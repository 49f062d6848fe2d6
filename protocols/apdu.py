"""xDLMS and ACSE APDUs for both ends of a DLMS/COSEM association (sans-IO).

Client side: ``build_*`` request builders, :func:`parse_aare` and :func:`decode_response`.
Meter side: :func:`decode_request` and the ``build_*`` response builders.  Every decoder
returns one of the typed slots dataclasses below or raises :class:`DecodeError`; no
``dlms-cosem`` class leaks through the public API.

Division of labour with ``dlms-cosem`` 25.1.0:

* ACSE (AARQ, AARE, RLRQ, RLRE), the InitiateRequest/InitiateResponse carried in their
  user-information, Conformance and the InitiateError ConfirmedServiceError are encoded
  and decoded by ``dlms-cosem`` (BER with mixed A-XDR is where a library pays off).
* The GET/SET/ACTION/Exception/ConfirmedServiceError/DataNotification xDLMS APDUs are
  fixed-layout A-XDR and are coded here.  ``dlms-cosem`` cannot do the job for them:
  its ``CosemAttribute``/``CosemMethod`` accept only class ids of its ``CosemInterface``
  enum (a meter must still decode a request for an unknown class to answer
  object-undefined), its result fields accept only its enums, ``EntryDescriptor``
  to/from_bytes raise NotImplementedError, ``RangeDescriptor`` converts the 12-byte
  date-time through ``datetime`` (losing unspecified fields and clock status) and
  cannot carry selected columns, ``GetResponseNormal.to_bytes`` appends a bytes object
  (TypeError), length checks are ``assert`` statements, and the factories only know the
  ``-normal`` variants.  The GET response decoder is also the collector's hot path, where
  slicing a few header bytes beats building attrs objects (see tests).

Invoke-Id-And-Priority (Blue Book): bits 0-3 invoke id, bit 6 service class
(1 = confirmed), bit 7 priority (1 = high).  The builders send ``0xC0 | invoke_id``
(confirmed, high priority) as ``dlms-cosem`` and Gurux do; decoders keep bits 0-3.
Attribute and method ids are coded as their raw byte (0..255).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias, TypeVar

from dlms_cosem import enumerations as dc_enums
from dlms_cosem.protocol import acse as dc_acse
from dlms_cosem.protocol import xdlms as dc_xdlms
from dlms_cosem.protocol.xdlms import confirmed_service_error as dc_cse

from protocols.axdr import decode_from
from protocols.errors import DecodeError

__all__ = [
    "ACSE_DIAGNOSTIC_APPLICATION_CONTEXT_NOT_SUPPORTED",
    "ACSE_DIAGNOSTIC_AUTHENTICATION_FAILURE",
    "ACSE_DIAGNOSTIC_AUTHENTICATION_REQUIRED",
    "ACSE_DIAGNOSTIC_NO_REASON",
    "ACSE_DIAGNOSTIC_NULL",
    "AUTHENTICATION_MECHANISMS",
    "DEFAULT_CONFORMANCE",
    "AareInfo",
    "AarqInfo",
    "AccessSelection",
    "ActionRequest",
    "ActionResult",
    "Authentication",
    "ColumnLike",
    "ColumnRef",
    "DataNotification",
    "EntryAccess",
    "ExceptionResult",
    "GetBlock",
    "GetError",
    "GetListItem",
    "GetListRequest",
    "GetListResult",
    "GetNextRequest",
    "GetRequest",
    "GetResult",
    "InitiateInfo",
    "RangeAccess",
    "ReleaseRequest",
    "ReleaseResponse",
    "Request",
    "Response",
    "ServiceErrorResult",
    "SetRequest",
    "SetResult",
    "build_aare",
    "build_aarq",
    "build_action",
    "build_action_response",
    "build_data_notification",
    "build_exception_response",
    "build_get",
    "build_get_list_response",
    "build_get_next",
    "build_get_response",
    "build_get_response_block",
    "build_get_response_block_error",
    "build_get_response_error",
    "build_get_with_list",
    "build_initiate_request",
    "build_initiate_response",
    "build_rlre",
    "build_rlrq",
    "build_set",
    "build_set_response",
    "decode_initiate",
    "decode_request",
    "decode_response",
    "parse_aare",
]

# APDU tags (Green Book, xDLMS-APDU CHOICE and ACSE APPLICATION tags).
TAG_AARQ = 0x60
TAG_AARE = 0x61
TAG_RLRQ = 0x62
TAG_RLRE = 0x63
TAG_GET_REQUEST = 0xC0
TAG_SET_REQUEST = 0xC1
TAG_ACTION_REQUEST = 0xC3
TAG_GET_RESPONSE = 0xC4
TAG_SET_RESPONSE = 0xC5
TAG_ACTION_RESPONSE = 0xC7
TAG_EXCEPTION_RESPONSE = 0xD8
TAG_CONFIRMED_SERVICE_ERROR = 0x0E
TAG_DATA_NOTIFICATION = 0x0F

# ACSE result-source-diagnostic, acse-service-user (ISO 8650 / Green Book AARE).
ACSE_DIAGNOSTIC_NULL = 0
ACSE_DIAGNOSTIC_NO_REASON = 1
ACSE_DIAGNOSTIC_APPLICATION_CONTEXT_NOT_SUPPORTED = 2
ACSE_DIAGNOSTIC_AUTHENTICATION_FAILURE = 13
ACSE_DIAGNOSTIC_AUTHENTICATION_REQUIRED = 14

Authentication: TypeAlias = Literal[
    "none", "lls", "hls", "hls-md5", "hls-sha1", "hls-gmac", "hls-sha256", "hls-ecdsa"
]
#: mechanism-name ids (last arc of 2.16.756.5.8.2.x, Green Book).
AUTHENTICATION_MECHANISMS: dict[str, int] = {
    "none": 0,
    "lls": 1,
    "hls": 2,
    "hls-md5": 3,
    "hls-sha1": 4,
    "hls-gmac": 5,
    "hls-sha256": 6,
    "hls-ecdsa": 7,
}

#: LN client proposal: get, set, action, selective-access, multiple-references and block
#: transfer with get/set/action (bits per Blue Book, bit 0 = MSB of the 24-bit string).
DEFAULT_CONFORMANCE = 0x001E1D

_CONFIRMED_HIGH = 0xC0
_COLUMN = struct.Struct(">BBBHBB6sBBBH")  # 02 04 12 cid 09 06 obis 0F attr 12 index
_ENTRY = struct.Struct(">BBBIBIBHBH")  # 02 04 06 u32 06 u32 12 u16 12 u16
_T = TypeVar("_T")


# ---------------------------------------------------------------- typed values


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


@dataclass(slots=True, frozen=True)
class AareInfo:
    """What a client needs from an AARE.

    ``challenge`` is the responding-authentication-value (the meter's StoC for HLS);
    ``mechanism`` the responding mechanism id when the meter names one.
    ``initiate_error`` is set when user-information holds a ConfirmedServiceError
    (initiateError) instead of an InitiateResponse, ``initiate_error_choice`` its ServiceError
    CHOICE (6 initiate, 0 application-reference); ``ciphered_initiate`` keeps a
    glo-InitiateResponse for the ciphering layer to open; ``exception`` an ExceptionResponse
    carried in user-information (a rejected invocation counter).
    """

    accepted: bool
    result: int
    diagnostic: int | None
    negotiated_conformance: int
    server_max_pdu_size: int
    dlms_version: int
    responding_system_title: bytes | None = None
    challenge: bytes | None = None
    mechanism: int | None = None
    diagnostic_source: int = 1
    ciphered: bool = False
    initiate_error: int | None = None
    ciphered_initiate: bytes | None = None
    initiate_error_choice: int | None = None
    exception: ExceptionResult | None = None


@dataclass(slots=True, frozen=True)
class InitiateInfo:
    """A plain InitiateRequest/InitiateResponse (as carried inside a glo-Initiate APDU)."""

    conformance: int
    max_pdu_size: int
    dlms_version: int


@dataclass(slots=True, frozen=True)
class AarqInfo:
    """What a meter needs from an AARQ (mechanism 0 = no authentication)."""

    mechanism: int
    calling_auth_value: bytes | None
    system_title: bytes | None
    proposed_conformance: int
    client_max_pdu_size: int
    dlms_version: int
    ciphered: bool = False
    ciphered_initiate: bytes | None = None


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


@dataclass(slots=True, frozen=True)
class SetResult:
    invoke_id: int
    result: int


@dataclass(slots=True, frozen=True)
class ActionResult:
    """ACTION-Response-Normal; ``data_error`` is a return-parameters Data-Access-Result."""

    invoke_id: int
    result: int
    data: bytes | None = None
    data_error: int | None = None


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


@dataclass(slots=True, frozen=True)
class ReleaseResponse:
    reason: int | None


@dataclass(slots=True, frozen=True)
class DataNotification:
    """Pushed data; ``long_invoke_id`` is the 24-bit id without the priority flags."""

    long_invoke_id: int
    date_time: bytes | None
    body: bytes


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
)


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
class SetRequest:
    invoke_id: int
    class_id: int
    obis: bytes
    attribute: int
    data: bytes
    access: AccessSelection | None = None


@dataclass(slots=True, frozen=True)
class ActionRequest:
    invoke_id: int
    class_id: int
    obis: bytes
    method: int
    data: bytes | None


@dataclass(slots=True, frozen=True)
class ReleaseRequest:
    reason: int | None


Request: TypeAlias = (
    AarqInfo
    | GetRequest
    | GetNextRequest
    | GetListRequest
    | SetRequest
    | ActionRequest
    | ReleaseRequest
)


# ---------------------------------------------------------------- encoding helpers


def _iip(invoke_id: int) -> int:
    if not 0 <= invoke_id <= 15:
        raise ValueError(f"invoke id {invoke_id} outside 0..15")
    return _CONFIRMED_HIGH | invoke_id


def _obis(obis: ObisLike) -> bytes:
    raw = obis if isinstance(obis, bytes) else bytes(obis)
    if len(raw) != 6:
        raise ValueError(f"OBIS code must be 6 bytes, got {len(raw)}")
    return raw


def _descriptor(class_id: int, obis: ObisLike, member: int) -> bytes:
    """Cosem-Attribute-Descriptor / Cosem-Method-Descriptor: u16 class, 6-byte OBIS, id."""
    if not 0 <= member <= 0xFF:
        raise ValueError(f"attribute/method id {member} outside 0..255")
    return class_id.to_bytes(2, "big") + _obis(obis) + bytes((member,))


def _length(n: int) -> bytes:
    """A-XDR length: one byte below 0x80, else 0x8k followed by k big-endian bytes."""
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def _column(col: ColumnLike) -> bytes:
    return _COLUMN.pack(
        0x02,
        0x04,
        0x12,
        col.class_id,
        0x09,
        0x06,
        _obis(col.obis),
        0x0F,
        col.attribute,
        0x12,
        col.data_index,
    )


def _access(access: AccessSelection | None) -> bytes:
    """Optional Selective-Access-Descriptor (presence flag included).

    Written here rather than through dlms-cosem: its EntryDescriptor has no encoding and
    its RangeDescriptor takes ``datetime`` values and no selected columns.
    """
    if access is None:
        return b"\x00"
    if isinstance(access, EntryAccess):
        return b"\x01\x02" + _ENTRY.pack(
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
    out = bytearray(b"\x01\x01\x02\x04")
    out += _column(access.restricting)
    for value in (access.from_value, access.to_value):
        out.append(0x09)
        out += _length(len(value))
        out += value
    out.append(0x01)
    out += _length(len(access.selected_columns))
    for col in access.selected_columns:
        out += _column(col)
    return bytes(out)


def _conformance_object(conformance: int) -> dc_xdlms.Conformance:
    if conformance & ~_CONFORMANCE_MASK & 0xFFFFFF or not 0 <= conformance <= 0xFFFFFF:
        raise ValueError(
            f"conformance 0x{conformance:06X} has bits dlms-cosem cannot carry "
            f"(LN bits only: mask 0x{_CONFORMANCE_MASK:06X})"
        )
    return dc_xdlms.Conformance.from_bytes(b"\x00" + conformance.to_bytes(3, "big"))


def _conformance_int(conformance: dc_xdlms.Conformance) -> int:
    return int.from_bytes(conformance.to_bytes()[1:], "big")


_CONFORMANCE_MASK = sum(1 << bit for bit in dc_xdlms.Conformance.conformance_bit_position.values())


# ---------------------------------------------------------------- client builders


def build_aarq(
    *,
    authentication: Authentication = "none",
    password: bytes | None = None,
    max_pdu_size: int = 0xFFFF,
    conformance: int | None = None,
    system_title: bytes | None = None,
    dlms_version: int = 6,
    ciphered: bool = False,
    user_information: bytes | None = None,
) -> bytes:
    """AARQ for an LN association, encoded by dlms-cosem.

    ``password`` is the calling-authentication-value: the LLS secret, or the client
    challenge (CtoS) for the HLS mechanisms.  ``system_title`` goes in calling-AP-title.
    ``conformance`` is the 24-bit Blue Book bit string as an int (None = default).
    ``ciphered`` names the LN-with-ciphering context; ``user_information`` then carries the
    glo-InitiateRequest (see :func:`build_initiate_request` and ``protocols.security``).
    """
    mechanism = AUTHENTICATION_MECHANISMS.get(authentication)
    if mechanism is None:
        raise ValueError(f"unknown authentication {authentication!r}")
    if mechanism == 0 and password is not None:
        raise ValueError("a password needs an authentication mechanism")
    if mechanism != 0 and not password:
        raise ValueError(f"authentication {authentication!r} needs a password/challenge")
    if not 0 <= max_pdu_size <= 0xFFFF:
        raise ValueError(f"max PDU size {max_pdu_size} outside 0..65535")
    initiate = dc_xdlms.InitiateRequest(
        proposed_conformance=_conformance_object(
            DEFAULT_CONFORMANCE if conformance is None else conformance
        ),
        client_max_receive_pdu_size=max_pdu_size,
        proposed_dlms_version_number=dlms_version,
    )
    content: dc_xdlms.InitiateRequest | dc_xdlms.GlobalCipherInitiateRequest = initiate
    if user_information is not None:
        if user_information[:1] != b"\x21" or len(user_information) > 0x81:
            raise ValueError("user_information must be a glo-InitiateRequest under 128 bytes")
        content = dc_xdlms.GlobalCipherInitiateRequest.from_bytes(user_information)
    aarq = dc_acse.ApplicationAssociationRequest(
        user_information=dc_acse.UserInformation(content=content),
        system_title=system_title,
        authentication=dc_enums.AuthenticationMechanism(mechanism) if mechanism else None,
        authentication_value=password,
        ciphered=ciphered,
    )
    return bytes(aarq.to_bytes())


def build_initiate_request(
    *, conformance: int | None = None, max_pdu_size: int = 0xFFFF, dlms_version: int = 6
) -> bytes:
    """The plain xDLMS InitiateRequest, to be ciphered into a glo-InitiateRequest."""
    if not 0 <= max_pdu_size <= 0xFFFF:
        raise ValueError(f"max PDU size {max_pdu_size} outside 0..65535")
    return bytes(
        dc_xdlms.InitiateRequest(
            proposed_conformance=_conformance_object(
                DEFAULT_CONFORMANCE if conformance is None else conformance
            ),
            client_max_receive_pdu_size=max_pdu_size,
            proposed_dlms_version_number=dlms_version,
        ).to_bytes()
    )


def build_initiate_response(*, conformance: int, max_pdu_size: int, dlms_version: int = 6) -> bytes:
    """The plain xDLMS InitiateResponse, to be ciphered into a glo-InitiateResponse."""
    if not 0 <= max_pdu_size <= 0xFFFF:
        raise ValueError(f"max PDU size {max_pdu_size} outside 0..65535")
    return bytes(
        dc_xdlms.InitiateResponse(
            negotiated_conformance=_conformance_object(conformance),
            server_max_receive_pdu_size=max_pdu_size,
            negotiated_dlms_version_number=dlms_version,
        ).to_bytes()
    )


def decode_initiate(data: bytes) -> InitiateInfo:
    """A plain InitiateRequest (tag 1) or InitiateResponse (tag 8), read from its tail.

    The request ends in dlms-version, ``5F 1F 04 00`` + 3 conformance bytes and max PDU
    size; the response adds the VAA-name ``00 07``. Read directly because dlms-cosem drops
    conformance bits 16-23 (see above).
    """
    tail = data[:-2] if data[:1] == b"\x08" and data[-2:] == b"\x00\x07" else data
    if len(tail) < 10 or data[0] not in (0x01, 0x08) or (data[0] == 0x08 and tail is data):
        raise DecodeError("not an InitiateRequest/InitiateResponse")
    if tail[-9:-5] != b"\x5f\x1f\x04\x00":
        raise DecodeError("Initiate APDU: conformance is not 5F 1F 04 00 ...")
    return InitiateInfo(
        int.from_bytes(tail[-5:-2], "big"), int.from_bytes(tail[-2:], "big"), tail[-10]
    )


def build_get(
    invoke_id: int,
    class_id: int,
    obis: ObisLike,
    attribute: int,
    access: AccessSelection | None = None,
) -> bytes:
    """GET-Request-Normal."""
    return (
        bytes((TAG_GET_REQUEST, 0x01, _iip(invoke_id)))
        + _descriptor(class_id, obis, attribute)
        + _access(access)
    )


def build_get_next(invoke_id: int, block_number: int) -> bytes:
    """GET-Request-Next, asking for the block after ``block_number``."""
    return bytes((TAG_GET_REQUEST, 0x02, _iip(invoke_id))) + block_number.to_bytes(4, "big")


def build_get_with_list(
    invoke_id: int,
    items: Sequence[tuple[int, ObisLike, int, AccessSelection | None]],
) -> bytes:
    """GET-Request-With-List of ``(class_id, obis, attribute, access)`` items."""
    if not items:
        raise ValueError("GET with list needs at least one item")
    out = bytearray((TAG_GET_REQUEST, 0x03, _iip(invoke_id)))
    out += _length(len(items))
    for class_id, obis, attribute, access in items:
        out += _descriptor(class_id, obis, attribute)
        out += _access(access)
    return bytes(out)


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
        bytes((TAG_SET_REQUEST, 0x01, _iip(invoke_id)))
        + _descriptor(class_id, obis, attribute)
        + _access(access)
        + data
    )


def build_action(
    invoke_id: int, class_id: int, obis: ObisLike, method: int, data: bytes | None = None
) -> bytes:
    """ACTION-Request-Normal; ``data`` is the encoded method-invocation-parameters."""
    head = bytes((TAG_ACTION_REQUEST, 0x01, _iip(invoke_id))) + _descriptor(class_id, obis, method)
    if data is None:
        return head + b"\x00"
    if not data:
        raise ValueError("ACTION parameters must be an encoded value or None")
    return head + b"\x01" + data


def build_rlrq(reason: int | None = 0) -> bytes:
    """RLRQ (0 = normal), encoded by dlms-cosem."""
    rlrq = dc_acse.ReleaseRequest(
        reason=None if reason is None else dc_enums.ReleaseRequestReason(reason)
    )
    return bytes(rlrq.to_bytes())


# ---------------------------------------------------------------- meter builders


def build_aare(
    *,
    accepted: bool,
    diagnostic: int = ACSE_DIAGNOSTIC_NULL,
    conformance: int,
    max_pdu_size: int,
    dlms_version: int = 6,
    authentication: Authentication = "none",
    system_title: bytes | None = None,
    challenge: bytes | None = None,
    initiate_error: int | None = None,
    initiate_error_choice: int = 6,
    ciphered: bool = False,
    user_information: bytes | None = None,
) -> bytes:
    """AARE (acse-service-user diagnostic), encoded by dlms-cosem.

    A rejection with ``initiate_error`` carries a ConfirmedServiceError (initiateError)
    instead of an InitiateResponse, as the Green Book shows for a too-low DLMS version;
    ``initiate_error_choice`` is its ServiceError CHOICE (6 initiate, 0 application-reference
    for deciphering-error). ``authentication``/``challenge`` fill mechanism-name and the
    responding authentication value (StoC) for HLS. ``ciphered`` names the LN-with-ciphering
    context; ``user_information`` then replaces the InitiateResponse with the given xDLMS APDU
    (a glo-InitiateResponse, or an ExceptionResponse for a rejected invocation counter).
    """
    mechanism = AUTHENTICATION_MECHANISMS.get(authentication)
    if mechanism is None:
        raise ValueError(f"unknown authentication {authentication!r}")
    content: Any
    if user_information is not None:
        if not 0 < len(user_information) < 0x80:
            raise ValueError("AARE user_information must be 1..127 bytes")
        content = _RawXdlms(user_information)
    elif initiate_error is not None:
        error_type = dc_cse.ErrorFactory.get_error_type(initiate_error_choice)
        content = dc_xdlms.ConfirmedServiceError(error=error_type(initiate_error))
    else:
        if not 0 <= max_pdu_size <= 0xFFFF:
            raise ValueError(f"max PDU size {max_pdu_size} outside 0..65535")
        content = dc_xdlms.InitiateResponse(
            negotiated_conformance=_conformance_object(conformance),
            server_max_receive_pdu_size=max_pdu_size,
            negotiated_dlms_version_number=dlms_version,
        )
    aare = dc_acse.ApplicationAssociationResponse(
        result=(
            dc_enums.AssociationResult.ACCEPTED
            if accepted
            else dc_enums.AssociationResult.REJECTED_PERMANENT
        ),
        result_source_diagnostics=dc_enums.AcseServiceUserDiagnostics(diagnostic),
        authentication=dc_enums.AuthenticationMechanism(mechanism) if mechanism else None,
        system_title=system_title,
        authentication_value=challenge,
        user_information=dc_acse.UserInformation(content=content),
        ciphered=ciphered,
    )
    return bytes(aare.to_bytes())


@dataclass(slots=True, frozen=True)
class _RawXdlms:
    """An already-encoded xDLMS APDU for dlms-cosem's UserInformation to carry."""

    raw: bytes

    def to_bytes(self) -> bytes:
        return self.raw


def build_get_response(invoke_id: int, data: bytes) -> bytes:
    """GET-Response-Normal with data (dlms-cosem's to_bytes raises TypeError here)."""
    return bytes((TAG_GET_RESPONSE, 0x01, _iip(invoke_id), 0x00)) + data


def build_get_response_error(invoke_id: int, result: int) -> bytes:
    """GET-Response-Normal with a Data-Access-Result."""
    return bytes((TAG_GET_RESPONSE, 0x01, _iip(invoke_id), 0x01, result))


def build_get_response_block(invoke_id: int, block_number: int, last: bool, raw: bytes) -> bytes:
    """GET-Response-With-Datablock carrying raw-data."""
    return (
        bytes((TAG_GET_RESPONSE, 0x02, _iip(invoke_id), 0x01 if last else 0x00))
        + block_number.to_bytes(4, "big")
        + b"\x00"
        + _length(len(raw))
        + raw
    )


def build_get_response_block_error(invoke_id: int, block_number: int, result: int) -> bytes:
    """Last GET-Response-With-Datablock carrying a Data-Access-Result (aborts the read)."""
    return (
        bytes((TAG_GET_RESPONSE, 0x02, _iip(invoke_id), 0x01))
        + block_number.to_bytes(4, "big")
        + bytes((0x01, result))
    )


def build_get_list_response(invoke_id: int, items: Sequence[bytes | int]) -> bytes:
    """GET-Response-With-List: encoded values (bytes) or Data-Access-Results (int)."""
    out = bytearray((TAG_GET_RESPONSE, 0x03, _iip(invoke_id)))
    out += _length(len(items))
    for item in items:
        if isinstance(item, int):
            out += bytes((0x01, item))
        else:
            out.append(0x00)
            out += item
    return bytes(out)


def build_set_response(invoke_id: int, result: int) -> bytes:
    """SET-Response-Normal."""
    return bytes((TAG_SET_RESPONSE, 0x01, _iip(invoke_id), result))


def build_action_response(invoke_id: int, result: int, data: bytes | None = None) -> bytes:
    """ACTION-Response-Normal with optional return parameters (encoded Data)."""
    head = bytes((TAG_ACTION_RESPONSE, 0x01, _iip(invoke_id), result))
    if data is None:
        return head + b"\x00"
    return head + b"\x01\x00" + data


def build_exception_response(
    state_error: int, service_error: int, invocation_counter: int | None = None
) -> bytes:
    """ExceptionResponse (Green Book: state-error, service-error).

    invocation-counter-error (6) carries the counter the server expects (Unsigned32).
    """
    head = bytes((TAG_EXCEPTION_RESPONSE, state_error, service_error))
    if invocation_counter is None:
        return head
    return head + invocation_counter.to_bytes(4, "big")


def build_data_notification(
    long_invoke_id: int, body: bytes, date_time: bytes | None = None
) -> bytes:
    """Data-Notification (unconfirmed); ``body`` is the encoded notification Data."""
    if not 0 <= long_invoke_id <= 0xFFFFFF:
        raise ValueError(f"long invoke id {long_invoke_id} outside 24 bits")
    stamp = b"" if date_time is None else date_time
    return (
        bytes((TAG_DATA_NOTIFICATION,))
        + long_invoke_id.to_bytes(4, "big")
        + _length(len(stamp))
        + stamp
        + body
    )


def build_rlre(reason: int | None = 0) -> bytes:
    """RLRE (0 = normal), encoded by dlms-cosem."""
    rlre = dc_acse.ReleaseResponse(
        reason=None if reason is None else dc_enums.ReleaseResponseReason(reason)
    )
    return bytes(rlre.to_bytes())


# ---------------------------------------------------------------- decoding helpers


def _need(data: bytes, size: int, what: str) -> None:
    if len(data) < size:
        raise DecodeError(f"{what}: {len(data)} bytes, need at least {size}")


def _exact(data: bytes, pos: int, what: str) -> None:
    if pos != len(data):
        raise DecodeError(f"{what}: {len(data) - pos} unexpected trailing bytes")


def _read_length(data: bytes, pos: int, what: str) -> tuple[int, int]:
    if pos >= len(data):
        raise DecodeError(f"{what}: length missing")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if not 1 <= size <= 4 or pos + 1 + size > len(data):
        raise DecodeError(f"{what}: bad A-XDR length prefix 0x{first:02X}")
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size


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
        size, start = _read_length(data, pos + 1, "range bound")
        end = start + size
    else:
        raise DecodeError(f"range descriptor: bound has type tag {tag}, not an octet-string")
    if end > len(data):
        raise DecodeError("range descriptor: bound truncated")
    return data[start:end], end


def _read_access(data: bytes, pos: int) -> tuple[AccessSelection | None, int]:
    """Optional Selective-Access-Descriptor (presence flag included)."""
    if pos >= len(data):
        raise DecodeError("access-selection flag missing")
    if data[pos] == 0:
        return None, pos + 1
    pos += 1
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
    count, pos = _read_length(data, pos + 1, "selected values")
    if count * _COLUMN.size > len(data) - pos:
        raise DecodeError(f"range descriptor: {count} selected values do not fit")
    columns: list[ColumnLike] = []
    for _ in range(count):
        column, pos = _read_column(data, pos)
        columns.append(column)
    return RangeAccess(restricting, from_value, to_value, columns), pos


def _read_descriptor(data: bytes, pos: int, what: str) -> tuple[int, bytes, int, int]:
    end = pos + 9
    if end > len(data):
        raise DecodeError(f"{what}: COSEM descriptor truncated")
    return (data[pos] << 8) | data[pos + 1], data[pos + 2 : pos + 8], data[pos + 8], end


# ---------------------------------------------------------------- response decoders


def _decode_get_response(data: bytes) -> Response:
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
            size, pos = _read_length(data, 9, "GET response block raw-data")
            if pos + size != n:
                raise DecodeError(
                    f"GET response block: raw-data length {size} but {n - pos} bytes follow"
                )
            return GetBlock(invoke_id, block_number, data[3] != 0, data[pos:])
        if choice == 1:
            if n != 10:
                raise DecodeError(f"GET response block error: {n} bytes, expected 10")
            return GetError(invoke_id, data[9])
        raise DecodeError(f"GET response block: DataBlock-G choice {choice}")
    if kind == 3:
        count, pos = _read_length(data, 3, "GET response list")
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
        _exact(data, pos, "GET response list")
        return GetListResult(invoke_id, items)
    raise DecodeError(f"GET response type {kind} not supported")


def _decode_set_response(data: bytes) -> Response:
    _need(data, 4, "SET response")
    if data[1] != 1:
        raise DecodeError(f"SET response type {data[1]} not supported")
    _exact(data, 4, "SET response")
    return SetResult(data[2] & 0x0F, data[3])


def _decode_action_response(data: bytes) -> Response:
    _need(data, 5, "ACTION response")
    if data[1] != 1:
        raise DecodeError(f"ACTION response type {data[1]} not supported")
    invoke_id, result = data[2] & 0x0F, data[3]
    if data[4] == 0:
        _exact(data, 5, "ACTION response")
        return ActionResult(invoke_id, result)
    _need(data, 7, "ACTION response return parameters")
    if data[5] == 0:
        return ActionResult(invoke_id, result, data=data[6:])
    if data[5] == 1:
        _exact(data, 7, "ACTION response return parameters")
        return ActionResult(invoke_id, result, data_error=data[6])
    raise DecodeError(f"ACTION response: Get-Data-Result choice {data[5]}")


def _decode_exception(data: bytes) -> Response:
    """ExceptionResponse; dlms-cosem's enums would reject codes it does not know."""
    _need(data, 3, "ExceptionResponse")
    if len(data) == 7 and data[2] == 6:
        return ExceptionResult(data[1], data[2], int.from_bytes(data[3:7], "big"))
    _exact(data, 3, "ExceptionResponse")
    return ExceptionResult(data[1], data[2])


def _decode_service_error(data: bytes) -> Response:
    """ConfirmedServiceError; dlms-cosem only decodes services 1, 5 and 6."""
    _need(data, 4, "ConfirmedServiceError")
    _exact(data, 4, "ConfirmedServiceError")
    return ServiceErrorResult(data[1], data[2], data[3])


def _decode_data_notification(data: bytes) -> Response:
    """Data-Notification with its date-time kept as raw bytes (dlms-cosem converts it)."""
    _need(data, 6, "DataNotification")
    size, pos = _read_length(data, 5, "DataNotification date-time")
    end = pos + size
    if end >= len(data):
        raise DecodeError("DataNotification: date-time overruns or body missing")
    stamp = data[pos:end] if size else None
    return DataNotification(int.from_bytes(data[2:5], "big"), stamp, data[end:])


def _split_exception(data: bytes) -> tuple[bytes, ExceptionResult | None]:
    """Take an ExceptionResponse out of the AARE's user-information (dlms-cosem refuses it).

    Servers put one there for a rejected invocation counter (as Gurux does). The walk relies
    on single-byte BER lengths, which is all dlms-cosem itself parses in an AARE.
    """
    if len(data) < 2 or data[1] != len(data) - 2:
        return data, None
    pos = 2
    while pos + 1 < len(data):
        tag, size = data[pos], data[pos + 1]
        if tag == 0xBE and pos + 2 + size == len(data) and size >= 5:
            inner = data[pos + 4 : pos + 2 + size]
            if inner[:1] == bytes((TAG_EXCEPTION_RESPONSE,)):
                exc = _decode_exception(inner)
                assert isinstance(exc, ExceptionResult)
                body = data[2:pos]
                return bytes((TAG_AARE, len(body))) + body, exc
            return data, None
        pos += 2 + size
    return data, None


def _aare_from(data: bytes) -> AareInfo:
    data, exception = _split_exception(data)
    aare = dc_acse.ApplicationAssociationResponse.from_bytes(data)
    diagnostic = aare.result_source_diagnostics
    source = 2 if isinstance(diagnostic, dc_enums.AcseServiceProviderDiagnostics) else 1
    conformance = max_pdu = version = 0
    initiate_error: int | None = None
    initiate_error_choice: int | None = None
    ciphered_initiate: bytes | None = None
    content = aare.user_information.content if aare.user_information else None
    if isinstance(content, dc_xdlms.InitiateResponse):
        conformance = _conformance_int(content.negotiated_conformance)
        max_pdu = content.server_max_receive_pdu_size
        version = content.negotiated_dlms_version_number
    elif isinstance(content, dc_xdlms.ConfirmedServiceError):
        initiate_error = int(content.error)
        initiate_error_choice = next(
            tag
            for tag, kind in dc_cse.ErrorFactory.ERROR_TYPE_MAP.items()
            if isinstance(content.error, kind)
        )
    elif isinstance(content, dc_xdlms.GlobalCipherInitiateResponse):
        ciphered_initiate = bytes(content.to_bytes())
    elif content is not None:
        raise DecodeError(f"AARE user-information holds a {type(content).__name__}")
    result = int(aare.result)
    return AareInfo(
        accepted=result == 0,
        result=result,
        diagnostic=int(diagnostic),
        negotiated_conformance=conformance,
        server_max_pdu_size=max_pdu,
        dlms_version=version,
        responding_system_title=_opt_bytes(aare.system_title),
        challenge=_opt_bytes(aare.authentication_value),
        mechanism=None if aare.authentication is None else int(aare.authentication),
        diagnostic_source=source,
        ciphered=bool(aare.ciphered),
        initiate_error=initiate_error,
        ciphered_initiate=ciphered_initiate,
        initiate_error_choice=initiate_error_choice,
        exception=exception,
    )


def _opt_bytes(value: bytes | bytearray | None) -> bytes | None:
    return None if value is None else bytes(value)


def _decode_rlre(data: bytes) -> Response:
    """RLRE; an empty one (``63 00``) is valid but dlms-cosem pops past its end."""
    if data == b"\x63\x00":
        return ReleaseResponse(None)
    reason = dc_acse.ReleaseResponse.from_bytes(data).reason
    return ReleaseResponse(None if reason is None else int(reason))


_RESPONSE_DECODERS: dict[int, tuple[str, Callable[[bytes], Response]]] = {
    TAG_GET_RESPONSE: ("GET response", _decode_get_response),
    TAG_SET_RESPONSE: ("SET response", _decode_set_response),
    TAG_ACTION_RESPONSE: ("ACTION response", _decode_action_response),
    TAG_EXCEPTION_RESPONSE: ("ExceptionResponse", _decode_exception),
    TAG_CONFIRMED_SERVICE_ERROR: ("ConfirmedServiceError", _decode_service_error),
    TAG_DATA_NOTIFICATION: ("DataNotification", _decode_data_notification),
    TAG_AARE: ("AARE", _aare_from),
    TAG_RLRE: ("RLRE", _decode_rlre),
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
    except Exception as exc:  # dlms-cosem raises anything from ValueError to asn1crypto's
        raise DecodeError(f"malformed {name}: {exc!r}") from exc


_AARE_ONLY: dict[int, tuple[str, Callable[[bytes], AareInfo]]] = {TAG_AARE: ("AARE", _aare_from)}


def decode_response(data: bytes | bytearray | memoryview) -> Response:
    """Decode an APDU a meter sent to the client."""
    return _dispatch(data, _RESPONSE_DECODERS, "response")


def parse_aare(data: bytes | bytearray | memoryview) -> AareInfo:
    """Decode an AARE (DecodeError for anything else)."""
    raw = bytes(data)
    if not raw or raw[0] != TAG_AARE:
        raise DecodeError("not an AARE (tag 0x61)")
    return _dispatch(raw, _AARE_ONLY, "AARE")


# ---------------------------------------------------------------- request decoders


def _initiate_request_conformance(aarq: bytes) -> int:
    """Proposed conformance read from the raw InitiateRequest.

    dlms-cosem's InitiateRequest.from_bytes takes the unused-bits byte and the first two
    bytes of the bit string, so it drops bits 16-23 (general-protection,
    general-block-transfer, delta-value-encoding); read the three bytes here instead.
    dlms-cosem has already checked the single-byte BER layout this walk relies on.
    """
    pos = 2
    while pos + 1 < len(aarq):
        tag, size = aarq[pos], aarq[pos + 1]
        if tag == 0xBE:
            initiate = aarq[pos + 4 : pos + 2 + size]  # skip BE len 04 len
            if initiate[-9:-5] != b"\x5f\x1f\x04\x00":
                raise DecodeError("AARQ: InitiateRequest conformance is not 5F 1F 04 00 ...")
            return int.from_bytes(initiate[-5:-2], "big")
        pos += 2 + size
    raise DecodeError("AARQ: user-information missing")


def _aarq_from(data: bytes) -> Request:
    aarq = dc_acse.ApplicationAssociationRequest.from_bytes(data)
    content = aarq.user_information.content
    conformance = max_pdu = version = 0
    ciphered_initiate: bytes | None = None
    if isinstance(content, dc_xdlms.InitiateRequest):
        conformance = _initiate_request_conformance(data)
        max_pdu = content.client_max_receive_pdu_size
        version = content.proposed_dlms_version_number
    else:
        ciphered_initiate = bytes(content.to_bytes())
    return AarqInfo(
        mechanism=0 if aarq.authentication is None else int(aarq.authentication),
        calling_auth_value=_opt_bytes(aarq.authentication_value),
        system_title=_opt_bytes(aarq.system_title),
        proposed_conformance=conformance,
        client_max_pdu_size=max_pdu,
        dlms_version=version,
        ciphered=bool(aarq.ciphered),
        ciphered_initiate=ciphered_initiate,
    )


def _decode_get_request(data: bytes) -> Request:
    _need(data, 4, "GET request")
    kind = data[1]
    invoke_id = data[2] & 0x0F
    if kind == 1:
        class_id, obis, attribute, pos = _read_descriptor(data, 3, "GET request")
        access, pos = _read_access(data, pos)
        _exact(data, pos, "GET request")
        return GetRequest(invoke_id, class_id, obis, attribute, access)
    if kind == 2:
        _need(data, 7, "GET request next")
        _exact(data, 7, "GET request next")
        return GetNextRequest(invoke_id, int.from_bytes(data[3:7], "big"))
    if kind == 3:
        count, pos = _read_length(data, 3, "GET request list")
        if count == 0:
            raise DecodeError("GET request list: no items")
        if 10 * count > len(data) - pos:
            raise DecodeError(f"GET request list: {count} items cannot fit")
        items: list[GetListItem] = []
        for _ in range(count):
            class_id, obis, attribute, pos = _read_descriptor(data, pos, "GET request list")
            access, pos = _read_access(data, pos)
            items.append((class_id, obis, attribute, access))
        _exact(data, pos, "GET request list")
        return GetListRequest(invoke_id, items)
    raise DecodeError(f"GET request type {kind} not supported")


def _decode_set_request(data: bytes) -> Request:
    _need(data, 14, "SET request")
    if data[1] != 1:
        raise DecodeError(f"SET request type {data[1]} not supported")
    class_id, obis, attribute, pos = _read_descriptor(data, 3, "SET request")
    access, pos = _read_access(data, pos)
    if pos >= len(data):
        raise DecodeError("SET request: value missing")
    return SetRequest(data[2] & 0x0F, class_id, obis, attribute, data[pos:], access)


def _decode_action_request(data: bytes) -> Request:
    _need(data, 13, "ACTION request")
    if data[1] != 1:
        raise DecodeError(f"ACTION request type {data[1]} not supported")
    class_id, obis, method, pos = _read_descriptor(data, 3, "ACTION request")
    if data[pos] == 0:
        _exact(data, pos + 1, "ACTION request")
        parameters = None
    else:
        parameters = data[pos + 1 :]
        if not parameters:
            raise DecodeError("ACTION request: parameters flagged but missing")
    return ActionRequest(data[2] & 0x0F, class_id, obis, method, parameters)


def _decode_rlrq(data: bytes) -> Request:
    """RLRQ; an empty one (``62 00``) is valid but dlms-cosem pops past its end."""
    if data == b"\x62\x00":
        return ReleaseRequest(None)
    reason = dc_acse.ReleaseRequest.from_bytes(data).reason
    return ReleaseRequest(None if reason is None else int(reason))


_REQUEST_DECODERS: dict[int, tuple[str, Callable[[bytes], Request]]] = {
    TAG_GET_REQUEST: ("GET request", _decode_get_request),
    TAG_SET_REQUEST: ("SET request", _decode_set_request),
    TAG_ACTION_REQUEST: ("ACTION request", _decode_action_request),
    TAG_AARQ: ("AARQ", _aarq_from),
    TAG_RLRQ: ("RLRQ", _decode_rlrq),
}


def decode_request(data: bytes | bytearray | memoryview) -> Request:
    """Decode an APDU a client sent to the meter."""
    return _dispatch(data, _REQUEST_DECODERS, "request")
