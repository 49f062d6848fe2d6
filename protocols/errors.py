"""Typed errors of the DLMS stack.

The collector classifies retries on these classes, so every failure the stack can
report has its own class, and every decoder raises only :class:`DecodeError`
(or a subclass) on bad input, never a bare ``IndexError`` or ``ValueError``.
"""

from __future__ import annotations


class DlmsError(Exception):
    """Base of every error the hes DLMS stack raises."""

    #: True when retrying the same request later may succeed.
    transient: bool = False
    #: Short machine-readable class name stored with read attempts.
    error_class: str = "dlms"


class DecodeError(DlmsError):
    """Bytes from a peer could not be decoded (bad frame, bad APDU, bad value)."""

    transient = True
    error_class = "decode"


class FrameCheckError(DecodeError):
    """An HDLC frame whose HCS or FCS does not match its contents."""

    error_class = "bad_frame"


class ProtocolError(DlmsError):
    """The peer sent a valid message that is wrong at this point of the exchange."""

    transient = True
    error_class = "protocol"


class LinkError(DlmsError):
    """The link failed: connection refused or dropped, serial port gone, DM/FRMR."""

    transient = True
    error_class = "link"


class SignOnError(ProtocolError):
    """The IEC 62056-21 start-up (sign-on before HDLC) did not end in mode E."""

    error_class = "sign_on"


class DlmsTimeout(DlmsError):
    """No answer in time, after the link layer's own retransmissions."""

    transient = True
    error_class = "timeout"


class AssociationRefused(DlmsError):
    """The meter rejected the AARQ (wrong password, unsupported context...)."""

    error_class = "association_refused"

    def __init__(self, message: str, diagnostic: int | None = None) -> None:
        super().__init__(message)
        self.diagnostic = diagnostic


class AuthenticationFailed(AssociationRefused):
    """The AARE says the authentication value was wrong."""

    error_class = "authentication_failed"


class DataAccessError(DlmsError):
    """A GET/SET/ACTION answered with a Data-Access-Result other than success."""

    error_class = "data_access"

    def __init__(self, message: str, result: int) -> None:
        super().__init__(message)
        self.result = result


class ObjectUndefined(DataAccessError):
    """Data-Access-Result object-undefined (4) or object-unavailable (11)."""

    error_class = "object_undefined"


class AccessDenied(DataAccessError):
    """Data-Access-Result read-write-denied (3) or scope-of-access-violated (13)."""

    error_class = "access_denied"


class TemporaryFailure(DataAccessError):
    """Data-Access-Result temporary-failure (2) or hardware-fault (1): retry later."""

    transient = True
    error_class = "temporary_failure"


class ServiceError(DlmsError):
    """The meter answered with an ExceptionResponse or ConfirmedServiceError."""

    error_class = "service_error"


def data_access_error(result: int, what: str) -> DataAccessError:
    """Map a Data-Access-Result code (Blue Book, DLMS UA 1000-1) to its typed error."""
    text = f"{what}: data-access-result {result}"
    if result in (4, 11):
        return ObjectUndefined(text, result)
    if result in (3, 13):
        return AccessDenied(text, result)
    if result in (1, 2):
        return TemporaryFailure(text, result)
    return DataAccessError(text, result)


class SecurityError(DlmsError):
    """A DLMS security failure (suite-0 ciphering, HLS, invocation counters).

    Never transient: retrying with the same keys, titles and counters fails the same way,
    and a retry storm on a security fault looks like an attack to the meter's owner.
    Messages name what failed, never a key.
    """

    error_class = "security"


class KeyRejected(SecurityError):
    """The meter could not decipher the ciphered InitiateRequest: it holds other keys.

    AARE rejected with a ConfirmedServiceError initiateError, application-reference
    deciphering-error (Green Book).
    """

    error_class = "key_rejected"


class DecipheringRejected(SecurityError):
    """ExceptionResponse deciphering-error: a ciphered request failed the meter's tag check
    on an established association (altered in transit or corrupted)."""

    error_class = "deciphering_rejected"


class InvocationCounterRejected(SecurityError):
    """The meter refused the client invocation counter as replayed or too low.

    ``expected`` is the counter the meter reported (ExceptionResponse
    invocation-counter-error), when it did.
    """

    error_class = "invocation_counter_rejected"

    def __init__(self, message: str, expected: int | None = None) -> None:
        super().__init__(message)
        self.expected = expected


class SystemTitleRejected(SecurityError):
    """AARE rejected with calling-AP-title-not-recognized: the meter does not know our title."""

    error_class = "system_title_rejected"

    def __init__(self, message: str, diagnostic: int | None = None) -> None:
        super().__init__(message)
        self.diagnostic = diagnostic


class SystemTitleMismatch(SecurityError):
    """The meter answered with another system title than the one configured for it."""

    error_class = "system_title_mismatch"


class ResponseAuthenticationFailed(SecurityError):
    """A ciphered APDU from the meter does not verify with this meter's keys."""

    error_class = "response_authentication_failed"


class ReplayedResponse(SecurityError):
    """A ciphered APDU from the meter reuses or lowers the meter's invocation counter."""

    error_class = "replayed_response"


class HlsVerificationFailed(SecurityError):
    """HLS pass 4: the meter's f(CtoS) does not verify, so it did not prove the keys."""

    error_class = "hls_verification_failed"
