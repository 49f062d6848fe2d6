"""ACSE for DLMS/COSEM: AARQ, AARE, RLRQ and RLRE (ISO 8650-1 as profiled by the Green Book).

These are BER: a tag byte, a definite length (short, or 0x81/0x82 long form) and the
content; the user-information ([30], ``BE``) wraps an octet string holding the xDLMS
Initiate APDU, which is A-XDR (``protocols.xdlms.initiate``). The decoders walk every
field, accept long-form lengths (Kamstrup OMNIA sends them) and ignore the fields DLMS
does not use (called titles, qualifiers, implementation information), but refuse what
would be read wrongly: a ciphered short-name context, a malformed OID, a length that
overruns. The short-name context (2, no ciphering) is read and built: ``short_names``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

from protocols.axdr import encode_length
from protocols.enums import (
    AcseDiagnostic,
    ApduTag,
    ApplicationContext,
    AssociationResult,
    ConfirmedService,
    DiagnosticSource,
    Mechanism,
    ReleaseReason,
)
from protocols.errors import DecodeError
from protocols.xdlms.exception import ExceptionResult, decode_exception
from protocols.xdlms.initiate import (
    DEFAULT_CONFORMANCE,
    SN_DEFAULT_CONFORMANCE,
    build_initiate_error,
    build_initiate_request,
    build_initiate_response,
    decode_initiate,
)

Authentication: TypeAlias = Literal[
    "none", "lls", "hls", "hls-md5", "hls-sha1", "hls-gmac", "hls-sha256", "hls-ecdsa"
]
#: mechanism-name ids by the names the CLI and plans use.
AUTHENTICATION_MECHANISMS: dict[Authentication, int] = {
    "none": Mechanism.NONE,
    "lls": Mechanism.LLS,
    "hls": Mechanism.HLS,
    "hls-md5": Mechanism.HLS_MD5,
    "hls-sha1": Mechanism.HLS_SHA1,
    "hls-gmac": Mechanism.HLS_GMAC,
    "hls-sha256": Mechanism.HLS_SHA256,
    "hls-ecdsa": Mechanism.HLS_ECDSA,
}

#: {joint-iso-itu-t(2) country(16) country-name(756) identified-organization(5) DLMS-UA(8)}
_DLMS_UA_OID = b"\x60\x85\x74\x05\x08"
_CONTEXT_ARC = 1
_MECHANISM_ARC = 2
#: acse-requirements BIT STRING with only the authentication functional unit set.
_ACSE_REQUIREMENTS = b"\x07\x80"
#: glo-/ded- InitiateRequest and general-glo/ded-ciphering: ciphered user-information.
_CIPHERED_INITIATE_REQUEST = frozenset((0x21, 0x29, 0xDB, 0xDC))
_CIPHERED_INITIATE_RESPONSE = frozenset((0x28, 0x30, 0xDB, 0xDC))


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
    short_names: bool = False


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
    diagnostic_source: int = DiagnosticSource.SERVICE_USER
    ciphered: bool = False
    initiate_error: int | None = None
    ciphered_initiate: bytes | None = None
    initiate_error_choice: int | None = None
    exception: ExceptionResult | None = None
    short_names: bool = False


@dataclass(slots=True, frozen=True)
class ReleaseRequest:
    reason: int | None


@dataclass(slots=True, frozen=True)
class ReleaseResponse:
    reason: int | None


# ---------------------------------------------------------------- BER


def _tlv(tag: int, content: bytes) -> bytes:
    """One BER element with a definite length: BER's definite lengths are A-XDR's."""
    if len(content) > 0xFFFF:
        raise ValueError(f"BER content of {len(content)} bytes is too long for an ACSE field")
    return bytes((tag,)) + encode_length(len(content)) + content


def _elements(data: bytes, start: int, end: int, what: str) -> Iterator[tuple[int, bytes]]:
    """The (tag, content) elements between ``start`` and ``end``, each checked to fit."""
    pos = start
    while pos < end:
        tag = data[pos]
        if tag & 0x1F == 0x1F:
            raise DecodeError(f"{what}: multi-byte BER tag 0x{tag:02X}")
        content_start, size = _ber_length(data, pos + 1, end, what)
        content_end = content_start + size
        if content_end > end:
            raise DecodeError(f"{what}: field 0x{tag:02X} of {size} bytes overruns the APDU")
        yield tag, data[content_start:content_end]
        pos = content_end


def _ber_length(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if pos >= end:
        raise DecodeError(f"{what}: BER length missing")
    first = data[pos]
    if first < 0x80:
        return pos + 1, first
    size = first & 0x7F
    if not 1 <= size <= 2 or pos + 1 + size > end:
        raise DecodeError(f"{what}: BER length octet 0x{first:02X} not supported")
    return pos + 1 + size, int.from_bytes(data[pos + 1 : pos + 1 + size], "big")


def _apdu(data: bytes, tag: int, what: str) -> tuple[int, int]:
    """Check the outer tag and length; the span of its content."""
    if not data or data[0] != tag:
        raise DecodeError(f"not an {what} (tag 0x{tag:02X})")
    start, size = _ber_length(data, 1, len(data), what)
    if start + size != len(data):
        raise DecodeError(f"{what}: length {size} but {len(data) - start} bytes follow")
    return start, start + size


def _single(content: bytes, tag: int, what: str) -> bytes:
    """The content of the one element ``tag`` that ``content`` must consist of."""
    elements = list(_elements(content, 0, len(content), what))
    if len(elements) != 1 or elements[0][0] != tag:
        raise DecodeError(f"{what}: expected one element with tag 0x{tag:02X}")
    return elements[0][1]


def _integer(content: bytes, what: str) -> int:
    value = _single(content, 0x02, what)
    if not 1 <= len(value) <= 4:
        raise DecodeError(f"{what}: INTEGER of {len(value)} bytes")
    return int.from_bytes(value, "big", signed=True)


def _dlms_arc(oid: bytes, arc: int, what: str) -> int:
    """The last arc of a DLMS UA object identifier (context or mechanism name)."""
    if len(oid) != 7 or oid[:5] != _DLMS_UA_OID or oid[5] != arc:
        raise DecodeError(f"{what}: {oid.hex()} is not a DLMS UA name")
    return oid[6]


def _context(content: bytes, what: str) -> tuple[bool, bool]:
    """(ciphered, short names): LN, LN with ciphering or SN; ciphered SN is refused."""
    context = _dlms_arc(_single(content, 0x06, what), _CONTEXT_ARC, what)
    if context == ApplicationContext.LN:
        return False, False
    if context == ApplicationContext.LN_CIPHERED:
        return True, False
    if context == ApplicationContext.SN:
        return False, True
    if context == ApplicationContext.SN_CIPHERED:
        raise DecodeError(f"{what}: ciphered short-name referencing (context 4) not supported")
    raise DecodeError(f"{what}: unknown application context {context}")


def _context_name(ciphered: bool, short_names: bool = False) -> bytes:
    if short_names and ciphered:
        raise ValueError("short-name referencing with ciphering is not supported")
    context = ApplicationContext.LN_CIPHERED if ciphered else ApplicationContext.LN
    if short_names:
        context = ApplicationContext.SN
    return _tlv(0xA1, _tlv(0x06, _DLMS_UA_OID + bytes((_CONTEXT_ARC, context))))


def _mechanism_fields(mechanism: int, requirements_tag: int, name_tag: int) -> bytes:
    if not mechanism:
        return b""
    return _tlv(requirements_tag, _ACSE_REQUIREMENTS) + _tlv(
        name_tag, _DLMS_UA_OID + bytes((_MECHANISM_ARC, mechanism))
    )


def _auth_value(content: bytes, what: str) -> bytes:
    """Authentication-value CHOICE: charstring [0] or bitstring [1] (unused-bits byte)."""
    elements = list(_elements(content, 0, len(content), what))
    if len(elements) != 1 or elements[0][0] not in (0x80, 0x81):
        raise DecodeError(f"{what}: authentication value is not a charstring or bitstring")
    tag, value = elements[0]
    return value if tag == 0x80 else value[1:]


def _user_information(content: bytes, what: str) -> bytes:
    inner = _single(content, 0x04, what)
    if not inner:
        raise DecodeError(f"{what}: empty user-information")
    return inner


def _mechanism_id(authentication: Authentication) -> int:
    mechanism = AUTHENTICATION_MECHANISMS.get(authentication)
    if mechanism is None:
        raise ValueError(f"unknown authentication {authentication!r}")
    return mechanism


# ---------------------------------------------------------------- AARQ


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
    short_names: bool = False,
) -> bytes:
    """AARQ for an LN association, or an SN one with ``short_names``.

    ``password`` is the calling-authentication-value: the LLS secret, or the client
    challenge (CtoS) for the HLS mechanisms. ``system_title`` goes in calling-AP-title.
    ``conformance`` is the 24-bit block as an int (None = default). ``ciphered`` names the
    LN-with-ciphering context; ``user_information`` then carries the glo-InitiateRequest.
    """
    mechanism = _mechanism_id(authentication)
    if mechanism == 0 and password is not None:
        raise ValueError("a password needs an authentication mechanism")
    if mechanism != 0 and not password:
        raise ValueError(f"authentication {authentication!r} needs a password/challenge")
    default = SN_DEFAULT_CONFORMANCE if short_names else DEFAULT_CONFORMANCE
    initiate = build_initiate_request(
        conformance=default if conformance is None else conformance,
        max_pdu_size=max_pdu_size,
        dlms_version=dlms_version,
        short_names=short_names,
    )
    if user_information is not None:
        if user_information[:1] not in (b"\x21", b"\xdb"):
            raise ValueError("user_information must be a glo-InitiateRequest")
        initiate = user_information
    body = _context_name(ciphered, short_names)
    if system_title is not None:
        body += _tlv(0xA6, _tlv(0x04, system_title))
    body += _mechanism_fields(mechanism, 0x8A, 0x8B)
    if password is not None:
        body += _tlv(0xAC, _tlv(0x80, password))
    body += _tlv(0xBE, _tlv(0x04, initiate))
    return _tlv(ApduTag.AARQ, body)


def decode_aarq(data: bytes) -> AarqInfo:
    what = "AARQ"
    start, end = _apdu(data, ApduTag.AARQ, what)
    ciphered: bool | None = None
    short_names = False
    mechanism = 0
    auth_value: bytes | None = None
    title: bytes | None = None
    initiate: bytes | None = None
    for tag, content in _elements(data, start, end, what):
        if tag == 0xA1:
            ciphered, short_names = _context(content, what)
        elif tag == 0xA6:
            title = _single(content, 0x04, f"{what} calling-AP-title")
        elif tag == 0x8B:
            mechanism = _dlms_arc(content, _MECHANISM_ARC, f"{what} mechanism-name")
        elif tag == 0xAC:
            auth_value = _auth_value(content, what)
        elif tag == 0xBE:
            initiate = _user_information(content, what)
    if ciphered is None:
        raise DecodeError("AARQ: application-context-name missing")
    if initiate is None:
        raise DecodeError("AARQ: user-information missing")
    if initiate[0] in _CIPHERED_INITIATE_REQUEST:
        return AarqInfo(mechanism, auth_value, title, 0, 0, 0, ciphered, initiate)
    if initiate[0] != ApduTag.INITIATE_REQUEST:
        raise DecodeError(f"AARQ: user-information holds APDU tag 0x{initiate[0]:02X}")
    info = decode_initiate(initiate)
    return AarqInfo(
        mechanism=mechanism,
        calling_auth_value=auth_value,
        system_title=title,
        proposed_conformance=info.conformance,
        client_max_pdu_size=info.max_pdu_size,
        dlms_version=info.dlms_version,
        ciphered=ciphered,
        short_names=short_names,
    )


# ---------------------------------------------------------------- AARE


def build_aare(
    *,
    accepted: bool,
    diagnostic: int = AcseDiagnostic.NULL,
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
    short_names: bool = False,
) -> bytes:
    """AARE with an acse-service-user diagnostic (the SN context with ``short_names``).

    A rejection with ``initiate_error`` carries a ConfirmedServiceError (initiateError)
    instead of an InitiateResponse, as the Green Book shows for a too-low DLMS version;
    ``initiate_error_choice`` is its ServiceError CHOICE. ``authentication``/``challenge``
    fill mechanism-name and the responding authentication value (StoC) for HLS.
    ``user_information`` replaces the InitiateResponse with the given xDLMS APDU (a
    glo-InitiateResponse, or an ExceptionResponse for a rejected invocation counter).
    """
    mechanism = _mechanism_id(authentication)
    if not 0 <= diagnostic <= 0xFF:
        raise ValueError(f"ACSE diagnostic {diagnostic} outside 0..255")
    if user_information is not None:
        if not user_information:
            raise ValueError("AARE user_information must not be empty")
        content = user_information
    elif initiate_error is not None:
        content = build_initiate_error(initiate_error, initiate_error_choice)
    else:
        content = build_initiate_response(
            conformance=conformance,
            max_pdu_size=max_pdu_size,
            dlms_version=dlms_version,
            short_names=short_names,
        )
    result = AssociationResult.ACCEPTED if accepted else AssociationResult.REJECTED_PERMANENT
    body = _context_name(ciphered, short_names)
    body += _tlv(0xA2, _tlv(0x02, bytes((result,))))
    body += _tlv(0xA3, _tlv(0xA0 | DiagnosticSource.SERVICE_USER, _tlv(0x02, bytes((diagnostic,)))))
    if system_title is not None:
        body += _tlv(0xA4, _tlv(0x04, system_title))
    body += _mechanism_fields(mechanism, 0x88, 0x89)
    if challenge is not None:
        body += _tlv(0xAA, _tlv(0x80, challenge))
    body += _tlv(0xBE, _tlv(0x04, content))
    return _tlv(ApduTag.AARE, body)


def _diagnostic(content: bytes, what: str) -> tuple[int, int]:
    elements = list(_elements(content, 0, len(content), what))
    if len(elements) != 1 or elements[0][0] not in (0xA1, 0xA2):
        raise DecodeError(f"{what}: result-source-diagnostic is not service-user/provider")
    tag, inner = elements[0]
    return tag & 0x1F, _integer(inner, f"{what} diagnostic")


def decode_aare(data: bytes) -> AareInfo:
    what = "AARE"
    start, end = _apdu(data, ApduTag.AARE, what)
    ciphered: bool | None = None
    short_names = False
    result: int | None = None
    source, diagnostic = int(DiagnosticSource.SERVICE_USER), None
    title = challenge = user = None
    mechanism: int | None = None
    for tag, content in _elements(data, start, end, what):
        if tag == 0xA1:
            ciphered, short_names = _context(content, what)
        elif tag == 0xA2:
            result = _integer(content, f"{what} result")
        elif tag == 0xA3:
            source, diagnostic = _diagnostic(content, what)
        elif tag == 0xA4:
            title = _single(content, 0x04, f"{what} responding-AP-title")
        elif tag == 0x89:
            mechanism = _dlms_arc(content, _MECHANISM_ARC, f"{what} mechanism-name")
        elif tag == 0xAA:
            challenge = _auth_value(content, what)
        elif tag == 0xBE:
            user = _user_information(content, what)
    if ciphered is None or result is None or diagnostic is None:
        raise DecodeError("AARE: application-context-name, result or diagnostic missing")
    if result not in tuple(AssociationResult):
        raise DecodeError(f"AARE: association result {result} unknown")
    conformance = max_pdu = version = 0
    initiate_error = initiate_error_choice = None
    ciphered_initiate: bytes | None = None
    exception: ExceptionResult | None = None
    if user is None:
        pass
    elif user[0] == ApduTag.INITIATE_RESPONSE:
        info = decode_initiate(user)
        conformance, max_pdu, version = info.conformance, info.max_pdu_size, info.dlms_version
    elif user[0] == ApduTag.CONFIRMED_SERVICE_ERROR:
        if len(user) != 4 or user[1] != ConfirmedService.INITIATE_ERROR:
            raise DecodeError(f"AARE: user-information {user.hex()} is not an initiateError")
        initiate_error_choice, initiate_error = user[2], user[3]
    elif user[0] == ApduTag.EXCEPTION_RESPONSE:
        exception = decode_exception(user)
    elif user[0] in _CIPHERED_INITIATE_RESPONSE:
        ciphered_initiate = user
    else:
        raise DecodeError(f"AARE: user-information holds APDU tag 0x{user[0]:02X}")
    return AareInfo(
        accepted=result == AssociationResult.ACCEPTED,
        result=result,
        diagnostic=diagnostic,
        negotiated_conformance=conformance,
        server_max_pdu_size=max_pdu,
        dlms_version=version,
        responding_system_title=title,
        challenge=challenge,
        mechanism=mechanism,
        diagnostic_source=source,
        ciphered=ciphered,
        initiate_error=initiate_error,
        ciphered_initiate=ciphered_initiate,
        initiate_error_choice=initiate_error_choice,
        exception=exception,
        short_names=short_names,
    )


# ---------------------------------------------------------------- release


def _build_release(tag: int, reason: int | None) -> bytes:
    if reason is None:
        return bytes((tag, 0x00))
    return _tlv(tag, _tlv(0x80, bytes((ReleaseReason(reason),))))


def _release_reason(data: bytes, tag: int, what: str) -> int | None:
    start, end = _apdu(data, tag, what)
    reason: int | None = None
    for field, content in _elements(data, start, end, what):
        if field == 0x80:
            if len(content) != 1 or content[0] not in tuple(ReleaseReason):
                raise DecodeError(f"{what}: release reason {content.hex()} unknown")
            reason = content[0]
        elif field == 0xBE:
            _user_information(content, what)
    return reason


def build_rlrq(reason: int | None = ReleaseReason.NORMAL) -> bytes:
    """RLRQ (0 = normal; None = no reason field)."""
    return _build_release(ApduTag.RLRQ, reason)


def build_rlre(reason: int | None = ReleaseReason.NORMAL) -> bytes:
    """RLRE (0 = normal; None = no reason field)."""
    return _build_release(ApduTag.RLRE, reason)


def decode_rlrq(data: bytes) -> ReleaseRequest:
    return ReleaseRequest(_release_reason(data, ApduTag.RLRQ, "RLRQ"))


def decode_rlre(data: bytes) -> ReleaseResponse:
    return ReleaseResponse(_release_reason(data, ApduTag.RLRE, "RLRE"))
