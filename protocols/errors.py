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
